"""`unetkit plan` and `unetkit train DATA`: rules that follow the fingerprint and the measured speed, a YAML that
reloads to the same config, and a planned run that trains and makes its choices on validation only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import write_tiny_dataset
from PIL import Image

from unetkit.checkpoint import load_checkpoint
from unetkit.cli import main
from unetkit.config import load_config
from unetkit.data.dataset import dataset_pairs
from unetkit.errors import UnetkitError
from unetkit.train import plan_budget, plan_rules
from unetkit.train.plan import locate, make_plan


@pytest.fixture
def fast_timing(monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    """Replace the machine timings with fixed ones: seconds per step = `per_channel` * base channels."""
    speed = {"per_channel": 0.001, "load": 0.001, "per_image": 0.01, "bf16": 0.5}  # bf16: its step's factor

    def step(cfg, device, steps=3, give_up=None):  # noqa: ANN001, ANN202 - the signature of time_training_step
        bonus = speed.get(cfg.train.precision, 1.0)
        seconds = speed["per_channel"] * cfg.model.base_channels * bonus
        return float("inf") if give_up is not None and seconds > give_up else seconds

    monkeypatch.setattr(plan_budget, "time_training_step", step)
    monkeypatch.setattr(plan_budget, "cpu_runs_bf16", lambda: True)  # these timings stand for any CPU
    monkeypatch.setattr(plan_budget, "time_loading", lambda cfg, pairs, codec: speed["load"])
    monkeypatch.setattr(plan_budget, "time_validation", lambda cfg, device, pairs, codec: speed["per_image"])
    return speed


def _silent(_: str) -> None:
    pass


def test_a_plan_reloads_from_its_yaml_to_the_same_config(tmp_path: Path, fast_timing: dict) -> None:
    write_tiny_dataset(tmp_path / "d" / "train")
    plan = make_plan(tmp_path / "d", 5, "cpu", say=_silent)
    path = tmp_path / "plan.yaml"
    path.write_text(plan.yaml())
    assert load_config(path).model_dump() == plan.config().model_dump()
    text = path.read_text()
    for choice in plan.choices:  # every value is written with its reason
        assert choice.reason and f"# {choice.reason}" in text, choice.key


def test_the_width_is_the_widest_that_gets_enough_steps(tmp_path: Path, fast_timing: dict) -> None:
    write_tiny_dataset(tmp_path / "d" / "train")
    fast = make_plan(tmp_path / "d", 10, "cpu", say=_silent)
    assert fast.value("model.base_channels") == max(plan_budget.WIDTHS)
    assert fast.value("train.precision") == "bf16"  # measured twice as fast here
    fast_timing["per_channel"] = 0.05  # fifty times slower steps: fewer steps, so a narrower network
    slow = make_plan(tmp_path / "d", 10, "cpu", say=_silent)
    assert slow.value("model.base_channels") < fast.value("model.base_channels")
    assert "steps by width" in next(c.reason for c in slow.choices if c.key == "model.base_channels")
    assert slow.value("train.max_minutes") <= 10


def test_a_format_far_slower_in_its_warm_up_is_not_timed_further(tmp_path: Path, fast_timing: dict) -> None:
    """bf16 on a CPU without bf16 units: its one warm-up step is over GIVE_UP times the fastest step so far, so the
    plan stops timing it, keeps fp32 and says so."""
    write_tiny_dataset(tmp_path / "d" / "train")
    fast_timing["bf16"] = 15.0
    plan = make_plan(tmp_path / "d", 10, "cpu", say=_silent)
    assert plan.value("train.precision") == "fp32"
    reason = next(c.reason for c in plan.choices if c.key == "train.precision")
    assert f"bf16 NHWC stopped (its warm-up step alone took over {plan_budget.GIVE_UP:g}x)" in reason


def test_bf16_is_not_timed_on_a_cpu_without_bf16_kernels(tmp_path: Path, fast_timing: dict,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Where oneDNN has no bf16 kernels (an AVX2-only CPU) bf16 is emulated: the plan does not spend a warm-up
    step on it, even where these fake timings would have made it the fastest, and says why."""
    write_tiny_dataset(tmp_path / "d" / "train")
    monkeypatch.setattr(plan_budget, "cpu_runs_bf16", lambda: False)
    plan = make_plan(tmp_path / "d", 10, "cpu", say=_silent)
    assert plan.value("train.precision") == "fp32"
    reason = next(c.reason for c in plan.choices if c.key == "train.precision")
    assert "bf16 not timed: this CPU has no bf16 kernels" in reason and "bf16 NHWC" not in reason


def test_timing_a_step_stops_after_a_warm_up_slower_than_give_up() -> None:
    """The real timing: no bound gives a finite median step; a bound no step can meet stops after the warm-up."""
    import torch

    from unetkit.config import config_from_dict
    from unetkit.train.measure import time_training_step

    cfg = config_from_dict({"data": {"root": ".", "crop_size": 32, "batch_size": 2, "classes": ["a", "b"]},
                            "model": {"base_channels": 4, "depth": 2}}, "test")
    assert 0 < time_training_step(cfg, torch.device("cpu"), steps=2) < float("inf")
    assert time_training_step(cfg, torch.device("cpu"), steps=2, give_up=0.0) == float("inf")


def test_sparse_objects_get_foreground_crops_and_mixed_gains_per_image_stretching(tmp_path: Path,
                                                                                   fast_timing: dict) -> None:
    rng = np.random.default_rng(0)
    root = tmp_path / "d"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i, gain in enumerate([0.3, 0.6, 1.0, 1.4, 0.5, 1.2]):
        mask = np.zeros((64, 64), np.uint8)
        top, left = rng.integers(0, 56, size=2)
        mask[top:top + 6, left:left + 6] = 255  # 36 of 4096 pixels: under 1%
        image = np.where(mask > 0, 200, 60) * gain + rng.normal(0, 5, mask.shape)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    plan = make_plan(root, 5, "cpu", say=_silent)  # images/ and masks/ directly in DATA also work
    assert plan.value("data.train_images") == "images"
    assert plan.value("data.foreground_crops") == plan_rules.OVERSAMPLE
    assert plan.value("data.normalize") == "image"
    assert plan.value("model.depth") == 3  # ~7 px objects: the shallowest depth is enough


def test_val_and_test_folders_are_used_as_given(tmp_path: Path, fast_timing: dict) -> None:
    for split in ("train", "val", "test"):
        write_tiny_dataset(tmp_path / "d" / split)
    cfg = make_plan(tmp_path / "d", 5, "cpu", say=_silent).config()
    assert (cfg.data.val_images, cfg.data.test_images) == ("val/images", "test/images")
    assert cfg.train.choose == ["threshold", "min_object", "tta"]  # binary: all three, on val/


def test_a_folder_without_images_and_masks_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "d" / "photos").mkdir(parents=True)
    with pytest.raises(UnetkitError, match="expected train/images and train/masks"):
        locate(tmp_path / "d")
    assert main(["plan", str(tmp_path / "d")]) == 2


def test_unetkit_plan_writes_a_config_that_trains(tmp_path: Path, fast_timing: dict,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    write_tiny_dataset(tmp_path / "d" / "train")
    assert main(["plan", str(tmp_path / "d"), "--minutes", "3", "--device", "cpu", "-o",
                 str(tmp_path / "plan.yaml")]) == 0
    assert "unetkit train" in capsys.readouterr().out
    cfg = load_config(tmp_path / "plan.yaml")
    assert cfg.train.max_minutes is not None and cfg.train.max_minutes <= 3


def test_train_data_plans_trains_and_chooses_on_validation(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    """The real command with real timings, on a budget of half a minute."""
    write_tiny_dataset(tmp_path / "d" / "train", count=6)
    assert main(["train", str(tmp_path / "d"), "--minutes", "0.5", "-q", "--device", "cpu",
                 "--set", f"train.output_dir={tmp_path / 'runs'}", "--set", "train.run_name=planned"]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "runs" / "planned"
    assert "model:" in out and "# the widest whose steps" in out  # the plan is shown before training
    assert (run / "plan.yaml").is_file() and (run / "best.pt").is_file()
    saved = load_checkpoint(run / "best.pt")["config"]
    assert saved["data"]["root"] == str((tmp_path / "d").resolve())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["threshold"] == saved["infer"]["threshold"] and summary["tta"] == saved["infer"]["tta"]
    assert yaml.safe_load((run / "config.yaml").read_text())["infer"]["min_object_px"] == \
        saved["infer"]["min_object_px"]
    page = (run / "report.html").read_text()  # the finished run's page says what was chosen, and its score
    assert "best.pt with these settings" in page and f"val mIoU {summary['after_choices']['miou']:.4f}" in page
    # each choice printed with its reason (on a busy machine judging flips may not fit half a minute)
    assert "threshold" in out and ("TTA" in out or "flips not judged" in out)


def test_a_slow_validation_split_is_cut_but_a_val_folder_is_kept(tmp_path: Path, fast_timing: dict) -> None:
    write_tiny_dataset(tmp_path / "d" / "train", count=150)  # 30 images held out by the default 20%
    fast_timing["per_image"] = 0.4  # 12 s per validation of 30 images, over 10% of a minute for two
    plan = make_plan(tmp_path / "d", 1, "cpu", say=_silent)
    assert plan.value("data.val_fraction") == pytest.approx(plan_budget.MIN_VAL / 150, abs=1e-3)
    write_tiny_dataset(tmp_path / "d" / "val", count=30)
    assert "data.val_fraction" not in {c.key for c in make_plan(tmp_path / "d", 1, "cpu", say=_silent).choices}


def _shapes(root: Path, draw) -> None:  # noqa: ANN001 - draw(mask) paints the objects
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        mask = np.zeros((600, 600), np.uint8)
        draw(mask, rng)
        image = np.where(mask > 0, 190, 60) + rng.integers(-10, 11, mask.shape)
        Image.fromarray(image.astype(np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")


def test_large_thick_objects_are_trained_at_a_lower_resolution_thin_ones_are_not(tmp_path: Path,
                                                                                  fast_timing: dict) -> None:
    yy, xx = np.mgrid[:600, :600]

    def disc(mask: np.ndarray, rng: np.random.Generator) -> None:  # one object of ~400 px diameter
        mask[(yy - 300) ** 2 + (xx - 300) ** 2 <= 200 ** 2] = 255

    _shapes(tmp_path / "disc", disc)
    _shapes(tmp_path / "grid", _grid)
    large = make_plan(tmp_path / "disc", 5, "cpu", say=_silent)
    assert large.value("data.scale") == pytest.approx(128 / 401, abs=0.01)  # the disc fills half a 256 crop
    assert large.value("data.crop_size") <= round(600 * large.value("data.scale"))
    grid = make_plan(tmp_path / "grid", 5, "cpu", say=_silent)
    assert grid.value("data.scale") == 1.0
    # the grid is a boundary map: its choices are judged by the regions; a disc's by its pixels
    assert grid.value("train.choose_by") == "regions"
    assert "train.choose_by" not in {c.key for c in large.choices}


def test_a_thin_class_holds_the_resolution_only_when_the_budget_shows_it_enough(tmp_path: Path,
                                                                                  fast_timing: dict) -> None:
    """A large disc (class 1) would be trained at a lower resolution, but 2 px lines (class 2, ~1% of the
    pixels) would vanish there: with many steps they hold full resolution; with few, the lines are seen too
    little to be learnt at all and the disc decides."""
    yy, xx = np.mgrid[:600, :600]
    root = tmp_path / "d"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(5):
        mask = np.zeros((600, 600), np.uint8)
        mask[(yy - 300) ** 2 + (xx - 300) ** 2 <= 200 ** 2] = 1
        mask[100 + 10 * i:102 + 10 * i] = mask[500 - 10 * i:502 - 10 * i] = mask[:, 50:52] = 2
        image = np.array([40, 150, 250], np.uint8)[mask]
        Image.fromarray(image).save(root / "images" / f"{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    many = make_plan(root, 5, "cpu", say=_silent)
    assert many.value("data.scale") == 1.0
    fast_timing["per_channel"] = 2.0  # 16 s steps: ~17 steps in the budget
    few = make_plan(root, 5, "cpu", say=_silent)
    assert plan_rules.MIN_SCALE <= few.value("data.scale") < 0.4  # the disc (~400 px) fills half a 256 crop
    reason = next(c.reason for c in few.choices if c.key == "data.scale")
    assert "class_2 ~2 px thick" in reason and "do not hold it up" in reason
    assert few.value("data.crop_size") <= round(600 * few.value("data.scale"))  # the shape follows the new scale


def test_an_instances_folder_plans_an_instance_model(tmp_path: Path, fast_timing: dict) -> None:
    from unetkit.data.touching import make_touching_dataset

    make_touching_dataset(tmp_path / "d" / "train", count=10)
    plan = make_plan(tmp_path / "d", 5, "cpu", say=_silent)
    assert plan.value("model.task") == "instances" and plan.value("data.train_masks") == "train/instances"
    assert plan.value("data.classes") == ["background", "interior", "boundary"]
    assert plan.value("train.choose")[:2] == ["threshold", "min_object"]  # the seed threshold and object size
    assert plan.config().data.mask.encoding == "instances"
    import shutil

    shutil.rmtree(tmp_path / "d" / "train" / "masks")  # instance labels alone are enough
    assert make_plan(tmp_path / "d", 5, "cpu", say=_silent).value("data.train_masks") == "train/instances"


def test_growing_objects_after_training_is_taken_from_the_training_time(tmp_path: Path, fast_timing: dict,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from unetkit.data.touching import make_touching_dataset
    from unetkit.infer.choices import OBJECT_SIZES, THRESHOLDS

    make_touching_dataset(tmp_path / "d" / "train", count=10)
    minutes = {}
    for per_image in (0.0, 1.0):  # seconds to grow and score one validation image's objects
        monkeypatch.setattr(plan_budget, "time_objects", lambda pairs, codec, s=per_image: s)
        plan = make_plan(tmp_path / "d", 5, "cpu", say=_silent)
        minutes[per_image] = plan.value("train.max_minutes")
        val_images = len(plan.config().data.val_files or []) or round(10 * plan.config().data.val_fraction)
    candidates = len(THRESHOLDS) + len(OBJECT_SIZES) + 2  # seed thresholds, object sizes, then with flips
    assert plan.object_seconds == pytest.approx(val_images * 1.0)
    assert 60 * (minutes[0.0] - minutes[1.0]) == pytest.approx(candidates * val_images * 1.0, abs=1.0)


def _grid(mask: np.ndarray, rng: np.random.Generator) -> None:  # a 3 px wide boundary network: cells between
    mask[:, ::60] = mask[:, 1::60] = mask[:, 2::60] = 255
    mask[::60] = mask[1::60] = mask[2::60] = 255


def test_closing_a_boundary_maps_gaps_after_training_is_taken_from_the_training_time(
        tmp_path: Path, fast_timing: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every seed level's watershed, and the flipped probabilities' at the chosen level, is timed in advance."""
    from unetkit.infer.gaps import SEED_LEVELS

    _shapes(tmp_path / "grid", _grid)
    minutes = {}
    for per_image in (0.0, 1.0):  # seconds to close one validation image's gaps
        monkeypatch.setattr(plan_budget, "time_gap_lines", lambda pairs, codec, s=per_image: s)
        plan = make_plan(tmp_path / "grid", 5, "cpu", say=_silent)
        minutes[per_image] = plan.value("train.max_minutes")
    assert plan.value("train.choose")[0] == "gaps"
    val_images = len(dataset_pairs(plan.config().data)[1])  # four bands: 4 images of 600 px are few
    assert plan.gap_seconds == pytest.approx(val_images * 1.0)
    assert 60 * (minutes[0.0] - minutes[1.0]) == pytest.approx((len(SEED_LEVELS) + 1) * val_images, abs=1.0)


def test_the_minutes_count_from_the_start_of_the_command(tmp_path: Path, fast_timing: dict) -> None:
    """What happened before planning (importing torch takes seconds) is taken from the training time."""
    import time

    write_tiny_dataset(tmp_path / "d" / "train")
    now = make_plan(tmp_path / "d", 5, "cpu", say=_silent).value("train.max_minutes")
    earlier = make_plan(tmp_path / "d", 5, "cpu", say=_silent, began=time.perf_counter() - 30)
    assert 60 * (now - earlier.value("train.max_minutes")) == pytest.approx(30, abs=1.0)


def test_few_large_images_are_validated_on_a_band_of_each_many_or_small_ones_whole(tmp_path: Path,
                                                                                  fast_timing: dict) -> None:
    """4 images of 600 px: one held out whole would give the choices one image to compare on; a band of each
    gives four, and all four are trained on. 64 px images have no band to spare (their rest would not fill a
    crop of the cap), and 30 images give six whole ones."""
    yy, xx = np.mgrid[:600, :600]
    _shapes(tmp_path / "few", lambda mask, rng: mask.__setitem__((yy - 300) ** 2 + (xx - 200) ** 2 <= 60 ** 2, 255))
    few = make_plan(tmp_path / "few", 5, "cpu", say=_silent)
    assert few.value("data.val_split") == "bands" and few.value("data.val_fraction") == plan_rules.VAL_SHARE
    reason = next(c.reason for c in few.choices if c.key == "data.val_split")
    assert "all 4 are trained on" in reason and "1 of 4 images" in reason
    assert few.config().data.val_split == "bands"
    write_tiny_dataset(tmp_path / "small" / "train", count=4)
    write_tiny_dataset(tmp_path / "many" / "train", count=30, size=330)
    for name in ("small", "many"):
        plan = make_plan(tmp_path / name, 5, "cpu", say=_silent)
        assert "data.val_split" not in {c.key for c in plan.choices}, name
        assert plan.config().data.val_split == "images"
