"""SIGKILL at random moments (mid-step, mid-checkpoint-write): what is on disk always loads, and --resume goes on.

SIGKILL cannot be caught, so this is the test of the atomic writes themselves: a checkpoint is written to a
temporary name, fsynced and renamed, so `last.pt` is always either the previous or the next whole file.
"""

import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from unetkit.checkpoint import load_checkpoint
from unetkit.config import Config, save_config

KILLS = 6


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "unetkit", "train", *args, "--quiet"], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(condition: Callable[[], bool], proc: subprocess.Popen, timeout: float = 120.0) -> bool:
    """Poll `condition` every 0.2 ms; False if the process ended first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.0002)
    raise TimeoutError("training made no progress")


def _global_step(path: Path) -> int:
    return load_checkpoint(path)["global_step"]


def test_sigkill_at_random_moments_never_corrupts_checkpoints_and_resume_finishes(
        tmp_path: Path, synthetic_config: Callable[..., Config]) -> None:
    cfg = synthetic_config("data.batch_size=2", "data.crops_per_image=1", "train.epochs=8",
                           "train.checkpoint_every=1", "train.run_name=k", "train.sample_images=0")
    config_path = tmp_path / "kill.yaml"
    save_config(cfg, config_path)
    run_dir = Path(cfg.train.output_dir) / "k"
    last, tmp = run_dir / "last.pt", run_dir / ".last.pt.tmp"
    rng = random.Random(0)
    steps_seen, mid_write = [], 0
    args = [str(config_path)]
    for kill in range(KILLS):
        proc = _start(args, tmp_path)
        floor = _global_step(last) if last.exists() else 0
        assert _wait_for(lambda floor=floor: last.exists() and _global_step_safe(last) > floor, proc), proc.stderr
        if kill % 2:  # odd kills: the moment a checkpoint is being written
            caught = _wait_for(tmp.exists, proc, timeout=10.0)
        else:  # even kills: anywhere in a step, a random time after progress was seen
            time.sleep(rng.uniform(0.0, 0.5))
            caught = False
        assert proc.poll() is None, "training ended before it could be killed; make it longer"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        mid_write += caught and tmp.exists()
        for checkpoint in run_dir.glob("*.pt"):  # last.pt and best.pt: whole and loadable after every kill
            load_checkpoint(checkpoint)
        steps_seen.append(_global_step(last))
        args = ["--resume", str(run_dir)]
    assert steps_seen == sorted(steps_seen) and steps_seen[-1] > steps_seen[0]  # each resume went on, not back
    assert mid_write >= 1, "no kill landed inside a checkpoint write"

    done = subprocess.run([sys.executable, "-m", "unetkit", "train", "--resume", str(run_dir), "--quiet"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    final = load_checkpoint(last)
    assert final["epoch"] == 8 and final["progress"] is None
    assert final["global_step"] == 8 * 4  # 8 images, batch 2: every step trained exactly once despite the kills
    epochs = [row["epoch"] for row in final["history"]]
    assert epochs == list(range(1, 9))
    assert yaml.safe_load((run_dir / "summary.json").read_text())["epochs"] == 8
    assert not list(run_dir.glob(".*.tmp"))
    print(f"\n{KILLS} SIGKILLs survived ({mid_write} inside a checkpoint write); global steps at the kills: "
          f"{steps_seen}")


def _global_step_safe(path: Path) -> int:
    """The step of a checkpoint that may be replaced while we read it (rename is atomic; the read may race)."""
    try:
        return _global_step(path)
    except Exception:
        return -1
