"""Ensembles: per-member normalization, exact weighted sums, shared geometry, the ensemble file, and
predict / evaluate reading that file in place of a checkpoint."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from unetkit.checkpoint import (
    load_checkpoint,
    make_checkpoint,
    model_from_checkpoint,
    out_channels,
    save_checkpoint,
)
from unetkit.config import config_from_dict
from unetkit.data.io import read_image
from unetkit.errors import UnetkitError
from unetkit.infer.ensemble import Ensemble, Normalized, ensemble_from_file, load_ensemble, load_members, save_ensemble
from unetkit.infer.evaluate import evaluate
from unetkit.infer.predict import predict
from unetkit.infer.predictor import Predictor, predict_whole
from unetkit.models.build import build_model

CPU = torch.device("cpu")
GRAY = {"classes": ["a", "b", "c"], "mask": {"encoding": "gray_values", "values": [10, 20, 30]}}


def _checkpoint(path: Path, data: dict[str, Any] | None = None, seed: int = 0, **model: Any) -> Path:
    """An untrained checkpoint (with training state, as a run writes it) of a small U-Net."""
    cfg = config_from_dict({"data": {**GRAY, **(data or {})},
                            "model": {"depth": 2, "base_channels": 4, "padding": "same", **model}})
    torch.manual_seed(seed)
    net = build_model(cfg.model, cfg.data.channels, out_channels(cfg))
    save_checkpoint(make_checkpoint(net, cfg, optimizer={"lr": 1.0}, history=[{"epoch": 1}], epoch=1), path)
    return path


def _predictor(path: Path) -> Predictor:
    return Predictor(model_from_checkpoint(load_checkpoint(path))[0], CPU)


def _ensemble(*paths: Path, weights: list[float]) -> Ensemble:
    members, _ = load_members([load_checkpoint(p) for p in paths], [str(p) for p in paths], CPU)
    return Ensemble(members, weights, [str(p) for p in paths])


def test_normalized_applies_mean_and_std_per_channel() -> None:
    x = torch.tensor([[[[1.0, 0.0]], [[0.75, 0.25]], [[1.0, 0.5]]]])  # (1, 3, 1, 2)
    out = Normalized(lambda t: t, [0.5, 0.25, 0.0], [0.5, 0.25, 2.0])(x)
    assert torch.equal(out, torch.tensor([[[[1.0, -1.0]], [[2.0, 0.0]], [[0.5, 0.25]]]]))


def test_one_member_with_weight_one_is_that_member(tmp_path: Path) -> None:
    path = _checkpoint(tmp_path / "a.pt", {"mean": [0.5], "std": [0.25]})
    ensemble = _ensemble(path, weights=[1.0])
    x = torch.rand(2, 1, 16, 12)
    assert torch.equal(ensemble(x), _predictor(path)((x - 0.5) / 0.25))
    assert (ensemble.margin, ensemble.stride, ensemble.input_size_for(13)) == (0, 4, 16)


def test_two_members_give_the_weighted_sum(tmp_path: Path) -> None:
    a, b = _checkpoint(tmp_path / "a.pt", seed=1), _checkpoint(tmp_path / "b.pt", seed=2)
    ensemble = _ensemble(a, b, weights=[1.0, 3.0])  # normalized to 0.25, 0.75
    assert ensemble.weights == [0.25, 0.75]
    x = torch.rand(1, 1, 8, 8)
    pa, pb = _predictor(a)((x - 0.5) / 0.25), _predictor(b)((x - 0.5) / 0.25)
    assert not torch.allclose(pa, pb)
    assert torch.equal(ensemble(x), pa * 0.25 + pb * 0.75)


def test_each_member_sees_its_own_normalization(tmp_path: Path) -> None:
    # same weights (seed), different data.mean: only the normalization tells the members apart
    a = _checkpoint(tmp_path / "a.pt", {"mean": [0.5], "std": [0.25]})
    b = _checkpoint(tmp_path / "b.pt", {"mean": [0.0], "std": [0.25]})
    x = torch.rand(1, 1, 8, 8)
    net = _predictor(a)
    only_a, only_b = _ensemble(a, b, weights=[1, 0])(x), _ensemble(a, b, weights=[0, 1])(x)
    assert torch.equal(only_a, net((x - 0.5) / 0.25))
    assert torch.equal(only_b, net(x / 0.25))
    assert not torch.allclose(only_a, only_b)


def test_members_must_agree_on_classes_and_channels(tmp_path: Path) -> None:
    a = _checkpoint(tmp_path / "a.pt")
    other_classes = _checkpoint(tmp_path / "b.pt", {"classes": ["a", "c", "b"]})
    with pytest.raises(UnetkitError, match=r"b\.pt: classes \['a', 'c', 'b'\] differ"):
        _ensemble(a, other_classes, weights=[1, 1])
    rgb = _checkpoint(tmp_path / "rgb.pt", {"channels": 3})
    with pytest.raises(UnetkitError, match=r"rgb\.pt: reads images with 3 channel"):
        _ensemble(a, rgb, weights=[1, 1])


def test_padded_members_share_the_lcm_of_their_strides(tmp_path: Path) -> None:
    ensemble = _ensemble(_checkpoint(tmp_path / "d2.pt"), _checkpoint(tmp_path / "d3.pt", depth=3), weights=[1, 1])
    assert (ensemble.margin, ensemble.stride) == (0, 8)
    assert ensemble.input_size_for(30) == 32 and ensemble.output_size(40) == 40
    assert ensemble.is_valid_input(36) is False  # fine for depth 2 (36 = 9 * 4), not for depth 3
    with pytest.raises(UnetkitError, match="multiple of 8"):
        ensemble.output_size(36)


def test_padded_and_unpadded_members_do_not_mix(tmp_path: Path) -> None:
    same, valid = _checkpoint(tmp_path / "same.pt"), _checkpoint(tmp_path / "valid.pt", padding="valid")
    with pytest.raises(UnetkitError, match=r"valid\.pt: its network crops 20 px.*'same'"):
        _ensemble(same, valid, weights=[1, 1])


def test_weights_are_checked(tmp_path: Path) -> None:
    a = _checkpoint(tmp_path / "a.pt")
    for weights, message in (([1, 1], "2 weight"), ([-1], "non-negative"), ([0], "all weights are 0")):
        with pytest.raises(UnetkitError, match=message):
            _ensemble(a, weights=weights)


def test_ensemble_file_round_trip(tmp_path: Path) -> None:
    a, b = _checkpoint(tmp_path / "a.pt", seed=1), _checkpoint(tmp_path / "b.pt", {"mean": [0.2]}, seed=2)
    save_ensemble(tmp_path / "ens.pt", [a, b], [1.0, 3.0], scores={"best_miou": 0.5})
    contents = load_ensemble(tmp_path / "ens.pt")
    assert contents["weights"] == [0.25, 0.75] and contents["scores"] == {"best_miou": 0.5}
    assert contents["sources"] == [str(a), str(b)]
    assert "optimizer" not in contents["members"][0] and "history" not in contents["members"][1]
    assert contents["members"][0]["epoch"] == 1
    ensemble, cfg = ensemble_from_file(tmp_path / "ens.pt", CPU)
    assert (cfg.data.mean, cfg.data.std, cfg.data.classes) == ([0.0], [1.0], ["a", "b", "c"])
    x = torch.rand(1, 1, 12, 8)
    assert torch.equal(ensemble(x), _ensemble(a, b, weights=[1, 3])(x))


def test_foreign_files_are_refused(tmp_path: Path) -> None:
    checkpoint = _checkpoint(tmp_path / "a.pt")
    (tmp_path / "notes.pt").write_text("not a torch file")
    torch.save({"weights": [1.0]}, tmp_path / "other.pt")
    for name, message in (("notes.pt", "cannot load it"), ("other.pt", "no 'unetkit-ensemble' marker"),
                          ("a.pt", "no 'unetkit-ensemble' marker"), ("missing.pt", "does not exist")):
        with pytest.raises(UnetkitError, match=message):
            load_ensemble(tmp_path / name)
    save_ensemble(tmp_path / "ens.pt", [checkpoint], [1.0])
    contents = torch.load(tmp_path / "ens.pt", weights_only=True)
    torch.save({**contents, "weights": [1.0, 2.0]}, tmp_path / "bad_weights.pt")
    with pytest.raises(UnetkitError, match="2 weight.*1 member"):
        load_ensemble(tmp_path / "bad_weights.pt")
    torch.save({**contents, "members": [{"format": "something else"}]}, tmp_path / "bad_members.pt")
    with pytest.raises(UnetkitError, match=r"member 1\) is not a unetkit checkpoint"):
        load_ensemble(tmp_path / "bad_members.pt")


def _expected_classes(image_path: Path, members: list[tuple[Path, float]]) -> np.ndarray:
    """What the ensemble must predict, computed member by member with each one's own normalization."""
    x = torch.from_numpy(read_image(image_path, 1).transpose(2, 0, 1))[None]  # (1, 1, H, W) in [0, 1]
    total = None
    for path, weight in members:
        mean = load_checkpoint(path)["config"]["data"]["mean"][0]
        out = predict_whole(_predictor(path), (x - mean) / 0.25)[0] * weight  # (K, H, W)
        total = out if total is None else total + out
    return total.argmax(0).numpy()


def _two_members(tmp_path: Path) -> tuple[Path, list[tuple[Path, float]]]:
    a = _checkpoint(tmp_path / "a.pt", {"mean": [0.5], "std": [0.25]}, seed=3)
    b = _checkpoint(tmp_path / "b.pt", {"mean": [0.0], "std": [0.25]}, seed=4, depth=3)
    save_ensemble(tmp_path / "ens.pt", [a, b], [0.5, 0.5])
    return tmp_path / "ens.pt", [(a, 0.5), (b, 0.5)]


def test_predict_reads_an_ensemble_file(tmp_path: Path) -> None:
    ensemble, members = _two_members(tmp_path)
    (tmp_path / "in").mkdir()
    image = tmp_path / "in" / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 27), dtype=np.uint8)).save(image)
    mask = np.asarray(Image.open(predict(ensemble, [image], tmp_path / "out", device="cpu", progress=False)[0]))
    expected = np.array([10, 20, 30], dtype=np.uint8)[_expected_classes(image, members)]  # members' encoding
    assert mask.shape == (20, 27) and np.array_equal(mask, expected)


def test_evaluate_reads_an_ensemble_file(tmp_path: Path) -> None:
    ensemble, members = _two_members(tmp_path)
    rng = np.random.default_rng(1)
    for folder in ("images", "masks"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    truths = []
    for name in ("p", "q"):
        image = rng.integers(0, 256, (16, 24), dtype=np.uint8)
        Image.fromarray(image).save(tmp_path / "data" / "images" / f"{name}.png")
        truth = rng.integers(0, 3, (16, 24))
        Image.fromarray(np.array([10, 20, 30], np.uint8)[truth]).save(tmp_path / "data" / "masks" / f"{name}.png")
        truths.append(truth)
    report = evaluate(ensemble, tmp_path / "data", output=tmp_path / "scores.json", device="cpu", progress=False)
    expected = np.zeros((3, 3), np.int64)
    for name, truth in zip(("p", "q"), truths, strict=True):
        np.add.at(expected, (truth, _expected_classes(tmp_path / "data" / "images" / f"{name}.png", members)), 1)
    assert report["confusion_matrix"] == expected.tolist()
    assert (tmp_path / "scores.json").is_file()
