"""Apply a trained model to image files and write masks the way the training data was encoded.

Outputs per input `NAME.ext`: `NAME.png` (the mask in the dataset's own encoding: 0/255 stays 0/255, a
palette stays a palette), optionally `NAME_overlay.png` (class colours over the image) and
`NAME_probs.npy` (float16 class probabilities, (K, H, W), written as tiles finish).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import ValidationError
from tqdm import tqdm

from unetkit.config import Config, InferConfig
from unetkit.data.io import list_images, write_image, write_mask
from unetkit.data.masks import MaskCodec
from unetkit.errors import UnetkitError
from unetkit.infer.ensemble import FORMAT as ENSEMBLE_FORMAT
from unetkit.infer.ensemble import ensemble_from_file, file_format
from unetkit.infer.onnx_backend import load_onnx
from unetkit.infer.predictor import Fn, Predictor, configure_speed, predict_whole
from unetkit.infer.source import make_prepare, open_image, to_unit
from unetkit.infer.tiled import Prepare, predict_tiled
from unetkit.infer.tta import TTA
from unetkit.runtime import resolve_device
from unetkit.train.checkpoint import load_checkpoint, model_from_checkpoint
from unetkit.train.plots import overlay


def load_predictor(checkpoint: str | Path, device: str = "auto") -> tuple[Fn, Config]:
    """A ready predictor and the config to run it with, from a checkpoint, an ensemble or an ONNX file.

    An ensemble's members normalize their own input, so its config has data.mean 0 and std 1: `prepare`
    then only scales the pixels to [0, 1]. A `.onnx` file runs on onnxruntime with its embedded config.
    """
    if Path(checkpoint).suffix.lower() == ".onnx":
        return load_onnx(checkpoint, device)
    if file_format(checkpoint) == ENSEMBLE_FORMAT:
        return ensemble_from_file(checkpoint, resolve_device(device))
    model, cfg = model_from_checkpoint(load_checkpoint(checkpoint), str(checkpoint))
    return Predictor(model, resolve_device(device)), cfg


def build_chain(predictor: Fn, infer: InferConfig) -> Fn:
    """Compose the inference callables: predictor (with its speed options), then test-time augmentation."""
    configure_speed(predictor, infer.precision, infer.channels_last)
    return TTA(predictor, infer.tta) if infer.tta != "none" else predictor


def infer_settings(cfg: Config, **flags: object) -> InferConfig:
    """The checkpoint's inference settings with the command-line flags that were given (not None) applied."""
    given = {k: v for k, v in flags.items() if v is not None}
    try:
        return InferConfig.model_validate({**cfg.infer.model_dump(), **given})
    except ValidationError as err:
        problems = "; ".join(f"--{'.'.join(map(str, e['loc']))} {e.get('input')!r}: {e['msg']}" for e in err.errors())
        raise UnetkitError(f"invalid inference option: {problems}") from None


def segment(fn: Fn, image: np.ndarray, prepare: Prepare, infer: InferConfig,
            probabilities: np.ndarray | None = None) -> np.ndarray:
    """(H, W[, C]) image -> (H, W) uint8 class indices; one pass when it fits in one tile, else tiled."""
    height, width = image.shape[:2]
    if max(height, width) <= infer.tile:
        probs = predict_whole(fn, prepare(np.asarray(image))[None])[0]  # (K, H, W)
        if probabilities is not None:
            probabilities[:] = probs.numpy().astype(probabilities.dtype)
        return probs.argmax(0).numpy().astype(np.uint8)
    overlap = infer.overlap_for(fn.margin)
    return predict_tiled(fn, image, prepare, tile=infer.tile, overlap=overlap, blend=infer.blend,
                         batch_size=infer.batch_size, probabilities=probabilities)


def collect_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their images (sorted); duplicates dropped."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files.extend(list_images(item))
        elif item.is_file():
            files.append(item)
        else:
            raise UnetkitError(f"input {item} does not exist")
    unique = list(dict.fromkeys(f.resolve() for f in files))
    if not unique:
        raise UnetkitError("no input images given")
    return unique


def predict(
    checkpoint: str | Path,
    inputs: list[str | Path],
    output_dir: str | Path,
    *,
    overlays: bool = False,
    probabilities: bool = False,
    tile: int | None = None,
    overlap: int | None = None,
    tta: str | None = None,
    precision: str | None = None,
    channels_last: bool | None = None,
    device: str = "auto",
    progress: bool = True,
) -> list[Path]:
    """Predict every input image and write its mask (and extras) to `output_dir`; returns the mask paths."""
    predictor, cfg = load_predictor(checkpoint, device)
    infer = infer_settings(cfg, tile=tile, overlap=overlap, tta=tta, precision=precision, channels_last=channels_last)
    fn = build_chain(predictor, infer)
    prepare = make_prepare(cfg.data)
    codec = MaskCodec(cfg.data.mask, cfg.data.num_classes)
    files = collect_inputs(inputs)
    out = Path(output_dir)
    if any(out.resolve() == f.parent for f in files):
        raise UnetkitError(f"output folder {out} holds input images; choose another -o so no input is overwritten")
    stems = [f.stem for f in files]
    if len(set(stems)) != len(stems):
        clash = sorted({s for s in stems if stems.count(s) > 1})[:3]
        raise UnetkitError(f"inputs share the names {', '.join(clash)}; their masks would overwrite each other")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UnetkitError(f"cannot create output folder {out}: {err.strerror}") from None
    written = []
    for path in tqdm(files, desc="predict", disable=not progress, dynamic_ncols=True):
        image = open_image(path, cfg.data.channels)  # (H, W[, C]), possibly memory-mapped
        probs = None
        if probabilities:
            shape = (cfg.data.num_classes, *image.shape[:2])
            probs = np.lib.format.open_memmap(out / f"{path.stem}_probs.npy", mode="w+", dtype=np.float16, shape=shape)
        index = segment(fn, image, prepare, infer, probs)
        if probs is not None:
            probs.flush()
        mask_path = out / f"{path.stem}.png"
        write_mask(mask_path, codec.encode(index))
        if overlays:
            shown = to_unit(image, cfg.data.channels)  # (H, W, C) in [0, 1]
            write_image(out / f"{path.stem}_overlay.png", overlay(shown, index, codec.colors()))
        written.append(mask_path)
    return written

