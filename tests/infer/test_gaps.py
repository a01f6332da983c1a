"""Closing a boundary map's gaps with a seeded watershed: a gap between two sure regions becomes boundary,
the choice is made on validation by the Rand error of the regions, and `Inference` writes what was judged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SameSize

from unetkit.config import DataConfig, InferConfig, config_from_dict
from unetkit.errors import UnetkitError
from unetkit.infer.choices import choose_seeds, choose_threshold
from unetkit.infer.gaps import close_gaps, closes
from unetkit.infer.inference import Inference
from unetkit.infer.judges import Held, judge_for, predicted, region_error


def _two_cells_with_a_gap() -> tuple[np.ndarray, np.ndarray]:
    """(32, 32) truth: a 2 px wall down the middle splits two cells; p(wall) 0.9 on it but 0.3 over rows
    12-19, a gap a threshold of 0.5 leaves open, and 0.05 inside the cells."""
    truth = np.zeros((32, 32), np.uint8)
    truth[:, 15:17] = 1
    p = np.where(truth == 1, 0.9, 0.05).astype(np.float32)
    p[12:20, 15:17] = 0.3
    return truth, p


def test_a_gap_between_two_sure_regions_becomes_boundary_and_nothing_is_removed() -> None:
    truth, p = _two_cells_with_a_gap()
    index = (p > 0.5).astype(np.uint8)
    closed = close_gaps(index, p, 0.2)
    assert closed[12:20, 15:17].any(axis=1).all()  # every row of the gap now holds a boundary pixel
    assert (closed >= index).all()  # no boundary pixel is lost
    from skimage.measure import label

    assert label(index == 0, connectivity=1).max() == 1 and label(closed == 0, connectivity=1).max() == 2
    assert closes(32, 32, 0.2) and not closes(32, 32, None)


def test_the_choice_closes_gaps_only_when_the_regions_gain_and_inference_writes_the_judged_map() -> None:
    truth, p = _two_cells_with_a_gap()
    held = [Held(np.stack([1 - p, p]), truth)]
    judge = judge_for("regions", ["cell", "wall"])
    seeds, reason = choose_seeds(held, 0.5, judge)
    assert seeds is not None and region_error(held, 0.5, 0, seeds) < region_error(held, 0.5, 0)
    assert reason.startswith(f"boundary gaps closed by a watershed from regions seeded at p(boundary) < {seeds}")
    threshold = choose_threshold({t: judge.score(held, t, 0, seeds) for t in (0.4, 0.5, 0.6)}, judge)[0]

    class Known(SameSize):
        """A stand-in network giving the probabilities above, whatever the input."""

        def __call__(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, 32, 32) -> (N, 2, 32, 32)
            return torch.from_numpy(np.stack([1 - p, p]))[None].expand(x.shape[0], -1, -1, -1)

    data = DataConfig(classes=["cell", "wall"], channels=1)
    infer = InferConfig(threshold=threshold, boundary_seeds=seeds, tile=64)
    written = Inference(Known(), data, infer).segment(np.zeros((32, 32, 1), np.float32))
    assert np.array_equal(written, predicted(held[0], threshold, 0, seeds))  # one path: judged = written
    plain = Inference(Known(), data, infer.model_copy(update={"boundary_seeds": None}))
    assert not np.array_equal(plain.segment(np.zeros((32, 32, 1), np.float32)), written)


def test_no_gaps_no_closing() -> None:
    truth, p = _two_cells_with_a_gap()
    p[12:20, 15:17] = 0.9  # the wall is whole: the threshold alone keeps the cells apart
    held = [Held(np.stack([1 - p, p]), truth)]
    seeds, reason = choose_seeds(held, 0.5, judge_for("regions", ["cell", "wall"]))
    assert seeds is None and reason.startswith("boundary gaps left as thresholded")


def test_boundary_seeds_are_for_binary_maps() -> None:
    with pytest.raises(UnetkitError, match="infer.boundary_seeds is for binary boundary maps"):
        config_from_dict({"data": {"classes": ["a", "b", "c"]}, "infer": {"boundary_seeds": 0.2}})


def test_the_choices_run_one_watershed_per_image_and_seed_level(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lines depend on the probabilities and the seed level only: scoring every threshold and object size
    at a level reuses them (a watershed costs ~0.1 s on a 512x512 image), and the scores stay those of a fresh
    watershed."""
    from unetkit.infer import judges

    truth, p = _two_cells_with_a_gap()
    fresh = [region_error([Held(np.stack([1 - p, p]), truth)], t, 0, 0.2) for t in (0.4, 0.5, 0.6)]
    calls, watershed = [], judges.gap_lines
    monkeypatch.setattr(judges, "gap_lines", lambda b, s: calls.append(s) or watershed(b, s))
    held = [Held(np.stack([1 - p, p]), truth), Held(np.stack([1 - p, p]), truth)]
    cached = [region_error(held[:1], t, 0, 0.2) for t in (0.4, 0.5, 0.6)]
    for size in (0, 16, 64):
        region_error(held, 0.5, size, 0.2)
    region_error(held, 0.5, 0, 0.1)
    assert cached == fresh
    assert sorted(calls) == [0.1, 0.1, 0.2, 0.2]  # two images, two levels

