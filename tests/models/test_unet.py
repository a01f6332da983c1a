"""U-Net size rule, layer and parameter counts, and forward shapes, against numbers worked out by hand."""

import pytest
import torch
from torch import nn

from unetkit.config import ModelConfig
from unetkit.errors import UnetkitError
from unetkit.models import UNet, build_model
from unetkit.models.unet import center_crop, count_conv_layers


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_paper_network_counts_and_572_to_388() -> None:
    model = UNet().eval()
    assert count_conv_layers(model) == 23  # 18 3x3 convs + 4 up-convs + 1 head
    assert n_params(model) == 31_030_658
    assert model.output_size(572) == 388
    assert model.margin == 92
    with torch.no_grad():  # the one forward pass of the full 64-channel network
        y = model(torch.zeros(1, 1, 572, 572))
    assert y.shape == (1, 2, 388, 388)


def test_tiny_network_parameter_count() -> None:
    # depth 1, base 2, 1 -> 2 channels; weights + biases per layer:
    # stem 1->2: 18+2=20, 2->2: 36+2=38; down 2->4: 72+4=76, 4->4: 144+4=148; up-conv 4->2 (2x2): 32+2=34;
    # up 4->2: 72+2=74, 2->2: 38; head 2->2 (1x1): 4+2=6. Total 434.
    assert n_params(UNet(depth=1, base_channels=2)) == 434
    # BatchNorm drops the 6 DoubleConv biases (2+2+4+4+2+2=16) and adds gamma+beta per channel (2*16=32).
    assert n_params(UNet(depth=1, base_channels=2, batch_norm=True)) == 434 - 16 + 32
    # bilinear: the 2x2 up-conv (34) becomes a 1x1 conv 4->2 (8+2=10), same layer count.
    bilinear = UNet(depth=1, base_channels=2, upsample="bilinear")
    assert n_params(bilinear) == 434 - 34 + 10
    assert count_conv_layers(bilinear) == count_conv_layers(UNet(depth=1, base_channels=2)) == 8


# Hand-worked valid-padding sizes (down: -4, must be even, /2; bottom: -4; up: *2, -4):
#   depth 1: 18 -> 14 -> 7 -> 3 -> 2;  20 -> 16 -> 8 -> 4 -> 4;  so out = s - 16 for even s >= 18.
#            16 -> 12 -> 6 -> 2 -> 0 (empty output): invalid.  17 -> 13 (odd before the pool): invalid.
#   depth 2: 44 -> 40 -> 20 -> 16 -> 8 -> 4 -> 4 -> 4;  48 -> 44 -> 22 -> 18 -> 9 -> 5 -> 6 -> 8.
#            46 -> 42 -> 21 -> 17 (odd): invalid.  40 -> ... -> 3 -> 2 -> 0: invalid.
#   depth 4: 572 -> 568/2=284 -> 280/2=140 -> 136/2=68 -> 64/2=32 -> 28 -> 52 -> 100 -> 196 -> 388.
#            188 -> 92 -> 44 -> 20 -> 8 -> 4 -> 4 -> 4 -> 4 -> 4 (the smallest valid input).
@pytest.mark.parametrize(
    ("depth", "size", "expected"),
    [
        (1, 18, 2),
        (1, 20, 4),
        (1, 16, None),
        (1, 17, None),
        (2, 44, 4),
        (2, 48, 8),
        (2, 46, None),
        (2, 40, None),
        (4, 572, 388),
        (4, 188, 4),
        (4, 573, None),
        (4, 570, None),
        (4, 172, None),
    ],
)
def test_valid_size_rule(depth: int, size: int, expected: int | None) -> None:
    model = UNet(depth=depth, base_channels=2)
    assert model.is_valid_input(size) == (expected is not None)
    if expected is None:
        with pytest.raises(UnetkitError):
            model.output_size(size)
    else:
        assert model.output_size(size) == expected


@pytest.mark.parametrize(
    ("padding", "size", "expected"),
    # valid depth 4: inputs 188 + 16k; same depth 4: multiples of 16.
    [
        ("valid", 573, (572, 588)),
        ("valid", 570, (556, 572)),
        ("valid", 572, (572, 572)),
        ("valid", 100, (None, 188)),
        ("same", 65, (64, 80)),
        ("same", 64, (64, 64)),
        ("same", 5, (None, 16)),
    ],
)
def test_nearest_valid_sizes(padding: str, size: int, expected: tuple[int | None, int]) -> None:
    assert UNet(padding=padding, base_channels=2).nearest_valid_sizes(size) == expected


def test_invalid_sizes_name_the_nearest_valid_ones() -> None:
    valid = UNet(base_channels=2)
    with pytest.raises(UnetkitError, match="572 and 588"):
        valid.output_size(573)
    with pytest.raises(UnetkitError, match="width 570 .*556 and 572"):
        valid.check_input(572, 570)
    with pytest.raises(UnetkitError, match="188"):
        valid.check_input(100, 572)
    same = UNet(padding="same", base_channels=2)
    with pytest.raises(UnetkitError, match="height 65 .*64 and 80"):
        same(torch.zeros(1, 1, 65, 64))  # forward checks before any layer runs


def test_input_size_for_and_margin() -> None:
    assert UNet(base_channels=2).input_size_for(388) == 572
    assert UNet(base_channels=2).input_size_for(389) == 588  # 572 gives only 388
    assert UNet(base_channels=2).input_size_for(1) == 188
    assert UNet(depth=1, base_channels=2).input_size_for(3) == 20  # 18 gives 2, 20 gives 4
    assert UNet(depth=1, base_channels=2).margin == 8
    assert UNet(depth=2, base_channels=2).margin == 20
    same = UNet(padding="same", base_channels=2)
    assert same.margin == 0
    assert same.input_size_for(65) == 80


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"batch_norm": True}, {"upsample": "bilinear"}, {"dropout": 0.5}],
)
def test_same_padding_keeps_size(kwargs: dict) -> None:
    model = UNet(in_channels=3, num_classes=5, base_channels=4, padding="same", **kwargs).eval()
    with torch.no_grad():
        y = model(torch.randn(2, 3, 64, 96))
    assert y.shape == (2, 5, 64, 96)


@pytest.mark.parametrize(
    ("depth", "height", "width", "upsample"),
    # depth 1: out = s - 16; depth 2: 44 + 4k -> s - 40; depth 3: 92 + 8k -> s - 88.
    [(1, 18, 34, "transpose"), (2, 52, 44, "bilinear"), (3, 100, 116, "transpose"), (3, 124, 92, "bilinear")],
)
def test_valid_forward_matches_output_size(depth: int, height: int, width: int, upsample: str) -> None:
    model = UNet(depth=depth, base_channels=4, upsample=upsample).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 1, height, width))
    assert y.shape == (1, 2, model.output_size(height), model.output_size(width))
    assert height - y.shape[-2] == width - y.shape[-1] == 2 * model.margin


def test_dropout_sits_on_the_bottleneck() -> None:
    model = UNet(depth=2, base_channels=2, dropout=0.5)
    assert isinstance(model.dropout, nn.Dropout2d) and model.dropout.p == 0.5
    seen: list[tuple[int, ...]] = []
    model.dropout.register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape)))
    model.eval()(torch.zeros(1, 1, 44, 44))
    assert seen == [(1, 8, 4, 4)]  # 4 channels * 2**2 at the bottom; 44 -> 20 -> 8 -> 4 (see above)


def test_center_crop_takes_the_middle() -> None:
    x = torch.arange(36).reshape(1, 1, 6, 6)
    assert center_crop(x, 2, 4).flatten().tolist() == [13, 14, 15, 16, 19, 20, 21, 22]


def test_bad_arguments_raise() -> None:
    with pytest.raises(UnetkitError, match="padding"):
        UNet(padding="reflect")  # type: ignore[arg-type]
    with pytest.raises(UnetkitError, match="depth"):
        UNet(depth=0)


def test_build_model_from_config() -> None:
    model = build_model(ModelConfig(padding="valid", depth=2, base_channels=4, batch_norm=True), 3, 1)
    assert isinstance(model, UNet)
    assert model.stem[0].in_channels == 3 and model.head.out_channels == 1
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, 44, 44)).shape == (1, 1, 4, 4)


def test_he_init_draws_weights_with_std_sqrt_2_over_fan_in() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(init="he", depth=2, base_channels=16), in_channels=1, out_channels=2)
    conv = model.downs[1][1][0]  # a 3x3 conv with 32 input channels: N = 9 * 32 = 288
    assert isinstance(conv, torch.nn.Conv2d) and conv.in_channels == 32
    assert conv.weight.std().item() == pytest.approx((2 / 288) ** 0.5, rel=0.05)
    assert torch.count_nonzero(conv.bias) == 0
