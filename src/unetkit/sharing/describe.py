"""The tensors of a bioimage.io model package, described with bioimage.io's own spec classes (format 0.5).

A package's input is the raw image as a consumer holds it, `(batch, channel, y, x)` in the file's own pixel
type; its preprocessing reproduces what unetkit does to a pixel before the network sees it
(`unetkit.data.source.make_prepare`):

    uint8 / uint16        scale_linear by 1 / 255 or 1 / 65535      (`to_unit_float`: the dtype's range)
    data.normalize image  scale_range 0.5..99.5 % over (y, x) per channel, then clip to [0, 1]
                          (`unetkit.data.intensity`: each image's own range, stretched and clipped)
    always                fixed_zero_mean_unit_variance with data.mean / data.std per channel

The stretch of `normalize: image` makes the dtype scaling redundant (a linear map does not move percentiles),
so it is left out there. The output is the class probabilities: the exported weights give logits and the
postprocessing is the activation unetkit applies (`to_probabilities`), softmax over the channel axis, or
sigmoid for a one-logit binary model, whose single output channel is then p(foreground).

Sizes follow the network's rule: input sides `min + n * step` with `min = input_size_for(1)` and
`step = stride`; output sides are the input's less `2 * margin` (the valid U-Net's lost border, 0 when padded).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from unetkit.config import Config
from unetkit.data.intensity import HIGH, LOW
from unetkit.infer.package_backend import require
from unetkit.sharing.citations import cite_model

INPUT_ID, OUTPUT_ID = "image", "probabilities"


def spec() -> Any:
    """bioimageio.spec's 0.5 model module (its description classes), or one line saying how to install it."""
    return require("bioimageio.spec.model.v0_5")


def preprocessing(cfg: Config, dtype: np.dtype) -> list[Any]:
    """The spec's ops that turn a raw `(1, C, H, W)` image of `dtype` into the network's input (module docstring)."""
    v = spec()
    data = cfg.data
    ops: list[Any] = [v.EnsureDtypeDescr(kwargs=v.EnsureDtypeKwargs(dtype="float32"))]
    if data.normalize == "image":
        ops.append(v.ScaleRangeDescr(kwargs=v.ScaleRangeKwargs(
            axes=[v.AxisId("y"), v.AxisId("x")], min_percentile=LOW, max_percentile=HIGH)))
        ops.append(v.ClipDescr(kwargs=v.ClipKwargs(min=0.0, max=1.0)))
    elif np.issubdtype(dtype, np.unsignedinteger):
        ops.append(v.ScaleLinearDescr(kwargs=v.ScaleLinearKwargs(gain=1.0 / np.iinfo(dtype).max)))
    if data.channels == 1:
        ops.append(v.FixedZeroMeanUnitVarianceDescr(
            kwargs=v.FixedZeroMeanUnitVarianceKwargs(mean=data.mean[0], std=data.std[0])))
    else:
        ops.append(v.FixedZeroMeanUnitVarianceDescr(kwargs=v.FixedZeroMeanUnitVarianceAlongAxisKwargs(
            mean=list(data.mean), std=list(data.std), axis=v.AxisId("channel"))))
    # the spec closes preprocessing with a cast back to the input's own type unless told otherwise
    return [*ops, v.EnsureDtypeDescr(kwargs=v.EnsureDtypeKwargs(dtype="float32"))]


def postprocessing(out_channels: int) -> list[Any]:
    """Sigmoid for one logit (binary BCE), else softmax over the channel axis: unetkit's `to_probabilities`."""
    v = spec()
    if out_channels == 1:
        return [v.SigmoidDescr()]
    return [v.SoftmaxDescr(kwargs=v.SoftmaxKwargs(axis=v.AxisId("channel")))]


def output_channel_names(cfg: Config, out_channels: int) -> list[str]:
    """One name per output channel: the class names, or the foreground class alone for a sigmoid output."""
    return [cfg.data.classes[1]] if out_channels == 1 else list(cfg.data.classes)


def _data_type(dtype: np.dtype) -> Any:
    v = spec()
    name = dtype.name if dtype.name in ("uint8", "uint16", "float32") else "float32"
    return v.IntervalOrRatioDataDescr(type=name)


def input_tensor(cfg: Config, net: nn.Module, dtype: np.dtype, test: Path, sample: Path) -> Any:
    """The input: raw `(batch, channel, y, x)` pixels, sides `input_size_for(1) + n * stride`."""
    v = spec()
    size = v.ParameterizedSize(min=net.input_size_for(1), step=net.stride)
    names = ["gray"] if cfg.data.channels == 1 else ["red", "green", "blue"]
    axes = [v.BatchAxis(), v.ChannelAxis(channel_names=names),
            v.SpaceInputAxis(id=v.AxisId("y"), size=size), v.SpaceInputAxis(id=v.AxisId("x"), size=size)]
    return v.InputTensorDescr(
        id=v.TensorId(INPUT_ID), axes=axes, data=_data_type(dtype), preprocessing=preprocessing(cfg, dtype),
        description=f"raw image, {'gray' if cfg.data.channels == 1 else 'RGB'}, "
                    + (f"{dtype.name} pixels" if dtype.name != "float32" else "float32 pixels in [0, 1]"),
        test_tensor=v.FileDescr(source=test), sample_tensor=v.FileDescr(source=sample))


def output_tensor(cfg: Config, net: nn.Module, out_channels: int, test: Path, sample: Path) -> Any:
    """The output: class probabilities `(batch, channel, y, x)`; each side is the input's less `2 * margin`."""
    v = spec()
    axes = [v.BatchAxis(), v.ChannelAxis(channel_names=output_channel_names(cfg, out_channels))]
    for axis in ("y", "x"):
        size = v.SizeReference(tensor_id=v.TensorId(INPUT_ID), axis_id=v.AxisId(axis), offset=-2 * net.margin)
        axes.append(v.SpaceOutputAxis(id=v.AxisId(axis), size=size))
    what = "p(" + cfg.data.classes[1] + ")" if out_channels == 1 else "class probabilities"
    return v.OutputTensorDescr(
        id=v.TensorId(OUTPUT_ID), axes=axes, data=v.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
        postprocessing=postprocessing(out_channels), test_tensor=v.FileDescr(source=test),
        sample_tensor=v.FileDescr(source=sample),
        description=f"{what}; {net.margin} px less per side than the input" if net.margin else what)


def citations(cfg: Config) -> list[Any]:
    """The papers of the network: the U-Net's, and for an encoder U-Net the encoder's."""
    v = spec()
    return [v.CiteEntry(text=text, doi=v.Doi(doi)) for text, doi in cite_model(cfg.model)]
