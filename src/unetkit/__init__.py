"""unetkit: train, evaluate and apply U-Nets to your own images.

The Python API mirrors the command line::

    from unetkit import load_config, plan, train, evaluate, predict
    run = train(plan("mydata", minutes=10).config())       # or: unetkit train mydata --minutes 10
    cfg = load_config("configs/isbi2012.yaml", ["train.epochs=5"])
    run = train(cfg)
    evaluate(run.run_dir / "best.pt", "data/test")
    predict(run.run_dir / "best.pt", ["new_images/"], "masks_out")
    export_bioimageio(run.run_dir / "best.pt", "model.zip", PackageOptions(authors=("Ada Lovelace",)))

These names are imported on first use (PEP 562 `__getattr__`): most of them pull in torch, which takes
seconds, and `unetkit --help` or `import unetkit.config` should not wait for it.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from unetkit.errors import UnetkitError

if TYPE_CHECKING:
    from unetkit.config import Config, load_config
    from unetkit.demo import run_demo
    from unetkit.infer.ensemble_search import ensemble
    from unetkit.infer.evaluate import evaluate
    from unetkit.infer.inference import InferOptions
    from unetkit.infer.predict import predict
    from unetkit.models.unet import UNet
    from unetkit.sharing.package import PackageOptions, export_bioimageio
    from unetkit.train.plan import make_plan as plan
    from unetkit.train.run import train

_LAZY = {"Config": "unetkit.config", "load_config": "unetkit.config", "run_demo": "unetkit.demo",
         "evaluate": "unetkit.infer.evaluate", "predict": "unetkit.infer.predict", "UNet": "unetkit.models.unet",
         "train": "unetkit.train.run", "ensemble": "unetkit.infer.ensemble_search",
         "InferOptions": "unetkit.infer.inference", "plan": "unetkit.train.plan:make_plan",
         "export_bioimageio": "unetkit.sharing.package", "PackageOptions": "unetkit.sharing.package"}

__all__ = ["Config", "InferOptions", "PackageOptions", "UNet", "UnetkitError", "ensemble", "evaluate",
           "export_bioimageio", "load_config", "plan", "predict", "run_demo", "train"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Import a public name the first time it is asked for, then keep it as a plain attribute."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, _, attribute = _LAZY[name].partition(":")
    value = getattr(importlib.import_module(module), attribute or name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """`unetkit.train` names both the `train` function and the `unetkit.train` subpackage. Importing the
    subpackage makes Python set the package's attribute to it, which would hide the function; the function
    keeps the name, as when it was imported here eagerly (reach the subpackage's modules by import)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
