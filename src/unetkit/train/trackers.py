"""Experiment tracking: the epoch rows of metrics.csv, also sent to TensorBoard and MLflow (`train.loggers`).

A tracker sees a run at three points only: when it starts (or resumes), after each epoch (the row just
written to metrics.csv and the epoch's sample picture), and when it ends. `Trackers` holds the chosen ones
and is what the training loop calls. Tracking is a copy of what the run folder already holds, so it must
never cost a run: any failure inside a tracker (a server that is down, a bad URI, a full disk) is one
warning line on stderr and that tracker is off for the rest of the run, while the others and the run go on.

The packages are imported when the trackers are built, at the very start of training, so a missing extra
is a one-line error before any data is read. Under torchrun every rank builds them (the same check on each),
but only rank 0 keeps them: the other ranks log nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, Protocol

from tqdm import tqdm

from unetkit.config import Config
from unetkit.errors import TrainingStopped, require_extra

INSTALL_HINT = "pip install 'unetkit[tracking]'"
Status = Literal["FINISHED", "FAILED", "KILLED"]  # how the run ended, in MLflow's words


class Tracker(Protocol):
    """One destination of the epoch rows. Its methods may raise anything: `Trackers` turns that off."""

    name: str

    def start(self, run_dir: Path, cfg: Config, first_epoch: int) -> None:
        """Open (or, when `first_epoch > 1`, reopen) the run's record; `cfg` is the resolved config."""

    def log_epoch(self, row: dict[str, Any], samples: Path | None) -> None:
        """Record one metrics.csv row (`row["epoch"]` is the step) and the epoch's sample picture, if drawn."""

    def finish(self, run_dir: Path, status: Status) -> None:
        """Close the record; a FINISHED run also hands over its files (best.pt, report, config, metrics)."""


def require(module: str, package: str, logger: str) -> ModuleType:
    """Import what `logger` needs, or say in one line how to install it."""
    return require_extra(module, "tracking", f"train.loggers: {logger} needs", package)


def epoch_scalars(row: dict[str, Any]) -> dict[str, float]:
    """The scalars of a metrics.csv row, by their column names: every number but the epoch (the step);
    a score that is undefined for the epoch (None, e.g. no step trained) is left out."""
    return {key: float(value) for key, value in row.items()
            if key != "epoch" and isinstance(value, int | float) and not isinstance(value, bool)}


class Trackers:
    """The trackers of one run, each switched off at its first failure (one warning line on stderr)."""

    def __init__(self, trackers: list[Tracker], warn: Callable[[str], None] | None = None) -> None:
        self.active = list(trackers)
        self._warn = warn or (lambda line: tqdm.write(line, file=sys.stderr))

    def _each(self, what: str, call: Callable[[Tracker], None]) -> None:
        for tracker in list(self.active):
            try:
                call(tracker)
            except Exception as err:  # tracking is a copy of the run folder: nothing in it may stop the run
                self.active.remove(tracker)
                first = (str(err).strip().splitlines() or [""])[0]
                reason = f"{type(err).__name__}: {first if len(first) <= 300 else first[:297] + '...'}"
                self._warn(f"warning: {tracker.name} tracking failed while {what} ({reason}); it is off for the "
                           "rest of the run, which goes on (the run folder has every epoch)")

    def start(self, run_dir: Path, cfg: Config, first_epoch: int) -> None:
        self._each("starting", lambda t: t.start(run_dir, cfg, first_epoch))

    def log_epoch(self, row: dict[str, Any], samples: Path | None) -> None:
        shown = samples if samples is not None and samples.is_file() else None  # none when sample_images is 0
        self._each(f"logging epoch {row['epoch']}", lambda t: t.log_epoch(row, shown))

    def finish(self, run_dir: Path, status: Status) -> None:
        self._each("finishing", lambda t: t.finish(run_dir, status))

    @contextmanager
    def running(self, run_dir: Path, cfg: Config, first_epoch: int) -> Iterator[None]:
        """Start the trackers around the epochs; the end of the block finishes them with the run's status
        (a run stopped by a signal is KILLED, one ended by an error FAILED), and the error goes on."""
        self.start(run_dir, cfg, first_epoch)
        try:
            yield
        except TrainingStopped:
            self.finish(run_dir, "KILLED")
            raise
        except BaseException:
            self.finish(run_dir, "FAILED")
            raise
        self.finish(run_dir, "FINISHED")


def open_trackers(loggers: list[str], main: bool) -> Trackers:
    """The trackers named in `train.loggers` (csv is metrics.csv itself, written by the run), their packages
    imported now; empty on every rank but rank 0."""
    built: list[Tracker] = []
    if "tensorboard" in loggers:
        from unetkit.train.tensorboard_tracker import TensorBoardTracker

        built.append(TensorBoardTracker())
    if "mlflow" in loggers:
        from unetkit.train.mlflow_tracker import MlflowTracker

        built.append(MlflowTracker())
    return Trackers(built if main else [])
