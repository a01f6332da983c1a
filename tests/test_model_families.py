"""Every row of the shared model table: folding batch norm, ONNX export and ensembles compute what the network
computes, to tight tolerances.

Each family is built from its table row with random weights and non-trivial batch-norm statistics
(`with_statistics`), so a norm that was dropped or folded wrongly shows. Probabilities must agree to 1e-5, and
classes must be equal wherever the two largest probabilities differ by more than 1e-4 (closer than that, float
rounding may pick either).

Folded and exported networks are compared with the exact (float64) result of the same network, which is
stricter than comparing two float32 results. Where PyTorch's own float32 result is further than 1e-5 from
float64, the bound is twice PyTorch's measured error (printed): the other implementation must be as exact as
PyTorch itself. Measured on this table's random networks: the U-Nets stay within 1e-5; resnet18 is 1.1e-5 and
vgg16 1.8e-5 from float64; Inception v3 (~100 layers, badly conditioned at random init) 2.9e-4.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from extras import require
from model_table import MODEL_TABLE, table_inputs, with_statistics
from torch import nn

from unetkit.checkpoint import load_checkpoint, make_checkpoint, out_channels, save_checkpoint
from unetkit.config import Config
from unetkit.infer.ensemble import Ensemble, load_members
from unetkit.infer.inference import model_predictor
from unetkit.infer.predictor import Predictor, predict_whole, to_probabilities
from unetkit.models.build import build_model
from unetkit.models.fold import count_batch_norms, fold_batch_norm

CPU = torch.device("cpu")
FAMILIES = list(MODEL_TABLE)
PROBABILITY_TOLERANCE = 1e-5
CLEAR_MARGIN = 1e-4


def _family(synthetic_config: Callable[..., Config], family: str, seed: int = 0) -> tuple[Config, nn.Module]:
    cfg = synthetic_config(*MODEL_TABLE[family])
    torch.manual_seed(seed)
    model = build_model(cfg.model, cfg.data.channels, out_channels(cfg))
    return cfg, with_statistics(model, cfg.data.channels, cfg.data.crop_size, seed)


def _images(cfg: Config, count: int = 2) -> torch.Tensor:
    """(count, C, S + 8, S - 8) inputs; not square, so height and width are not confused."""
    size = cfg.data.crop_size
    return table_inputs(count, cfg.data.channels, size + 8, size - 8, torch.Generator().manual_seed(1))


def exact_probabilities(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The network's (N, K, H, W) probabilities on `x` computed in float64, with the same mirror padding."""
    exact = copy.deepcopy(model).double()

    def in_float64(batch: torch.Tensor) -> torch.Tensor:
        return to_probabilities(exact(batch.double())).float()

    with torch.inference_mode():
        return predict_whole(in_float64, x, Predictor(model, CPU))


def assert_as_exact_as_pytorch(got: torch.Tensor, model: nn.Module, x: torch.Tensor) -> None:
    """`got` (probabilities from another implementation of `model` on `x`) is within 1e-5 of the float64
    result, or within twice PyTorch's own float32 error where that is larger (printed); classes equal the
    exact ones wherever the top two exact probabilities differ by more than 1e-4 (or 10x the tolerance)."""
    exact = exact_probabilities(model, x)
    with torch.inference_mode():
        pytorch_error = (predict_whole(Predictor(model, CPU), x) - exact).abs().max().item()
    tolerance = max(PROBABILITY_TOLERANCE, 2 * pytorch_error)
    if tolerance > PROBABILITY_TOLERANCE:
        print(f"PyTorch float32 is {pytorch_error:.1e} from float64 for this network: tolerance {tolerance:.1e}")
    assert got.shape == exact.shape
    torch.testing.assert_close(got, exact, atol=tolerance, rtol=0)
    top2 = exact.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > max(CLEAR_MARGIN, 10 * tolerance)  # (N, H, W)
    assert clear.float().mean() > 0.5, "almost every pixel is a near-tie: the comparison means little"
    assert torch.equal(got.argmax(1)[clear], exact.argmax(1)[clear])


@pytest.mark.parametrize("family", FAMILIES)
def test_folding_batch_norm_keeps_the_networks_probabilities(family: str,
                                                             synthetic_config: Callable[..., Config]) -> None:
    cfg, model = _family(synthetic_config, family)
    folded = fold_batch_norm(model)
    before = count_batch_norms(model)
    assert count_batch_norms(folded) <= before and folded is not model
    if family == "unet-same-bn-dropout":
        assert before > 0 and count_batch_norms(folded) == 0  # every norm of the padded U-Net is folded
    if family.startswith("encoder-"):
        assert count_batch_norms(folded) < before  # at least the decoder's norms are folded
    x = _images(cfg)
    with torch.inference_mode():
        folded_probabilities = predict_whole(model_predictor(model, CPU), x)
    assert_as_exact_as_pytorch(folded_probabilities, model, x)


@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_export_gives_pytorchs_probabilities(family: str, tmp_path: Path,
                                                  synthetic_config: Callable[..., Config]) -> None:
    require("onnx")
    require("onnxruntime")
    from unetkit.export import export_model
    from unetkit.infer.onnx_backend import load_onnx

    cfg, model = _family(synthetic_config, family)
    checkpoint = tmp_path / "model.pt"
    save_checkpoint(make_checkpoint(model, cfg, epoch=0), checkpoint)
    onnx_predictor, _ = load_onnx(export_model(checkpoint, tmp_path / "model.onnx"), "cpu")
    x = _images(cfg)
    with torch.inference_mode():
        onnx_probabilities = predict_whole(onnx_predictor, x)
    assert_as_exact_as_pytorch(onnx_probabilities, model, x)


@pytest.mark.parametrize("family", FAMILIES)
def test_an_ensemble_of_a_family_is_the_weighted_sum_of_its_members(family: str, tmp_path: Path,
                                                                    synthetic_config: Callable[..., Config]) -> None:
    paths, predictors = [], []
    for seed in (0, 1):
        cfg, model = _family(synthetic_config, family, seed)
        paths.append(tmp_path / f"m{seed}.pt")
        save_checkpoint(make_checkpoint(model, cfg, epoch=0), paths[-1])
        predictors.append(model_predictor(model, CPU))
    members, _ = load_members([load_checkpoint(p) for p in paths], [str(p) for p in paths], CPU)
    ensemble = Ensemble(members, [1.0, 3.0], [str(p) for p in paths])
    x = torch.rand(1, cfg.data.channels, cfg.data.crop_size, cfg.data.crop_size)  # raw [0, 1] pixels
    mean = torch.tensor(cfg.data.mean).view(1, -1, 1, 1)
    std = torch.tensor(cfg.data.std).view(1, -1, 1, 1)
    with torch.inference_mode():
        a, b = (predict_whole(p, (x - mean) / std) for p in predictors)
        assert not torch.allclose(a, b, atol=1e-3)  # two different members: the weights matter
        torch.testing.assert_close(predict_whole(ensemble, x), 0.25 * a + 0.75 * b, atol=PROBABILITY_TOLERANCE, rtol=0)
