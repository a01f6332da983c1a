"""Import costs and layering: `unetkit --help` answers without loading torch, and lower layers never import
higher ones (`data/` and `models/` know nothing of `infer/` or `train/`; `infer/` nothing of `train/`).

The layering check reads the source with `ast`, so function-local imports count too: an import hidden in a
function still ties the lower layer to the higher one.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import unetkit

PACKAGE = Path(unetkit.__file__).parent
# layer -> packages of unetkit it must not import
FORBIDDEN = {"data": ("unetkit.infer", "unetkit.train", "unetkit.sharing"),
             "models": ("unetkit.infer", "unetkit.train", "unetkit.sharing"),
             "infer": ("unetkit.train", "unetkit.sharing"), "sharing": ("unetkit.train",)}

HELP_WITHOUT_TORCH = """
import sys
from unetkit.cli import main
try:
    main(sys.argv[1:])
except SystemExit as done:
    assert done.code == 0, done.code
else:
    raise AssertionError("--help did not exit")
assert "torch" not in sys.modules, "torch was imported"
"""


HELPS = [["--help"], ["train", "--help"], ["predict", "--help"], ["data", "inspect", "--help"]]


@pytest.mark.parametrize("argv", HELPS, ids=" ".join)
def test_help_does_not_import_torch(argv: list[str]) -> None:
    done = subprocess.run([sys.executable, "-c", HELP_WITHOUT_TORCH, *argv], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "usage: unetkit" in done.stdout


def test_public_names_load_on_first_use() -> None:
    done = subprocess.run([sys.executable, "-c", "import sys, unetkit; assert 'torch' not in sys.modules; "
                           "import unetkit.train.run; from unetkit import UNet, train; print(train.__module__, "
                           "UNet.__name__, 'train' in dir(unetkit))"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # the function, not the subpackage of the same name, even after the subpackage was imported
    assert done.stdout.split() == ["unetkit.train.run", "UNet", "True"]


def _imported(path: Path) -> set[str]:
    """Every module the package file `path` imports anywhere in its body (see `_imports`)."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module.removesuffix(".__init__") if path.name == "__init__.py" else module.rpartition(".")[0]
    return _imports(path.read_text(), package)


def _imports(source: str, package: str) -> set[str]:
    """Modules `source` (a module of `package`) imports at any depth: relative imports resolved, `from unetkit
    import x` read as `unetkit.x` too, and constant names given to `importlib.import_module`."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = parts[: len(parts) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and (getattr(node.func, "attr", None) or getattr(node.func, "id", None)) == "import_module"):
            found.add(node.args[0].value)
    return found


def _violations(layer: str) -> list[str]:
    bad = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for name in sorted(_imported(path)):
            if any(name == higher or name.startswith(higher + ".") for higher in FORBIDDEN[layer]):
                bad.append(f"{path.relative_to(PACKAGE)} imports {name}")
    return bad


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_lower_layers_do_not_import_higher_ones(layer: str) -> None:
    assert _violations(layer) == []


def test_the_layering_check_sees_local_relative_and_dynamic_imports() -> None:
    source = ("def f():\n    from unetkit.train.plots import plot\n"
              "from ..train import loop\nfrom . import io\nimport importlib\n"
              "importlib.import_module('unetkit.infer.x')\n")
    found = _imports(source, "unetkit.data")
    assert {"unetkit.train.plots", "unetkit.train", "unetkit.train.loop", "unetkit.data.io", "unetkit.infer.x"} <= found


def test_functions_in_train_and_infer_stay_short() -> None:
    # plain functions that read top to bottom: none over about 60 lines (docstring included)
    package = Path(__file__).resolve().parents[1] / "src" / "unetkit"
    long = []
    for folder in ("train", "infer"):
        for path in sorted((package / folder).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    length = node.end_lineno - node.lineno + 1
                    if length > 60:
                        long.append(f"{folder}/{path.name}:{node.lineno} {node.name} ({length} lines)")
    assert not long, long
