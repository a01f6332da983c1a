"""TensorBoard event files in `RUN/tensorboard/`: the scalars of metrics.csv and the epoch's sample picture.

Each scalar keeps its metrics.csv column name (`val_miou`, `val_iou_cell`, `lr`, ...) with the epoch as its
step, so `tensorboard --logdir runs/` draws the same numbers as curves.png (TensorBoard stores them as
float32). The picture is samples/epoch_NNN.png itself, under the tag `samples`: image | truth | prediction
for the validation images the run draws anyway.

A resumed run writes a new event file into the same folder, opened with `purge_step` = its first epoch:
should the earlier process have logged an epoch that the checkpoint it resumes from did not keep, TensorBoard
drops that older point instead of drawing two values at one step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from unetkit.config import Config
from unetkit.train.trackers import Status, epoch_scalars, require

FOLDER = "tensorboard"


class TensorBoardTracker:
    """`train.loggers: [tensorboard]`: one `SummaryWriter` on `RUN/tensorboard/`, flushed after every epoch."""

    name = "tensorboard"

    def __init__(self) -> None:
        # torch's writer needs the tensorboard package; importing it here fails before any work is done
        self._writer_type = require("torch.utils.tensorboard", "tensorboard", self.name).SummaryWriter
        self._writer: Any = None

    def start(self, run_dir: Path, cfg: Config, first_epoch: int) -> None:
        self._writer = self._writer_type(log_dir=str(run_dir / FOLDER),
                                         purge_step=first_epoch if first_epoch > 1 else None)

    def log_epoch(self, row: dict[str, Any], samples: Path | None) -> None:
        epoch = int(row["epoch"])
        for key, value in epoch_scalars(row).items():
            self._writer.add_scalar(key, value, epoch)
        if samples is not None:
            with Image.open(samples) as picture:
                pixels = np.asarray(picture.convert("RGB"))  # (H, W, 3) uint8, as drawn in samples/
            self._writer.add_image("samples", pixels, epoch, dataformats="HWC")
        self._writer.flush()  # each epoch on disk: a killed run still shows every finished epoch

    def finish(self, run_dir: Path, status: Status) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
