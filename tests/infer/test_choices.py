"""Inference settings chosen on the validation images after training: the binary threshold (best foreground
IoU, ties to the arg-max's 0.5), the smallest object kept, and flips; stored in best.pt and used from there on,
and every printed score is the one `evaluate` then gives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from unetkit.checkpoint import load_checkpoint
from unetkit.config import Config, MaskConfig, config_from_dict, load_config
from unetkit.data.dataset import pair_files
from unetkit.data.masks import MaskCodec
from unetkit.errors import UnetkitError
from unetkit.infer.choices import (
    THRESHOLDS,
    choose_object_size,
    choose_threshold,
    hold_probabilities,
)
from unetkit.infer.evaluate import evaluate
from unetkit.infer.judges import Held, Scored, judge_for, score_held, standard_error
from unetkit.train.run import train


class BrightIsUnsure:
    """A stand-in inference that is right but under-confident: p(foreground) 0.3 on bright pixels, 0.1 else."""

    def segment(self, image: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
        foreground = np.where(image[..., 0] > 0.47, 0.3, 0.1).astype(np.float32)  # (H, W)
        probabilities[1], probabilities[0] = foreground, 1 - foreground
        return (foreground > 0.5).astype(np.uint8)


def test_the_best_threshold_wins_and_ties_go_to_the_one_nearest_one_half() -> None:
    table = {0.3: Scored(0.5), 0.5: Scored(0.7), 0.7: Scored(0.6)}
    assert choose_threshold(table) == (0.5, "threshold 0.5: foreground IoU 0.7000 on the validation images")
    chosen, reason = choose_threshold({0.1: Scored(0.8), 0.4: Scored(0.8), 0.5: Scored(0.2)})
    assert chosen == 0.4 and "against 0.2000 at 0.5" in reason
    assert choose_threshold({0.5: Scored(None)})[0] == 0.5


def test_a_threshold_that_wins_by_less_than_the_noise_of_the_images_gives_way_to_one_nearer_one_half() -> None:
    noisy = {0.5: Scored(0.70, 0.01), 0.6: Scored(0.72, 0.01), 0.7: Scored(0.75, 0.04)}
    chosen, reason = choose_threshold(noisy)  # 0.7 is best, but 0.6 is within its 0.04: 0.6 is nearer 0.5
    assert chosen == 0.6
    assert reason == ("threshold 0.6: foreground IoU 0.7200 on the validation images, within one standard error "
                      "(0.0400) of the best, 0.7500 at 0.7: the cut nearest 0.5 of those")
    sure = {0.5: Scored(0.70, 0.01), 0.6: Scored(0.72, 0.01), 0.7: Scored(0.75, 0.01)}
    assert choose_threshold(sure)[0] == 0.7  # a gain larger than the noise is kept


def test_a_gain_on_every_image_is_kept_though_the_images_scores_spread_more_than_it() -> None:
    """Two settings scored on the same images share the images' spread (an easy slice, a hard one): the noise of
    a gain is the standard error of the per-image differences, not of one setting's scores."""
    easy_and_hard = (0.90, 0.80, 0.70, 0.60, 0.50)
    at_half = Scored(float(np.mean(easy_and_hard)), standard_error(easy_and_hard), easy_and_hard)
    steady = tuple(v + g for v, g in zip(easy_and_hard, (0.011, 0.009, 0.010, 0.012, 0.008), strict=True))
    at_steady = Scored(float(np.mean(steady)), standard_error(steady), steady)
    assert at_steady.value - at_half.value < at_steady.se  # one setting's spread would call the gain noise
    chosen, reason = choose_threshold({0.5: at_half, 0.6: at_steady})
    paired = standard_error([0.011, 0.009, 0.010, 0.012, 0.008])
    assert chosen == 0.6 and reason.endswith(f"(one standard error: {paired:.4f})")
    lucky = tuple(v + g for v, g in zip(easy_and_hard, (0.08, -0.03, -0.02, -0.01, 0.03), strict=True))
    at_lucky = Scored(float(np.mean(lucky)), standard_error(lucky), lucky)  # the same mean gain, by one slice
    assert at_lucky.value == pytest.approx(at_steady.value)
    assert choose_threshold({0.5: at_half, 0.6: at_lucky})[0] == 0.5


def test_the_noise_is_the_standard_error_of_the_images_own_scores() -> None:
    truth = np.zeros((8, 8), np.uint8)
    truth[:, :4] = 1
    exact = np.where(truth == 1, 0.9, 0.1).astype(np.float32)
    half = exact.copy()
    half[:, 4:] = 0.9  # twice the true foreground: IoU 0.5
    held = [Held(np.stack([1 - p, p]), truth) for p in (exact, half)]
    scored = judge_for("pixels", ["background", "foreground"]).score(held, 0.5, 0)
    assert scored.value == pytest.approx(64 / 96)  # pooled as `evaluate` pools: 64 true of 96 predicted pixels
    assert scored.se == pytest.approx(standard_error([1.0, 0.5])) == pytest.approx(0.25)
    assert scored.images == pytest.approx((1.0, 0.5))
    assert standard_error([0.3]) == 0.0 and standard_error([None, 0.3]) == 0.0


def _iou_table(held: list, candidates: tuple[float, ...] = THRESHOLDS) -> dict[float, Scored]:
    judge = judge_for("pixels", ["background", "foreground"])
    return {t: judge.score(held, t, 0) for t in candidates}


def test_scores_of_every_threshold_come_from_one_set_of_probabilities(tiny_dataset: Path) -> None:
    pairs = pair_files(tiny_dataset / "images", tiny_dataset / "masks")
    codec = MaskCodec(MaskConfig(encoding="binary", foreground_value=255), 2)
    table = _iou_table(hold_probabilities(BrightIsUnsure(), pairs, codec, 1), (0.05, 0.1, 0.25, 0.3, 0.5))
    # above 0.1 and below 0.3 the unsure network is exactly right; at 0.05 all is foreground, from 0.3 none is
    iou = {t: scored.value for t, scored in table.items()}
    assert iou[0.1] == iou[0.25] == 1.0 and iou[0.3] == iou[0.5] == 0.0 and 0 < iou[0.05] < 0.5
    assert choose_threshold(table)[0] == 0.25


def test_a_run_chooses_on_validation_stores_in_best_pt_and_evaluate_uses_it(
        tiny_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg: Config = load_config(tiny_config, ["train.choose=[threshold]", "train.epochs=2", "optim.lr=0.01"])
    run = train(cfg, progress=False)
    best = load_checkpoint(run.run_dir / "best.pt")
    chosen = best["config"]["infer"]["threshold"]
    # recomputed here on the validation pairs alone, with best.pt's weights: the same choice
    from unetkit.data.dataset import dataset_pairs
    from unetkit.infer.inference import load_predictor, open_inference, validation_settings

    predictor, saved = load_predictor(run.run_dir / "best.pt", "cpu")
    _, val_pairs = dataset_pairs(saved.data)
    table = _iou_table(hold_probabilities(open_inference(predictor, saved, validation_settings(saved)), val_pairs,
                                          MaskCodec(saved.data.mask, 2), saved.data.channels))
    assert choose_threshold(table)[0] == chosen
    assert f"threshold {chosen}: foreground IoU" in capsys.readouterr().out
    assert json.loads((run.run_dir / "summary.json").read_text())["threshold"] == chosen
    assert yaml.safe_load((run.run_dir / "config.yaml").read_text())["infer"]["threshold"] == chosen
    report = evaluate(run.run_dir / "best.pt", split="val", progress=False)
    # the IoU the run printed for its choice is the one `evaluate` gives the user at that threshold
    assert report["threshold"] == chosen and report["per_class"]["foreground"]["iou"] == table[chosen].value


def test_choosing_a_threshold_needs_a_binary_model_and_the_older_key_still_reads() -> None:
    with pytest.raises(UnetkitError, match="train.choose: threshold is for binary models; data.classes has 3"):
        config_from_dict({"data": {"classes": ["a", "b", "c"]}, "train": {"choose": ["threshold"]}})
    assert config_from_dict({"train": {"choose_threshold": True}}).train.choose == ["threshold"]
    assert config_from_dict({"train": {"choose_threshold": False}}).train.choose == []


class Specks:
    """A stand-in inference: right on the big object, plus isolated false pixels every 8th pixel of row 2."""

    def segment(self, image: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
        foreground = np.where(image[..., 0] > 0.47, 0.9, 0.1).astype(np.float32)
        foreground[2, ::8] = 0.9
        probabilities[1], probabilities[0] = foreground, 1 - foreground
        return (foreground > 0.5).astype(np.uint8)


def test_small_false_objects_are_removed_when_that_raises_the_iou(tmp_path: Path) -> None:
    from conftest import write_tiny_dataset

    root = write_tiny_dataset(tmp_path / "d", size=128)  # sizes up to 1% of an image (163 px) are tried
    pairs = pair_files(root / "images", root / "masks")
    codec = MaskCodec(MaskConfig(encoding="binary", foreground_value=255), 2)
    names = ["background", "foreground"]
    held = hold_probabilities(Specks(), pairs, codec, 1)
    assert score_held(held, 0.5, 0, names)["per_class"]["foreground"]["iou"] < 1.0
    size, reason = choose_object_size(held, 0.5, names)
    assert size > 0 and score_held(held, 0.5, size, names)["per_class"]["foreground"]["iou"] == 1.0
    assert reason.startswith(f"objects under {size} px removed: foreground IoU 1.0000 against")
    exact = hold_probabilities(BrightIsUnsure(), pairs, codec, 1)  # no specks: nothing to remove
    assert choose_object_size(exact, 0.25, names)[0] == 0


def test_every_choice_printed_is_what_evaluate_gives(tiny_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = load_config(tiny_config, ["train.choose=[threshold, min_object, tta]", "train.epochs=2", "optim.lr=0.01"])
    run = train(cfg, progress=False)
    printed = capsys.readouterr().out
    saved = load_checkpoint(run.run_dir / "best.pt")["config"]["infer"]
    report = evaluate(run.run_dir / "best.pt", split="val", progress=False)
    iou = report["per_class"]["foreground"]["iou"]
    assert report["threshold"] == saved["threshold"] and report["tta"] == saved["tta"]
    assert report["min_object_px"] == saved["min_object_px"]
    from unetkit.metrics import headline

    assert f"best.pt after these choices: {headline(report, 'val ')}" in printed
    assert run.chosen_scores is not None and run.chosen_scores["miou"] == report["miou"]
    if saved["tta"] == "flips":
        assert f"TTA flips: foreground IoU {iou:.4f}" in printed
    else:
        assert f"against {iou:.4f} without" in printed
    on_disk = yaml.safe_load((run.run_dir / "config.yaml").read_text())["infer"]
    assert {k: on_disk[k] for k in ("threshold", "min_object_px", "tta")} == {
        k: saved[k] for k in ("threshold", "min_object_px", "tta")}


def test_small_objects_are_removed_in_predict(tiny_checkpoint: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    from unetkit.infer.inference import InferOptions
    from unetkit.infer.predict import predict

    kept = predict(tiny_checkpoint, [tiny_dataset / "images"], tmp_path / "all", progress=False,
                   options=InferOptions(threshold=0.05))  # an untrained network: foreground almost everywhere
    dropped = predict(tiny_checkpoint, [tiny_dataset / "images"], tmp_path / "none", progress=False,
                      options=InferOptions(threshold=0.05, min_object_px=10**6))  # larger than any image
    assert any(np.asarray(Image.open(p)).any() for p in kept)
    assert not any(np.asarray(Image.open(p)).any() for p in dropped)


def _walls_with_gaps() -> list:
    """A boundary map (class 1 = 3 px walls every 32 px) and a network that is sure of the walls except for a
    4 px gap in every wall segment (p 0.35), and half-sure (p 0.35) of a 1 px band beside every wall."""
    size, step = 96, 32
    truth = np.zeros((size, size), np.uint8)
    for k in range(16, size, step):
        truth[k - 1:k + 2] = truth[:, k - 1:k + 2] = 1
    p = np.where(truth == 1, 0.7, 0.1).astype(np.float32)
    for k in range(16, size, step):
        p[k + 2] = np.maximum(p[k + 2], 0.35)  # the band beside each horizontal wall ...
        p[:, k + 2] = np.maximum(p[:, k + 2], 0.35)  # ... and each vertical one
        for gap in range(0, size, step):  # a gap half-way between crossings, through the whole wall
            p[k - 1:k + 2, gap:gap + 4] = p[gap:gap + 4, k - 1:k + 2] = 0.35
    return [Held(np.stack([1 - p, p]), truth)]


def test_a_boundary_map_is_judged_by_its_regions_not_its_pixels() -> None:
    from unetkit.infer.judges import region_error

    held, names = _walls_with_gaps(), ["background", "foreground"]
    pixels, regions = judge_for("pixels", names), judge_for("regions", names)
    by_pixels = choose_threshold({t: pixels.score(held, t, 0) for t in THRESHOLDS}, pixels)[0]
    by_regions, reason = choose_threshold({t: regions.score(held, t, 0) for t in THRESHOLDS}, regions)
    assert by_pixels > 0.35 > by_regions  # IoU drops the gaps with the band; the regions need the gaps closed
    assert region_error(held, by_regions, 0) < region_error(held, by_pixels, 0)
    error = region_error(held, by_regions, 0)
    assert reason.startswith(f"threshold {by_regions}: Rand error of the regions {error:.4f}")


def test_choices_by_regions_run_after_training(tiny_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = load_config(tiny_config, ["train.choose=[threshold, min_object]", "train.choose_by=regions",
                                    "train.epochs=1"])
    run = train(cfg, progress=False)
    printed = capsys.readouterr().out
    assert "Rand error of the regions" in printed and run.chosen_scores is not None
    assert load_checkpoint(run.run_dir / "best.pt")["config"]["infer"]["threshold"] in THRESHOLDS + (0.5,)
