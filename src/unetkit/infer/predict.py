"""Apply a trained model to image files and write masks the way the training data was encoded.

Outputs per input `NAME.ext`: `NAME.png` (the mask in the dataset's own encoding: 0/255 stays 0/255, a
palette stays a palette), optionally `NAME_overlay.png` (class colours over the image) and
`NAME_probs.npy` (float16 class probabilities, (K, H, W)).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from unetkit.config import Config
from unetkit.data.io import list_images, read_image, write_image, write_mask
from unetkit.data.masks import MaskCodec
from unetkit.data.transforms import eval_transform
from unetkit.errors import UnetkitError
from unetkit.infer.predictor import Predictor, to_probabilities
from unetkit.runtime import resolve_device
from unetkit.train.checkpoint import load_checkpoint, model_from_checkpoint
from unetkit.train.plots import overlay


def load_predictor(checkpoint: str | Path, device: str = "auto") -> tuple[Predictor, Config]:
    """A ready predictor and the run's config from a checkpoint file."""
    model, cfg = model_from_checkpoint(load_checkpoint(checkpoint), str(checkpoint))
    return Predictor(model, resolve_device(device)), cfg


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


def probabilities_for(predictor: Predictor, cfg: Config, image: np.ndarray) -> torch.Tensor:
    """(H, W, C) image in [0, 1] -> (K, H, W) class probabilities, on the CPU."""
    normalized = eval_transform(cfg.data)(image=image)["image"]
    x = torch.from_numpy(np.ascontiguousarray(normalized.transpose(2, 0, 1)))[None]  # (1, C, H, W)
    return to_probabilities(predictor(x))[0].cpu()


def predict(
    checkpoint: str | Path,
    inputs: list[str | Path],
    output_dir: str | Path,
    *,
    overlays: bool = False,
    probabilities: bool = False,
    device: str = "auto",
    progress: bool = True,
) -> list[Path]:
    """Predict every input image and write its mask (and extras) to `output_dir`; returns the mask paths."""
    predictor, cfg = load_predictor(checkpoint, device)
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
        image = read_image(path, cfg.data.channels)  # (H, W, C) in [0, 1]
        probs = probabilities_for(predictor, cfg, image)  # (K, H, W)
        index = probs.argmax(0).numpy().astype(np.uint8)  # (H, W)
        mask_path = out / f"{path.stem}.png"
        write_mask(mask_path, codec.encode(index))
        if overlays:
            write_image(out / f"{path.stem}_overlay.png", overlay(image, index, codec.colors()))
        if probabilities:
            np.save(out / f"{path.stem}_probs.npy", probs.numpy().astype(np.float16))
        written.append(mask_path)
    return written
