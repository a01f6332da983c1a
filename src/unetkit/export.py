"""Export a trained model to ONNX or TorchScript, for serving where unetkit's training code is not wanted.

The exported graph maps normalized `(N, C, H, W)` input to logits. Softmax / sigmoid stay in unetkit
(`to_probabilities`), so a checkpoint and its export turn logits into probabilities the same way. Batch,
height and width are dynamic: the forward's size arithmetic (the valid U-Net's skip crops) is recorded as
graph operations, and the check runs the export on a second size it was not traced at. `tile` fixes the
spatial size instead, for runtimes that want static shapes. Each file describes itself: resolved config,
class names and output channels go into the ONNX `metadata_props` or the TorchScript extra files, so
`predict model.onnx` writes masks in the training data's encoding with no other file.

ONNX uses PyTorch's TorchScript-based exporter (`dynamo=False`): it works offline without onnxscript.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import torch
import yaml
from torch import nn

from unetkit.atomic import atomic_write
from unetkit.checkpoint import load_checkpoint, model_from_checkpoint
from unetkit.config import Config
from unetkit.errors import UnetkitError
from unetkit.infer.onnx_backend import FORMAT as ONNX_FORMAT
from unetkit.infer.onnx_backend import VERSION, OnnxPredictor, require

TORCHSCRIPT_FORMAT = "unetkit-torchscript"
TOLERANCE = 1e-4  # largest accepted |logit difference|, per unit of the largest |logit| once that exceeds 1
OPSETS = range(11, 21)  # bilinear Resize needs 11; 20 is the newest the TorchScript-based exporter writes
INPUT_NAME, OUTPUT_NAME = "image", "logits"


def model_metadata(cfg: Config, channels_out: int, model: nn.Module, input_size: int | None, fmt: str
                   ) -> dict[str, str]:
    """The strings stored in an exported file; `onnx_backend.read_metadata` reads them back."""
    return {
        "unetkit.format": fmt,
        "unetkit.version": str(VERSION),
        "unetkit.config": yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False),
        "unetkit.classes": json.dumps(list(cfg.data.classes)),
        "unetkit.out_channels": str(channels_out),
        "unetkit.margin": str(model.margin),  # informative for other consumers; unetkit recomputes them
        "unetkit.stride": str(model.stride),
        "unetkit.input_size": str(input_size or 0),  # 0 = any valid size
    }


def example_sizes(model: nn.Module, tile: int | None) -> tuple[int, tuple[int, int]]:
    """(side of the square tracing input, (height, width) of the check input).

    Without a fixed tile the check uses two further valid sizes, different from the traced one and from
    each other, so a graph that froze a size fails it.
    """
    if tile is not None:
        size = model.input_size_for(tile)
        return size, (size, size)
    traced = model.input_size_for(32)
    height = model.input_size_for(model.output_size(traced) + 1)
    return traced, (height, model.input_size_for(model.output_size(height) + 1))


@contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Silence what tracing says by design: the forward's size checks run in Python on the example input
    (TracerWarning), and the deprecation notes of the exporter chosen on purpose."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", message=r"The feature will be removed")
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated")
        yield


def _onnx_bytes(model: nn.Module, example: torch.Tensor, opset: int, dynamic: bool, meta: dict[str, str]) -> bytes:
    onnx = require("onnx")
    spatial = {2: "height", 3: "width"} if dynamic else {}
    out_spatial = {2: "out_height", 3: "out_width"} if dynamic else {}
    buffer = io.BytesIO()
    with _quiet_tracing(), torch.no_grad():
        torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: {0: "batch", **spatial},
                                                                    OUTPUT_NAME: {0: "batch", **out_spatial}})
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(proto, meta)
    proto.producer_name = "unetkit"
    return proto.SerializeToString()


def _torchscript_bytes(model: nn.Module, example: torch.Tensor, meta: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with _quiet_tracing(), torch.no_grad():
        traced = torch.jit.trace(model, example, check_trace=False)  # the export check below compares it
        torch.jit.save(traced, buffer, _extra_files=meta)
    return buffer.getvalue()


def _exported_logits(data: bytes, fmt: str, model: nn.Module, input_size: int | None, x: torch.Tensor
                     ) -> torch.Tensor:
    """Logits of the exported bytes on `x`, run the way users will run them."""
    if fmt == "onnx":
        session = require("onnxruntime").InferenceSession(data, providers=["CPUExecutionProvider"])
        return OnnxPredictor(session, model, input_size).logits(x)
    with _quiet_tracing(), torch.no_grad():
        return torch.jit.load(io.BytesIO(data), map_location="cpu")(x)


def _write_atomic(data: bytes, path: Path) -> None:
    """Write `data` atomically (a crash never leaves half a model file); a failure is one line naming `path`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as f:
            f.write(data)
    except OSError as err:
        raise UnetkitError(f"cannot write {path}: {err.strerror or err}; free space or fix permissions") from None


def export_model(checkpoint: str | Path, output: str | Path, fmt: Literal["onnx", "torchscript"] = "onnx",
                 opset: int = 17, tile: int | None = None, check: bool = True) -> Path:
    """Export the network of a unetkit checkpoint: normalized `(N, C, H, W)` -> logits `(N, K, H', W')`.

    `tile` (output pixels per side) fixes the input to the smallest size covering it and records that
    output size as the file's `infer.tile`; None keeps height and width dynamic. `check` runs the export on
    a random valid input of batch 2 and refuses to write it when its logits differ from PyTorch's by more
    than `TOLERANCE`. Returns the written path.
    """
    output = Path(output)
    if output.is_dir():
        raise UnetkitError(f"-o {output} is a folder; give the file to write, e.g. -o {output / 'model.onnx'}")
    if not output.parent.is_dir():
        raise UnetkitError(f"-o {output}: folder {output.parent} does not exist; create it first")
    if fmt not in ("onnx", "torchscript"):
        raise UnetkitError(f"export format {fmt!r} is unknown; use 'onnx' or 'torchscript'")
    if fmt == "onnx" and opset not in OPSETS:
        raise UnetkitError(f"ONNX opset {opset} is not supported; use {OPSETS.start} to {OPSETS.stop - 1}")
    if tile is not None and tile <= 0:
        raise UnetkitError(f"export tile {tile} must be a positive number of output pixels, or left out")
    if fmt == "onnx":
        require("onnx")  # before the slow part: say how to install it at once
    contents = load_checkpoint(checkpoint)
    model, cfg = model_from_checkpoint(contents, str(checkpoint))
    model.eval()
    traced_size, check_size = example_sizes(model, tile)
    input_size = traced_size if tile is not None else None
    if input_size is not None:
        cfg = cfg.model_copy(update={"infer": cfg.infer.model_copy(update={"tile": model.output_size(input_size)})})
    marker = ONNX_FORMAT if fmt == "onnx" else TORCHSCRIPT_FORMAT
    meta = model_metadata(cfg, contents["out_channels"], model, input_size, marker)
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(1, cfg.data.channels, traced_size, traced_size, generator=generator)
    if fmt == "onnx":
        data = _onnx_bytes(model, example, opset, input_size is None, meta)
    else:
        data = _torchscript_bytes(model, example, meta)
    if check:
        x = torch.randn(2, cfg.data.channels, *check_size, generator=generator)
        with torch.no_grad():
            expected = model(x)
        diff = (_exported_logits(data, fmt, model, input_size, x) - expected).abs().max().item()
        allowed = TOLERANCE * max(1.0, expected.abs().max().item())
        if not diff <= allowed:  # also catches NaN
            raise UnetkitError(f"{checkpoint}: the {fmt} export's logits differ from PyTorch's by {diff:.2e} "
                               f"(more than {allowed:.1e}), so {output} was not written; try another opset")
    _write_atomic(data, output)
    return output
