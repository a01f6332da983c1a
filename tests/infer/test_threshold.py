"""The binary threshold chosen on the validation images: the best foreground IoU (ties go to the arg-max's
0.5), computed from one pass of probabilities, stored in best.pt and used from there on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from unetkit.checkpoint import load_checkpoint
from unetkit.config import Config, MaskConfig, config_from_dict, load_config
from unetkit.data.dataset import pair_files
from unetkit.data.masks import MaskCodec
from unetkit.errors import UnetkitError
from unetkit.infer.evaluate import evaluate
from unetkit.infer.threshold import choose_threshold, threshold_scores
from unetkit.train.run import train


class BrightIsUnsure:
    """A stand-in inference that is right but under-confident: p(foreground) 0.3 on bright pixels, 0.1 else."""

    def segment(self, image: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
        foreground = np.where(image[..., 0] > 0.47, 0.3, 0.1).astype(np.float32)  # (H, W)
        probabilities[1], probabilities[0] = foreground, 1 - foreground
        return (foreground > 0.5).astype(np.uint8)


def test_the_best_threshold_wins_and_ties_go_to_the_one_nearest_one_half() -> None:
    assert choose_threshold({0.3: 0.5, 0.5: 0.7, 0.7: 0.6}) == (0.5, "threshold 0.5: foreground IoU 0.7000 on the "
                                                                    "validation images")
    chosen, reason = choose_threshold({0.1: 0.8, 0.4: 0.8, 0.5: 0.2})
    assert chosen == 0.4 and reason.endswith("against 0.2000 at 0.5")
    assert choose_threshold({0.5: None})[0] == 0.5


def test_scores_of_every_threshold_come_from_one_set_of_probabilities(tiny_dataset: Path) -> None:
    pairs = pair_files(tiny_dataset / "images", tiny_dataset / "masks")
    codec = MaskCodec(MaskConfig(encoding="binary", foreground_value=255), 2)
    table = threshold_scores(BrightIsUnsure(), pairs, codec, 1, candidates=(0.05, 0.1, 0.25, 0.3, 0.5))
    # above 0.1 and below 0.3 the unsure network is exactly right; at 0.05 all is foreground, from 0.3 none is
    assert table[0.1] == table[0.25] == 1.0 and table[0.3] == table[0.5] == 0.0 and 0 < table[0.05] < 0.5
    assert choose_threshold(table)[0] == 0.25


def test_a_run_chooses_on_validation_stores_in_best_pt_and_evaluate_uses_it(
        tiny_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg: Config = load_config(tiny_config, ["train.choose_threshold=true", "train.epochs=2", "optim.lr=0.01"])
    run = train(cfg, progress=False)
    best = load_checkpoint(run.run_dir / "best.pt")
    chosen = best["config"]["infer"]["threshold"]
    # recomputed here on the validation pairs alone, with best.pt's weights: the same choice
    from unetkit.data.dataset import dataset_pairs
    from unetkit.infer.inference import load_predictor, open_inference, validation_settings

    predictor, saved = load_predictor(run.run_dir / "best.pt", "cpu")
    _, val_pairs = dataset_pairs(saved.data)
    table = threshold_scores(open_inference(predictor, saved, validation_settings(saved)), val_pairs,
                             MaskCodec(saved.data.mask, 2), saved.data.channels)
    assert choose_threshold(table)[0] == chosen
    assert f"threshold {chosen}: foreground IoU" in capsys.readouterr().out
    assert json.loads((run.run_dir / "summary.json").read_text())["threshold"] == chosen
    assert yaml.safe_load((run.run_dir / "config.yaml").read_text())["infer"]["threshold"] == chosen
    report = evaluate(run.run_dir / "best.pt", split="val", progress=False)
    # the IoU the run printed for its choice is the one `evaluate` gives the user at that threshold
    assert report["threshold"] == chosen and report["per_class"]["foreground"]["iou"] == table[chosen]


def test_choosing_a_threshold_needs_a_binary_model() -> None:
    with pytest.raises(UnetkitError, match="train.choose_threshold is for binary models; data.classes has 3"):
        config_from_dict({"data": {"classes": ["a", "b", "c"]}, "train": {"choose_threshold": True}})
