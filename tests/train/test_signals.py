"""Ctrl-C and SIGTERM as users send them: to the whole process group of `unetkit train`, loader workers included.

A terminal's Ctrl-C and a scheduler's SIGTERM reach every process of the foreground group, so the data loader
workers get the signal too. They must ignore it (the main process finishes its step, saves `last.pt` and stops
them); a worker dying of it would end the run with a traceback instead of a checkpoint and a resume hint.
"""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from unetkit.checkpoint import load_checkpoint
from unetkit.config import Config, save_config

HINT = "continue with: unetkit train --resume"
# 8 images, batch 2: 4 steps per epoch, a step checkpoint after each; 2 epochs are long enough to be interrupted
SETTINGS = ["data.batch_size=2", "data.crops_per_image=1", "data.num_workers=2", "train.epochs=2",
            "train.checkpoint_every=1", "train.sample_images=0", "train.run_name=sig"]
STEPS = 2 * 4


class Training:
    """`python -m unetkit train ...` in its own process group, stdout and stderr going to files."""

    def __init__(self, args: list[str], cwd: Path, name: str) -> None:
        self.out, self.err = cwd / f"{name}.out", cwd / f"{name}.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:  # files: a full pipe would block the run
            self.proc = subprocess.Popen([sys.executable, "-m", "unetkit", "train", *args], cwd=cwd, stdout=out,
                                         stderr=err, start_new_session=True)

    def signal_group(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)  # start_new_session: the process group id is the main process's pid

    def group_left(self) -> bool:
        """Whether any process of the group is still there (a loader worker outliving the main process)."""
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def wait(self, timeout: float = 60.0) -> tuple[int, str]:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGKILL)  # the main process and any worker left behind
            self.proc.wait()
            pytest.fail(f"training did not end within {timeout:.0f} s of the signal:\n{self.err.read_text()}")
        return code, self.err.read_text()

    def __enter__(self) -> "Training":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.signal_group(signal.SIGKILL)
            self.proc.wait()


def _global_step(path: Path) -> int:
    """The step of a checkpoint that may be replaced while we read it (-1 while it cannot be read)."""
    try:
        return load_checkpoint(path)["global_step"]
    except Exception:
        return -1


def _wait_for(condition: Callable[[], bool], training: Training, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if training.proc.poll() is not None:
            pytest.fail(f"training ended (status {training.proc.returncode}) first:\n{training.err.read_text()}")
        if time.monotonic() > end:
            pytest.fail("training made no progress")
        time.sleep(0.0002)


@pytest.fixture
def config_path(tmp_path: Path, synthetic_config: Callable[..., Config]) -> Path:
    path = tmp_path / "sig.yaml"
    save_config(synthetic_config(*SETTINGS), path)
    return path


def _start_and_wait_for_steps(config_path: Path) -> tuple[Training, Path]:
    """Start the run and return once it saved step 2: both workers have delivered a batch (they alternate)."""
    run_dir = config_path.parent / "runs" / "sig"
    training = Training([str(config_path)], config_path.parent, "first")
    _wait_for(lambda: _global_step(run_dir / "last.pt") >= 2, training)
    return training, run_dir


def _assert_clean_stop(training: Training, expected: int) -> str:
    """The run ended with status `expected`, no traceback (the workers' included) and no process left; its stderr."""
    code, stderr = training.wait()
    assert code == expected, stderr
    assert "Traceback" not in stderr and "Error" not in stderr, stderr
    assert not training.group_left(), "a loader worker outlived the run"
    return stderr


def test_ctrl_c_to_the_process_group_saves_and_resume_finishes(config_path: Path) -> None:
    training, run_dir = _start_and_wait_for_steps(config_path)
    with training:
        assert training.proc.poll() is None, "training ended before it could be interrupted; make it longer"
        training.signal_group(signal.SIGINT)
        stderr = _assert_clean_stop(training, 130)
    assert f"{HINT} {run_dir}" in stderr
    assert 2 < load_checkpoint(run_dir / "last.pt")["global_step"] < STEPS  # saved where it stopped, mid-run

    with Training(["--resume", str(run_dir)], config_path.parent, "resumed") as resumed:
        code, stderr = resumed.wait()
    assert code == 0, stderr
    final = load_checkpoint(run_dir / "last.pt")
    assert final["epoch"] == 2 and final["progress"] is None and final["global_step"] == STEPS
    assert not list(run_dir.glob(".*.tmp"))


def test_second_ctrl_c_while_saving_stops_at_once_and_cleanly(config_path: Path) -> None:
    training, run_dir = _start_and_wait_for_steps(config_path)
    tmp = run_dir / ".last.pt.tmp"
    with training:
        training.signal_group(signal.SIGINT)
        _wait_for(tmp.exists, training, timeout=10.0)  # the stop's checkpoint is being written
        training.signal_group(signal.SIGINT)
        stderr = _assert_clean_stop(training, 130)
    # signals.py: the second Ctrl-C stops at once; the CLI says "interrupted", or gives the resume hint when the
    # save had already finished; either way exit 130, no traceback, last.pt (old or new) whole, and the
    # interrupted write's temporary file removed (atomic.py)
    assert "unetkit: interrupted" in stderr or HINT in stderr, stderr
    assert load_checkpoint(run_dir / "last.pt")["global_step"] >= 2
    assert not list(run_dir.glob(".*.tmp"))


def test_sigterm_to_the_process_group_saves_and_says_how_to_resume(config_path: Path) -> None:
    training, run_dir = _start_and_wait_for_steps(config_path)
    with training:
        training.signal_group(signal.SIGTERM)
        stderr = _assert_clean_stop(training, 143)
    assert "stopped by SIGTERM" in stderr and f"{HINT} {run_dir}" in stderr
    assert 2 < load_checkpoint(run_dir / "last.pt")["global_step"] < STEPS
