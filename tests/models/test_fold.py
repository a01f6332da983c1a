"""Folding batch norm into convolutions changes speed, not results."""

import torch

from unetkit.models.fold import count_batch_norms, fold_batch_norm
from unetkit.models.unet import UNet


def _trained_statistics(model: UNet) -> UNet:
    """Give every batch norm non-trivial running statistics and affine parameters."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(2, 1, 64, 64) * 3 + 1)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 2.0)
                module.bias.uniform_(-0.5, 0.5)
    return model.eval()


def test_folded_unet_computes_the_same_logits_without_batch_norm() -> None:
    torch.manual_seed(0)
    model = _trained_statistics(UNet(1, 3, depth=2, base_channels=8, padding="same", batch_norm=True))
    assert count_batch_norms(model) == 10  # 2 per double conv: 2 down levels + bottom + 2 up levels
    folded = fold_batch_norm(model)
    assert count_batch_norms(folded) == 0 and count_batch_norms(model) == 10  # the original keeps its norms
    x = torch.randn(2, 1, 48, 80)
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)


def test_a_network_without_batch_norm_is_only_copied() -> None:
    model = UNet(1, 2, depth=2, base_channels=4, padding="valid")
    folded = fold_batch_norm(model)
    assert folded is not model
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), folded.state_dict().values(),
                                                 strict=True))
