"""Run a bioimage.io model package that unetkit exported, as a link of the inference chain.

`unetkit export --format bioimageio` writes a zip whose ONNX weights carry the resolved config in their
metadata (`unetkit.export.model_metadata`), exactly as a plain `.onnx` export does. So a package runs through
the same predictor (`onnx_backend.onnx_predictor`), tiling and TTA as that file and as its checkpoint: the
package's rdf.yaml is read with bioimageio.spec to find the weights, and unetkit's own preparation (the
config's normalization, which the package's preprocessing ops describe) feeds them. A package exported by
another program has no such metadata and is refused with one line; so is a zip that is no package at all.

bioimageio.spec, onnx and onnxruntime are the `bioimageio` extra, imported only when a package is loaded.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

from unetkit.config import Config
from unetkit.errors import UnetkitError, require_extra
from unetkit.infer.onnx_backend import FORMAT, OnnxPredictor, onnx_predictor


def require(module: str) -> ModuleType:
    """Import a package of the `bioimageio` extra, or say in one line how to install it."""
    return require_extra(module, "bioimageio", "bioimage.io model packages need")


def is_package(path: str | Path) -> bool:
    """Whether `path` names a model package by its suffix (`.zip`), the way `.onnx` names an ONNX file."""
    return Path(path).suffix.lower() == ".zip"


def _description(path: Path) -> Any:
    """bioimageio.spec's model description of the package at `path` (file contents are not re-hashed)."""
    spec = require("bioimageio.spec")
    if not zipfile.is_zipfile(path):
        raise UnetkitError(f"{path} is not a zip file, so not a bioimage.io model package; export one with "
                           "`unetkit export CKPT --format bioimageio -o model.zip`")
    try:
        description = spec.load_model_description(path, perform_io_checks=False)
    except Exception as err:  # no rdf.yaml, a damaged one, or another resource type
        reason = (str(err).strip().splitlines() or [type(err).__name__])[-1][:120]
        raise UnetkitError(f"{path} is not a bioimage.io model package ({reason}); export one with "
                           "`unetkit export CKPT --format bioimageio -o model.zip`") from None
    return description


def load_package(path: str | Path, device: str = "auto") -> tuple[OnnxPredictor, Config]:
    """The predictor of a unetkit-exported bioimage.io package (its ONNX weights) and the config they carry."""
    path = Path(path)
    if not path.is_file():
        raise UnetkitError(f"model package {path} does not exist")
    description = _description(path)
    onnx = getattr(description.weights, "onnx", None)
    if onnx is None:
        raise UnetkitError(f"{path} has no ONNX weights, so it was not exported by unetkit; "
                           "export the checkpoint with `unetkit export --format bioimageio`")
    reader = require("bioimageio.spec.utils").get_reader(onnx.source)
    source = f"{path}:{reader.original_file_name}"
    data = reader.read()
    if not _exported_by_unetkit(data):
        raise UnetkitError(f"{path} is a bioimage.io model package, but not one unetkit exported (its ONNX weights "
                           "carry no unetkit metadata); run it with bioimageio.core, or export a unetkit checkpoint "
                           "with `unetkit export --format bioimageio`")
    return onnx_predictor(data, source, device)


def _exported_by_unetkit(data: bytes) -> bool:
    """Whether ONNX bytes carry unetkit's format marker (an unreadable model: left to `onnx_predictor` to say)."""
    onnx = require("onnx")
    try:
        model = onnx.load_from_string(data)
    except Exception:  # protobuf's several error types; `onnx_predictor` names the problem
        return True
    return any(p.key == "unetkit.format" and p.value == FORMAT for p in model.metadata_props)
