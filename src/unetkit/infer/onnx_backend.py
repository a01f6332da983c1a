"""Run an exported ONNX model with onnxruntime, as a link of the inference chain.

An ONNX file written by `unetkit.export` maps normalized `(N, C, H, W)` input to logits and carries the
resolved config in its metadata. A file is checked before onnxruntime sees it (`check_onnx_model`): the
ONNX checker, our metadata, one 4-D float input with the config's channel count and one output.
`OnnxPredictor` turns the logits into probabilities with the same `to_probabilities` as the PyTorch
`Predictor`, and takes its geometry (`margin`, `stride`, the size rule) from the network the config
describes, built on the meta device: no weights are allocated, the size rule is the very code the
checkpoint used. A model exported with a fixed tile accepts that one input size only,
and its geometry says so, so whole-image and tiled prediction pick that size.

onnxruntime is an optional dependency, imported only when an ONNX file is loaded.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from unetkit.config import Config, config_from_dict
from unetkit.errors import UnetkitError, require_extra
from unetkit.infer.geometry import FixedInput, Geometry, HoldsGeometry
from unetkit.infer.predictor import to_probabilities
from unetkit.models.build import build_model

FORMAT = "unetkit-onnx"
VERSION = 1


def require(module: str) -> ModuleType:
    """Import an optional dependency of the ONNX support, or say in one line how to install it."""
    return require_extra(module, "onnx", "ONNX support needs")


def read_metadata(meta: dict[str, str], source: str, expected: str = FORMAT) -> tuple[Config, int, int | None]:
    """(config, out_channels, fixed input size or None) from an exported file's metadata, after checking
    its format marker: `export.model_metadata` wrote them."""
    if meta.get("unetkit.format") != expected:
        raise UnetkitError(f"{source} was not exported by unetkit (no '{expected}' marker); "
                           "export a checkpoint with `unetkit export`")
    try:
        version = int(meta["unetkit.version"])
        tree = yaml.safe_load(meta["unetkit.config"])
        out_channels = int(meta["unetkit.out_channels"])
        input_size = int(meta.get("unetkit.input_size", "0")) or None
    except (KeyError, ValueError, yaml.YAMLError) as err:
        raise UnetkitError(f"{source}: its unetkit metadata is damaged ({type(err).__name__}: {err}); "
                           "export the checkpoint again") from None
    if version > VERSION:
        raise UnetkitError(f"{source} was exported by a newer unetkit (format {version}); upgrade unetkit")
    if not isinstance(tree, dict):
        raise UnetkitError(f"{source}: its embedded config is not a mapping; export the checkpoint again")
    return config_from_dict(tree, source), out_channels, input_size


class OnnxPredictor(HoldsGeometry):
    """An onnxruntime session with the Predictor contract: `(N, C, h, w)` normalized float32 input ->
    `(N, K, h - 2*margin, w - 2*margin)` float32 probabilities on the CPU, plus the network's geometry.

    `net` only supplies the size rule (it may live on the meta device); `input_size` restricts the inputs
    to one side length for a model exported with a fixed tile.
    """

    def __init__(self, session: Any, net: nn.Module, input_size: int | None = None, source: str = "ONNX model"
                 ) -> None:
        self.session = session
        self.input_name: str = session.get_inputs()[0].name
        self.net = net
        self.input_size = input_size
        self.source = source
        self.geometry: Geometry = net if input_size is None else FixedInput(net, input_size, source)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) valid input -> (N, C_out, h', w') float32 logits on the CPU."""
        height, width = x.shape[-2:]
        for name, size in (("height", height), ("width", width)):
            if not self.is_valid_input(size):
                raise UnetkitError(f"input {height}x{width} does not fit {self.source}: {name} {size} is invalid; "
                                   f"use {self.input_size_for(max(size - 2 * self.margin, 1))}")
        array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return to_probabilities(self.logits(x))


def providers(device: str = "auto") -> list[Any]:
    """onnxruntime execution providers for a unetkit device name: CUDA first when it is there and not
    ruled out, the CPU always as the fallback."""
    ort = require("onnxruntime")
    if device in ("auto", "cpu"):
        use_cuda = device == "auto" and "CUDAExecutionProvider" in ort.get_available_providers()
        return ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise UnetkitError(f"device {device!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if chosen.type == "cpu":
        return ["CPUExecutionProvider"]
    if chosen.type != "cuda" or "CUDAExecutionProvider" not in ort.get_available_providers():
        raise UnetkitError(f"device {device!r} asked for, but onnxruntime here has no CUDA provider; "
                           "install onnxruntime-gpu or use --device cpu")
    return [("CUDAExecutionProvider", {"device_id": chosen.index or 0}), "CPUExecutionProvider"]


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:120]


def _tensor_shape(value: Any) -> tuple[int, list[int | str]] | None:
    """(element type, dims: sizes, or names for dynamic ones) of a graph input/output; None for a non-tensor."""
    if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param or "?" for d in value.type.tensor_type.shape.dim]
    return value.type.tensor_type.elem_type, dims


def check_onnx_model(model: Any, source: str) -> tuple[Config, int, int | None]:
    """Check a loaded `onnx.ModelProto` without running it, and read its unetkit metadata.

    Refused with one line each: a model the ONNX checker rejects, weights stored in other files (unetkit
    keeps them inside; a file naming other paths is not ours), a missing or damaged unetkit marker, and
    anything but one `(N, C, H, W)` float input with the config's channel count and one 4-D float output.
    """
    onnx = require("onnx")
    try:
        onnx.checker.check_model(model)
    except Exception as err:  # ValidationError, or a protobuf error on a malformed model
        raise UnetkitError(f"{source} is not a valid ONNX model ({_first_line(err)}); "
                           "export one with `unetkit export`") from None
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise UnetkitError(f"{source} keeps weights in other files, which unetkit exports never do; "
                           "export the checkpoint again")
    cfg, out_channels, input_size = read_metadata({p.key: p.value for p in model.metadata_props}, source)
    weights = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in weights]
    outputs = list(model.graph.output)
    expected = {"input": (inputs, cfg.data.channels), "output": (outputs, out_channels)}
    for role, (values, channels) in expected.items():
        shapes = [_tensor_shape(v) for v in values]
        if len(values) != 1 or shapes[0] is None:
            raise UnetkitError(f"{source} has {len(values)} {role}(s); a unetkit model has one (N, C, H, W) "
                               f"tensor {role}; export the checkpoint again")
        elem, dims = shapes[0]
        if elem != onnx.TensorProto.FLOAT or len(dims) != 4 or dims[1] != channels:
            shown = "x".join(map(str, dims))
            kind = onnx.TensorProto.DataType.Name(elem).lower()
            raise UnetkitError(f"{source}: its {role} is {kind} {shown}, but its config asks for float "
                               f"(N, {channels}, H, W); export the checkpoint again")
    return cfg, out_channels, input_size


def load_onnx(path: str | Path, device: str = "auto") -> tuple[OnnxPredictor, Config]:
    """The predictor for an ONNX file exported by unetkit, and the config to prepare its input with.

    The file is read once and checked (`check_onnx_model`); onnxruntime then gets those very bytes.
    """
    path = Path(path)
    if not path.is_file():
        raise UnetkitError(f"ONNX model {path} does not exist")
    return onnx_predictor(path.read_bytes(), str(path), device)


def onnx_predictor(data: bytes, source: str, device: str = "auto") -> tuple[OnnxPredictor, Config]:
    """`load_onnx` for the bytes of an ONNX model (a file, or the weights inside a model package); `source`
    names them in errors."""
    onnx = require("onnx")
    ort = require("onnxruntime")
    try:
        model = onnx.load_from_string(data)
    except Exception as err:  # protobuf reports a foreign or truncated file with several exception types
        raise UnetkitError(f"{source} is not a readable ONNX model ({_first_line(err)}); "
                           "export one with `unetkit export`") from None
    cfg, out_channels, input_size = check_onnx_model(model, source)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: provider fallbacks are not the user's concern
    chosen = providers(device)
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=chosen)
    except Exception as err:  # e.g. an operator this onnxruntime does not implement
        raise UnetkitError(f"{source}: onnxruntime cannot run it ({_first_line(err)}); export it with another "
                           "--opset or update onnxruntime") from None
    with torch.device("meta"):  # the size rule needs the module, not its weights
        net = build_model(cfg.model, cfg.data.channels, out_channels, pretrained=False)
    return OnnxPredictor(session, net, input_size, source), cfg
