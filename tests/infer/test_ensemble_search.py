"""Weight search on the simplex, scored from confusion matrices, and the `ensemble` command's twin."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SameSize
from PIL import Image

from unetkit.checkpoint import make_checkpoint, out_channels, save_checkpoint
from unetkit.config import InferConfig, MaskConfig
from unetkit.data.dataset import pair_files
from unetkit.data.masks import MaskCodec
from unetkit.errors import UnetkitError
from unetkit.infer.ensemble import load_ensemble
from unetkit.infer.ensemble_search import (
    ensemble,
    format_ensemble_report,
    search_weights,
    simplex_grid,
    weighting_confusions,
)
from unetkit.infer.evaluate import evaluate
from unetkit.models.build import build_model


class Oracle(SameSize):
    """A stand-in network whose probabilities we choose: it reads the true class t from the pixel value
    (100 * t, scaled to [0, 1]) and answers row t of `table`, a (K, K) matrix of class probabilities."""

    def __init__(self, table: list[list[float]]) -> None:
        self.table = torch.tensor(table)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        t = (x[:, 0] * 2.55).round().long()  # (N, h, w) true class
        return self.table[t].permute(0, 3, 1, 2)  # (N, K, h, w)


PERFECT_BUT_UNSURE = Oracle([[0.34, 0.33, 0.33], [0.33, 0.34, 0.33], [0.33, 0.33, 0.34]])  # right by a hair
NEXT_CLASS = Oracle([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])  # always says t + 1
MOSTLY_AFTER_NEXT = Oracle([[0.0, 0.1, 0.9], [0.9, 0.0, 0.1], [0.1, 0.9, 0.0]])  # t + 2, a little t + 1


@pytest.fixture
def oracle_pairs(tmp_path: Path) -> list[tuple[Path, Path]]:
    """One 4x6 image: columns 0-1 class 0, 2-3 class 1, 4-5 class 2; pixel (0, 0) is ignored (raw 9)."""
    classes = np.repeat(np.arange(3), 2)[None].repeat(4, axis=0)  # (4, 6)
    mask = classes.astype(np.uint8)
    mask[0, 0] = 9
    for folder, array in (("images", (classes * 100).astype(np.uint8)), ("masks", mask)):
        (tmp_path / folder).mkdir()
        Image.fromarray(array).save(tmp_path / folder / "x.png")
    return pair_files(tmp_path / "images", tmp_path / "masks")


CODEC = MaskCodec(MaskConfig(encoding="index", ignore_value=9), 3)


def test_simplex_grid() -> None:
    assert simplex_grid(2, 0.5) == [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]
    grid = simplex_grid(3, 0.1)
    assert len(grid) == 66 and all(abs(sum(w) - 1) < 1e-9 for w in grid)
    assert len({tuple(w) for w in grid}) == 66 and [1.0, 0.0, 0.0] in grid and [0.2, 0.1, 0.7] in grid
    assert simplex_grid(1, 0.25) == [[1.0]]
    with pytest.raises(UnetkitError, match="must divide 1"):
        simplex_grid(3, 0.3)


def test_confusions_per_weighting_skip_ignored_pixels(oracle_pairs: list) -> None:
    members = [PERFECT_BUT_UNSURE, NEXT_CLASS]
    weightings = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    counts = weighting_confusions(members, oracle_pairs, CODEC, 1, weightings, InferConfig())
    # 8 pixels per class, minus the ignored one of class 0
    assert counts[0].tolist() == [[7, 0, 0], [0, 8, 0], [0, 0, 8]]
    assert counts[1].tolist() == [[0, 7, 0], [0, 0, 8], [8, 0, 0]]


def test_search_puts_all_weight_on_the_perfect_member(oracle_pairs: list) -> None:
    # Any weight >= 0.1 on another member outvotes the perfect member's 0.01 lead, on every pixel.
    members = [("wrong.pt", NEXT_CLASS), ("perfect.pt", PERFECT_BUT_UNSURE), ("other.pt", MOSTLY_AFTER_NEXT)]
    report = search_weights(members, oracle_pairs, CODEC, 1, grid_step=0.1, infer=InferConfig(tta="flips"),
                            weights=[1, 1, 2])
    assert [m["miou"] for m in report["members"]] == [0.0, 1.0, 0.0]
    assert report["equal_weights_miou"] == 0.0  # t + 1 wins: (0.33 + 1 + 0.1) / 3 > (0.34 + 0 + 0) / 3
    assert report["weights"] == [0.25, 0.25, 0.5] and report["weights_miou"] == 0.0
    assert report["best_weights"] == [0.0, 1.0, 0.0] and report["best_miou"] == 1.0
    assert report["combinations"] == 66 and report["images"] == 1


def _checkpoint(path: Path, seed: int, depth: int = 2) -> Path:
    from unetkit.config import config_from_dict

    cfg = config_from_dict({"data": {"classes": ["background", "foreground"],
                                     "mask": {"encoding": "binary", "foreground_value": 255}},
                            "model": {"depth": depth, "base_channels": 4, "padding": "same"}})
    torch.manual_seed(seed)
    save_checkpoint(make_checkpoint(build_model(cfg.model, 1, out_channels(cfg)), cfg, epoch=0), path)
    return path


def test_ensemble_scores_searches_and_saves(tmp_path: Path, tiny_dataset: Path) -> None:
    a, b = _checkpoint(tmp_path / "a.pt", seed=1), _checkpoint(tmp_path / "b.pt", seed=2, depth=3)
    report = ensemble([a, b], tiny_dataset, search=True, grid_step=0.5, output=tmp_path / "ens.pt",
                              device="cpu", progress=False)
    assert report["combinations"] == 3 and report["images"] == 4
    alone = [evaluate(p, tiny_dataset, output=tmp_path / f"{p.stem}.json", device="cpu", progress=False)["miou"]
             for p in (a, b)]
    assert [m["miou"] for m in report["members"]] == alone  # a one-hot weighting is that member, exactly
    assert report["best_miou"] >= max(alone)  # both one-hot weightings are grid points
    saved = load_ensemble(tmp_path / "ens.pt")
    assert saved["weights"] == report["best_weights"] == report["saved_weights"]
    assert saved["scores"]["best_miou"] == report["best_miou"]
    # the files predict exactly what was scored: the searched weights, and given ones that mix both members
    scored = evaluate(tmp_path / "ens.pt", tiny_dataset, output=tmp_path / "e.json", device="cpu", progress=False)
    assert scored["miou"] == report["best_miou"]
    mixed = ensemble([a, b], tiny_dataset, weights=[1, 3], output=tmp_path / "mix.pt", device="cpu",
                             progress=False)
    assert mixed["saved_weights"] == load_ensemble(tmp_path / "mix.pt")["weights"] == [0.25, 0.75]
    scored = evaluate(tmp_path / "mix.pt", tiny_dataset, output=tmp_path / "e.json", device="cpu", progress=False)
    assert scored["miou"] == mixed["weights_miou"] == mixed["saved_miou"]


def test_ensemble_refuses_bad_requests(tmp_path: Path, tiny_dataset: Path) -> None:
    a = _checkpoint(tmp_path / "a.pt", seed=1)
    with pytest.raises(UnetkitError, match="not both"):
        ensemble([a], tiny_dataset, weights=[1.0], search=True)
    with pytest.raises(UnetkitError, match="one of the member checkpoints"):
        ensemble([a], tiny_dataset, output=a)
    with pytest.raises(UnetkitError, match="give --data"):
        ensemble([a], output=tmp_path / "e.pt", device="cpu")


def test_format_ensemble_report() -> None:
    report = {"members": [{"checkpoint": "runs/a/best.pt", "miou": 0.5}, {"checkpoint": "b.pt", "miou": None}],
              "equal_weights_miou": 0.625, "best_weights": [0.7, 0.3], "best_miou": 0.75, "grid_step": 0.1,
              "combinations": 11, "images": 2, "ensemble": "ens.pt", "saved_weights": [0.7, 0.3]}
    assert format_ensemble_report(report).splitlines() == [
        "member                        mIoU",
        "runs/a/best.pt              0.5000",
        "b.pt                             -",
        "equal weights               0.6250",
        "searched weights 0.7, 0.3   0.7500",
        "(grid step 0.1: 11 weightings tried on 2 image(s))",
        "ensemble written to ens.pt with weights 0.7, 0.3",
    ]
