"""Loss terms against values worked out by hand or against torch's own implementation."""

import math

import pytest
import torch
import torch.nn.functional as F

from unetkit.config import IGNORE_INDEX, LossConfig, LossTerm
from unetkit.errors import UnetkitError
from unetkit.losses import build_loss

X = IGNORE_INDEX
# Hand-made masks: the prediction gets 2 of 3 foreground pixels and 2 of 3 background pixels right.
# The third row is ignored, and there the prediction is all wrong, so it would change the loss if it counted.
TARGET = torch.tensor([[[0, 1, 1], [0, 0, 1], [X, X, X]]])
PRED = torch.tensor([[[0, 1, 0], [0, 1, 1], [1, 1, 1]]])


def one_hot_logits(pred: torch.Tensor, num_classes: int, scale: float = 30.0) -> torch.Tensor:
    """Near-certain logits `(N, C, H, W)` that put all probability on `pred`."""
    return scale * (2 * F.one_hot(pred, num_classes).permute(0, 3, 1, 2).float() - 1)


def loss_of(*names: str, **cfg: object) -> torch.nn.Module:
    num_classes = cfg.pop("num_classes", 2)
    return build_loss(LossConfig(terms=[LossTerm(name=n) for n in names], **cfg), num_classes)


def random_batch(num_classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, num_classes, 5, 7, generator=g)
    target = torch.randint(0, num_classes, (2, 5, 7), generator=g)
    target[:, 0, :3] = X
    return logits, target


@pytest.mark.parametrize(("smooth", "expected"), [(1.0, 1 - 5 / 7), (0.0, 1 - 4 / 6)])
def test_dice_of_hand_made_masks(smooth: float, expected: float) -> None:
    # Both classes: intersection 2, |pred| 3, |truth| 3 -> Dice (2*2 + s) / (3 + 3 + s).
    loss = loss_of("dice", dice_smooth=smooth)
    assert loss(one_hot_logits(PRED, 2), TARGET).item() == pytest.approx(expected, abs=1e-6)


def test_dice_on_one_sigmoid_channel_scores_foreground_only() -> None:
    logits = 30.0 * (2 * PRED.unsqueeze(1).float() - 1)  # (1, 1, 3, 3)
    loss = loss_of("bce", "dice", dice_smooth=1.0)
    assert loss.parts(logits, TARGET)["dice"].item() == pytest.approx(1 - 5 / 7, abs=1e-6)


def test_dice_class_weights_weight_the_class_mean() -> None:
    target = torch.tensor([[[0, 1, 1], [0, 0, 1]]])
    pred = torch.tensor([[[0, 1, 0], [0, 0, 0]]])
    # background: inter 3, |pred| 5, |truth| 3 -> 6/8; foreground: inter 1, |pred| 1, |truth| 3 -> 2/4
    logits = one_hot_logits(pred, 2)
    assert loss_of("dice", dice_smooth=0.0)(logits, target).item() == pytest.approx(1 - (0.75 + 0.5) / 2)
    weighted = loss_of("dice", dice_smooth=0.0, class_weights=[1.0, 3.0])(logits, target)
    assert weighted.item() == pytest.approx(1 - (0.75 * 1 + 0.5 * 3) / 4)


@pytest.mark.parametrize("weights", [None, [0.5, 2.0, 1.0]])
def test_ce_with_ignore_equals_torch_ce_on_kept_pixels(weights: list[float] | None) -> None:
    logits, target = random_batch(3)
    kept = target != X
    flat_logits = logits.permute(0, 2, 3, 1)[kept]  # (P, C)
    w = None if weights is None else torch.tensor(weights)
    expected = F.cross_entropy(flat_logits, target[kept], weight=w)
    got = loss_of("ce", num_classes=3, class_weights=weights)(logits, target)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_focal_with_gamma_zero_is_ce() -> None:
    logits, target = random_batch(4)
    focal = loss_of("focal", num_classes=4, focal_gamma=0.0)(logits, target)
    ce = loss_of("ce", num_classes=4)(logits, target)
    assert focal.item() == pytest.approx(ce.item(), rel=1e-6)


def test_focal_by_hand() -> None:
    # Equal logits -> p_t = 1/2; gamma 2 -> (1/2)^2 * ln 2; alpha of class 1 = 4 -> ln 2.
    logits = torch.zeros(1, 2, 1, 2)
    target = torch.tensor([[[1, X]]])
    assert loss_of("focal")(logits, target).item() == pytest.approx(0.25 * math.log(2))
    assert loss_of("focal", class_weights=[1.0, 4.0])(logits, target).item() == pytest.approx(math.log(2))


def test_bce_on_one_channel_model() -> None:
    target = torch.tensor([[[0, 1], [1, X]]])
    logits = torch.zeros(1, 1, 2, 2)  # every valid pixel costs ln 2
    assert loss_of("bce")(logits, target).item() == pytest.approx(math.log(2))
    # weights 1, 3, 3 on the three valid pixels, mean over those 3 pixels
    weighted = loss_of("bce", class_weights=[1.0, 3.0])(logits, target)
    assert weighted.item() == pytest.approx(7 / 3 * math.log(2))
    logits = torch.tensor([[[[2.0, -1.0], [0.5, 9.0]]]])
    expected = F.binary_cross_entropy_with_logits(torch.tensor([2.0, -1.0, 0.5]), torch.tensor([0.0, 1.0, 1.0]))
    assert loss_of("bce")(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


def test_weighted_sum_is_sum_of_parts() -> None:
    logits, target = random_batch(3)
    cfg = LossConfig(terms=[LossTerm(name="dice", weight=0.5), LossTerm(name="focal", weight=2.0)])
    total = build_loss(cfg, 3)(logits, target)
    dice = loss_of("dice", num_classes=3)(logits, target)
    focal = loss_of("focal", num_classes=3)(logits, target)
    assert total.item() == pytest.approx(0.5 * dice.item() + 2.0 * focal.item(), rel=1e-6)


@pytest.mark.parametrize(
    ("names", "channels", "cfg"),
    [
        (("ce",), 2, {}),
        (("ce",), 2, {"class_weights": [1.0, 2.0]}),
        (("focal",), 2, {"class_weights": [1.0, 2.0]}),
        (("dice",), 2, {"dice_smooth": 0.0}),
        (("dice", "focal"), 2, {}),
        (("bce", "dice"), 1, {"class_weights": [1.0, 2.0]}),
    ],
)
def test_all_ignored_batch_gives_zero_and_backward_works(names: tuple[str, ...], channels: int, cfg: dict) -> None:
    logits = torch.randn(2, channels, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), X)
    loss = loss_of(*names, **cfg)(logits, target)
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None and torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize("names", [("ce",), ("focal",), ("dice",), ("dice", "focal")])
@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_gradients_finite_on_saturated_logits(names: tuple[str, ...], gamma: float) -> None:
    # +-60 saturates softmax to exactly 0 / 1 in float32: log p_t and (1 - p_t)^gamma must stay finite.
    _, target = random_batch(3)
    pred = target.clamp(max=2)
    pred[:, 2] = (pred[:, 2] + 1) % 3  # one row confidently wrong
    logits = one_hot_logits(pred, 3, scale=60.0).requires_grad_()
    loss = loss_of(*names, num_classes=3, focal_gamma=gamma, dice_smooth=0.0)(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_user_and_shape_errors() -> None:
    with pytest.raises(UnetkitError, match="class_weights"):
        loss_of("ce", class_weights=[1.0, 2.0], num_classes=3)
    with pytest.raises(UnetkitError, match="bce"):
        loss_of("bce", num_classes=3)
    logits, target = random_batch(3)
    with pytest.raises(ValueError, match="channels"):
        loss_of("ce")(logits, target)
    with pytest.raises(ValueError, match="cropped"):
        loss_of("ce", num_classes=3)(logits, target[:, 1:])


def test_weighted_ce_multiplies_each_pixel_by_its_weight_map_value() -> None:
    # two pixels with uniform logits over 2 classes: each CE is ln 2; weights 1 and 3, one ignored pixel
    logits = torch.zeros(1, 2, 1, 3, requires_grad=True)
    target = torch.tensor([[[0, 1, IGNORE_INDEX]]])
    weight = torch.tensor([[[1.0, 3.0, 100.0]]])
    loss = build_loss(LossConfig(terms=[LossTerm(name="weighted_ce")]), 2)
    assert loss(logits, target, weight).item() == pytest.approx((1 + 3) * math.log(2) / 2)
    loss(logits, target, weight).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    with pytest.raises(ValueError, match="weight map"):
        loss(logits, target)
