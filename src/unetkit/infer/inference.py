"""The one way unetkit turns a network into masks: validation during training, `evaluate`, `predict`,
`ensemble --search` and the benchmarks all open their inference here.

Two paths that compute the same thing drift apart (a validation that ran the network in training mode once
reported mIoU 0.70 for a model that evaluates at 0.27), so there is a single chain:

    network -> `model_predictor` (eval-mode copy, batch norm folded) -> speed options -> TTA -> `Inference`

and a single rule for whole images: one mirror-padded pass when the image fits in `infer.tile`, else
overlap-tile prediction, then `classes_of` (arg-max, or the binary threshold). A checkpoint loaded from disk
and the live model of a training run therefore give the same integers in every confusion matrix.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from pydantic import ValidationError
from torch import nn

from unetkit.checkpoint import load_checkpoint, model_from_checkpoint
from unetkit.config import Config, DataConfig, InferConfig
from unetkit.data.resample import grow_probabilities, shrink_image
from unetkit.data.source import make_prepare, to_unit
from unetkit.errors import UnetkitError
from unetkit.infer.cleanup import cleans, remove_small_objects
from unetkit.infer.ensemble import FORMAT as ENSEMBLE_FORMAT
from unetkit.infer.ensemble import ensemble_from_file, file_format
from unetkit.infer.gaps import close_gaps, closes
from unetkit.infer.instances import ObjectRule, object_rule
from unetkit.infer.onnx_backend import load_onnx
from unetkit.infer.package_backend import is_package, load_package
from unetkit.infer.predictor import Fn, Predictor, classes_of, configure_speed, predict_whole
from unetkit.infer.tiled import assemble, index_bands
from unetkit.infer.tta import TTA
from unetkit.models.fold import fold_batch_norm
from unetkit.runtime import resolve_device


def model_predictor(model: nn.Module, device: torch.device) -> Predictor:
    """A predictor over an eval-mode copy of `model` with batch norm folded into its convolutions.

    The copy is what makes validation honest: the model being trained keeps its mode, parameters and
    running statistics, and the copy computes exactly what the same weights loaded from a checkpoint compute.
    """
    return Predictor(fold_batch_norm(model), device)


def load_predictor(checkpoint: str | Path, device: str = "auto") -> tuple[Fn, Config]:
    """A ready predictor and the config to run it with, from a checkpoint, an ensemble or an ONNX file.

    An ensemble's members normalize their own input, so its config has data.mean 0 and std 1: `prepare`
    then only scales the pixels to [0, 1]. A `.onnx` file runs on onnxruntime with its embedded config, and so
    does a `.zip` bioimage.io package unetkit exported (its ONNX weights).
    """
    if Path(checkpoint).suffix.lower() == ".onnx":
        return load_onnx(checkpoint, device)
    if is_package(checkpoint):
        return load_package(checkpoint, device)
    if file_format(checkpoint) == ENSEMBLE_FORMAT:
        return ensemble_from_file(checkpoint, resolve_device(device))
    model, cfg = model_from_checkpoint(load_checkpoint(checkpoint), str(checkpoint))
    return model_predictor(model, resolve_device(device)), cfg


READ_OPTIONS = ("level",)  # how the images are read, not how the network runs: they stay out of `InferConfig`


@dataclass(frozen=True)
class InferOptions:
    """The inference options a user gives `predict`, `evaluate` and `ensemble` (the CLI's flags), as one
    object: each field left None keeps the checkpoint's own `infer` setting (see `InferConfig`)."""

    tile: int | None = None
    overlap: int | None = None
    blend: str | None = None
    tta: str | None = None
    batch_size: int | None = None
    threshold: float | None = None
    min_object_px: int | None = None
    boundary_seeds: float | None = None
    em_scores: bool | None = None
    instances: bool | None = None
    seed_threshold: float | None = None
    precision: str | None = None
    channels_last: bool | None = None
    compile: bool | None = None
    report_images: int | None = None
    level: int | None = None  # pyramid level of the images to read (0 = full resolution); not an `infer` setting

    def applied_to(self, cfg: Config) -> InferConfig:
        """`cfg.infer` with the given options applied; a bad value is one line naming its flag."""
        given = {k: v for k, v in asdict(self).items() if v is not None and k not in READ_OPTIONS}
        if cfg.model.task == "instances":  # an instance model gives objects unless told not to
            given.setdefault("instances", True)
        try:
            return InferConfig.model_validate({**cfg.infer.model_dump(), **given})
        except ValidationError as err:
            problems = "; ".join(f"--{'.'.join(map(str, e['loc']))} {e.get('input')!r}: {e['msg']}"
                                 for e in err.errors())
            raise UnetkitError(f"invalid inference option: {problems}") from None


def validation_settings(cfg: Config) -> InferConfig:
    """What validation during training runs with: the run's own `infer` settings (tiles, overlap, blend, TTA,
    precision, threshold), without compiling (a fresh copy of the network is scored every epoch) and without
    the slow EM scores. `evaluate` with no flags uses the same settings, so it reproduces validation exactly."""
    return cfg.infer.model_copy(update={"compile": False, "em_scores": False, "instances": False})


def build_chain(predictor: Fn, infer: InferConfig) -> Fn:
    """Compose the inference callables: predictor (with its speed options), then test-time augmentation."""
    configure_speed(predictor, infer.precision, infer.channels_last, infer.compile)
    return TTA(predictor, infer.tta) if infer.tta != "none" else predictor


@dataclass
class Inference:
    """A network ready to segment whole images: the chain `fn` ((N, C, h, w) normalized input -> (N, K, h', w')
    probabilities), the data settings that prepare its pixels and the options it runs with."""

    fn: Fn
    data: DataConfig
    infer: InferConfig
    task: str = "semantic"  # model.task
    objects: ObjectRule = "components"  # how its classes become objects (`infer.instances.object_rule`)

    def bands(self, image: np.ndarray, probabilities: np.ndarray | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Class indices of an (H, W[, C]) image as `(top, (rows, W) uint8)` pieces, top to bottom: one pass when
        it fits in one tile, else tiled (pieces of a few MB). `probabilities` (K, H, W) is filled as rows finish.
        With `infer.boundary_seeds` an image of up to 64 Mpx has the gaps of its boundaries closed and with
        `infer.min_object_px` it is cleaned of small objects, each as one piece (gaps first); with
        `data.scale` < 1 the image is segmented at that scale and its probabilities resized back."""
        infer = self.infer
        height, width = image.shape[:2]
        gaps = self.task == "semantic" and closes(height, width, infer.boundary_seeds)
        if gaps and probabilities is None:  # the watershed runs on p(boundary)
            probabilities = np.empty((self.data.num_classes, height, width), np.float32)
        if self.data.scale != 1.0:
            pieces: Iterator[tuple[int, np.ndarray]] = iter([(0, self._reduced(image, probabilities))])
        elif max(height, width) <= infer.tile:
            probs = predict_whole(self.fn, make_prepare(self.data, image)(np.asarray(image))[None])[0]  # (K, H, W)
            if probabilities is not None:
                probabilities[:] = probs.numpy().astype(probabilities.dtype)
            pieces = iter([(0, classes_of(probs, infer.threshold).numpy().astype(np.uint8))])
        else:
            pieces = index_bands(self.fn, image, make_prepare(self.data, image), infer, probabilities=probabilities)
        if gaps:
            pieces = iter([(0, close_gaps(assemble(pieces, (height, width)), probabilities[1],
                                          infer.boundary_seeds))])
        if self.task == "semantic" and cleans(height, width, infer.min_object_px):  # instance models: objects
            pieces = iter([(0, remove_small_objects(assemble(pieces, (height, width)), infer.min_object_px))])
        yield from pieces

    def _reduced(self, image: np.ndarray, probabilities: np.ndarray | None) -> np.ndarray:
        """(H, W) uint8 classes predicted at `data.scale`: the image shrunk, segmented as at full scale, and the
        (K, h, w) probabilities resized back to (K, H, W) before the classes are taken."""
        height, width = image.shape[:2]
        small = shrink_image(to_unit(np.asarray(image), self.data.channels), self.data.scale)  # (h, w, C)
        at_scale = replace(self, data=self.data.model_copy(update={"scale": 1.0}),
                           infer=self.infer.model_copy(update={"min_object_px": 0, "boundary_seeds": None}))
        probs = np.empty((self.data.num_classes, *small.shape[:2]), np.float32)
        at_scale.segment(small, probs)
        full = grow_probabilities(torch.from_numpy(probs), height, width)  # (K, H, W)
        if probabilities is not None:
            probabilities[:] = full.numpy().astype(probabilities.dtype)
        return classes_of(full, self.infer.threshold).numpy().astype(np.uint8)

    def segment(self, image: np.ndarray, probabilities: np.ndarray | None = None) -> np.ndarray:
        """(H, W[, C]) image -> (H, W) uint8 class indices (all of `bands`)."""
        return assemble(self.bands(image, probabilities), image.shape[:2])


def open_inference(predictor: Fn, cfg: Config, infer: InferConfig) -> Inference:
    """The inference of `predictor` (see `model_predictor`, `load_predictor`) under `cfg`'s normalization."""
    return Inference(build_chain(predictor, infer), cfg.data, infer, cfg.model.task, object_rule(cfg))
