"""YAML in and out: `${VAR}` expansion, `--set a.b=v` overrides applied to the tree before validation, and
pydantic's report turned into one line per key path, with a "did you mean" for a misspelt key."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from unetkit.config.tree import Config
from unetkit.errors import UnetkitError

_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def _expand(value: Any) -> Any:
    """Expand ${VAR} and ${VAR:-default} in every string of a YAML tree."""
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v) for v in value]
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            found = os.environ.get(m.group(1))
            if found is None and m.group(2) is None:
                raise UnetkitError(f"environment variable {m.group(1)} is not set (used in the config); set it")
            return found if found is not None else m.group(2)

        return _VAR.sub(sub, value)
    return value


def apply_override(tree: dict[str, Any], assignment: str) -> None:
    """Apply one `a.b.c=value` override in place; the value is parsed as YAML (numbers, lists, null)."""
    if "=" not in assignment:
        raise UnetkitError(f"--set {assignment!r}: expected key=value, e.g. --set train.epochs=5")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UnetkitError(f"--set {key}: {part!r} is not a section")
        node = child
    node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys the config section at `loc` (a pydantic error location, ending in the unknown key) accepts."""
    model: Any = Config
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return []
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return []
    return list(model.model_fields)


def _problem(e: Any) -> str:
    """One pydantic error as `key.path: message`, with a "did you mean" for a misspelt key."""
    loc = tuple(e["loc"])
    message = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        close = difflib.get_close_matches(str(loc[-1]), _known_keys(loc), n=1, cutoff=0.6)
        message = "unknown key" + (f"; did you mean {close[0]}?" if close else "")
    where = ".".join(str(p) for p in loc)
    return f"{where}: {message}" if where else message


def config_from_dict(tree: dict[str, Any], source: str = "config", overrides: dict[str, str] | None = None) -> Config:
    """Validate a plain tree into a `Config`, turning pydantic's report into one line per key path.

    `overrides` maps the dotted keys given with `--set` to their assignments, so a bad value set on the command
    line is blamed on `--set key=value`, not on the config file.
    """
    try:
        return Config.model_validate(_expand(tree))
    except ValidationError as err:
        problems = [_problem(e) for e in err.errors()]
        blamed = [(key, text) for key in (overrides or {}) for text in problems if text.startswith(f"{key}:")
                  or text.startswith(f"{key}.")]
        if blamed and len(blamed) == len(problems):
            raise UnetkitError("; ".join(f"--set {overrides[key]}: {text.split(': ', 1)[1]}"  # type: ignore[index]
                                         for key, text in blamed)) from None
        raise UnetkitError(f"{source}: " + "; ".join(problems)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults when `path` is None), apply `--set` overrides, validate."""
    tree: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise UnetkitError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise UnetkitError(f"{path}: not valid YAML{where} ({problem})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise UnetkitError(f"{path}: the top level must be a mapping of sections (data, model, ...)")
        tree = loaded or {}
    for assignment in overrides or []:
        apply_override(tree, assignment)
    given = {a.split("=", 1)[0].strip(): a for a in overrides or []}
    return config_from_dict(tree, source, given)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config (every default filled in) as YAML next to a run."""
    Path(path).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
