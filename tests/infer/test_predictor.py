"""Any image size through networks that accept only some sizes: mirror padding and cropping back."""

import numpy as np
import pytest
import torch

from unetkit.infer.geometry import padding_for
from unetkit.infer.predictor import Predictor, mirror_pad, predict_whole, to_probabilities
from unetkit.models.unet import UNet


@pytest.mark.parametrize("pads", [(1, 2, 3, 0), (5, 9, 7, 4), (20, 33, 0, 41)], ids=["small", "medium", "beyond-size"])
def test_mirror_pad_matches_numpy_reflect(pads: tuple[int, int, int, int]) -> None:
    x = torch.arange(2 * 6 * 7, dtype=torch.float32).reshape(1, 2, 6, 7)
    top, bottom, left, right = pads
    expected = np.pad(x.numpy(), ((0, 0), (0, 0), (top, bottom), (left, right)), mode="reflect")
    np.testing.assert_array_equal(mirror_pad(x, top, bottom, left, right).numpy(), expected)


def test_padding_for_the_paper_network_on_512() -> None:
    # outputs of the paper's net are 388 + 16k; the smallest covering 512 is 516 (k = 8) from a 700 input:
    # 92 pixels of context before the image, 700 - 512 - 92 = 96 after (4 extra output pixels, cropped).
    net = UNet(base_channels=1)
    assert padding_for(net, 512) == (92, 96)


def test_padding_for_same_network_pads_at_the_end() -> None:
    net = UNet(padding="same", depth=4, base_channels=1)
    assert padding_for(net, 65) == (0, 15)  # 65 -> 80
    assert padding_for(net, 64) == (0, 0)


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_predictor_returns_the_input_size_for_odd_sizes(padding: str) -> None:
    torch.manual_seed(0)
    net = UNet(in_channels=1, num_classes=3, depth=2, base_channels=4, padding=padding)
    out = predict_whole(Predictor(net, torch.device("cpu")), torch.rand(2, 1, 33, 63))
    assert out.shape == (2, 3, 33, 63)
    torch.testing.assert_close(out.sum(1), torch.ones(2, 33, 63))


def test_valid_predictor_equals_one_pass_over_the_mirror_padded_image() -> None:
    torch.manual_seed(0)
    net = UNet(in_channels=1, num_classes=2, depth=2, base_channels=4, padding="valid").eval()
    image = torch.rand(1, 1, 37, 41)
    predictor = Predictor(net, torch.device("cpu"))
    out = predict_whole(predictor.logits, image, predictor)
    top, bottom = padding_for(net, 37)
    left, right = padding_for(net, 41)
    with torch.no_grad():
        full = net(torch.from_numpy(np.pad(image.numpy(), ((0, 0), (0, 0), (top, bottom), (left, right)),
                                           mode="reflect")))
    torch.testing.assert_close(out, full[..., :37, :41])


def test_one_channel_logits_become_two_class_probabilities() -> None:
    probs = to_probabilities(torch.tensor([[[[0.0, 100.0]]]]))
    torch.testing.assert_close(probs[0, :, 0, :], torch.tensor([[0.5, 0.0], [0.5, 1.0]]))
