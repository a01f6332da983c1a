"""`infer.compile`: short batches reuse the compiled graph, and compiled masks equal eager ones."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from unetkit.checkpoint import make_checkpoint, out_channels, save_checkpoint
from unetkit.config import config_from_dict
from unetkit.data.io import read_raw
from unetkit.infer.inference import InferOptions
from unetkit.infer.predict import predict
from unetkit.infer.predictor import Predictor
from unetkit.models.build import build_model
from unetkit.models.unet import UNet


class Recording(nn.Module):
    """Stands in for `torch.compile`'s result: runs the model and notes each batch size it was given."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return self.model(x)


def test_a_short_batch_is_padded_to_the_largest_batch_of_its_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled: list[Recording] = []
    monkeypatch.setattr(torch, "compile", lambda model, dynamic: compiled.append(Recording(model)) or compiled[-1])
    torch.manual_seed(0)
    net = UNet(in_channels=1, num_classes=2, depth=2, base_channels=4, padding="valid")
    predictor = Predictor(net, torch.device("cpu"), compile=True)
    x = torch.rand(4, 1, 44, 44)
    full = predictor.logits(x)
    short = predictor.logits(x[:1])  # the last tile of a row: padded to 4, cropped back to 1
    other = predictor.logits(torch.rand(3, 1, 60, 60))  # another tile size starts its own batch size
    assert compiled[0].batches == [4, 4, 3]
    assert full.shape == (4, 2, 4, 4) and short.shape == (1, 2, 4, 4) and other.shape == (3, 2, 20, 20)
    torch.testing.assert_close(short, full[:1], atol=1e-6, rtol=1e-5)
    predictor.configure("fp32", channels_last=False, compile=False)
    assert predictor.compiled is None
    torch.testing.assert_close(predictor.logits(x[:1]), short, atol=1e-6, rtol=1e-5)


def test_compiled_masks_equal_eager_masks(tmp_path: Path) -> None:
    cfg = config_from_dict({"data": {"classes": ["a", "b", "c"], "mask": {"encoding": "index"}},
                            "model": {"depth": 2, "base_channels": 4, "padding": "valid"}})
    torch.manual_seed(0)
    save_checkpoint(make_checkpoint(build_model(cfg.model, 1, out_channels(cfg)), cfg, epoch=0), tmp_path / "m.pt")
    (tmp_path / "in").mkdir()
    pixels = np.random.default_rng(0).integers(0, 255, (40, 80), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in" / "a.png")
    # 16-pixel tiles: 5 per row, so each row ends with a batch of 1 that is padded to 4
    eager = predict(tmp_path / "m.pt", [tmp_path / "in"], tmp_path / "eager", options=InferOptions(tile=16),
                    progress=False)
    compiled = predict(tmp_path / "m.pt", [tmp_path / "in"], tmp_path / "compiled",
                       options=InferOptions(tile=16, compile=True), progress=False)
    mask = read_raw(compiled[0])
    assert mask.shape == (40, 80) and set(np.unique(mask).tolist()) <= {0, 1, 2}
    np.testing.assert_array_equal(mask, read_raw(eager[0]))
