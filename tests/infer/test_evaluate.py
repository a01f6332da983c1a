"""Evaluation on the run's own splits; test masks in another encoding map to the same classes."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unetkit.checkpoint import make_checkpoint, out_channels, save_checkpoint
from unetkit.config import load_config
from unetkit.errors import UnetkitError
from unetkit.infer.evaluate import evaluate
from unetkit.models.build import build_model


def test_split_test_decodes_test_masks_with_their_own_encoding(tmp_path: Path, tiny_dataset: Path,
                                                               tiny_config_writer) -> None:
    # test masks hold gray values 40 (class 0) and 90 (class 1) instead of the training masks' 0/255
    test = tmp_path / "test"
    (test / "images").mkdir(parents=True)
    (test / "masks").mkdir()
    Image.fromarray(np.full((32, 32), 100, np.uint8)).save(test / "images" / "t.png")
    mask = np.full((32, 32), 40, np.uint8)
    mask[:8] = 90
    Image.fromarray(mask).save(test / "masks" / "t.png")
    path = tiny_config_writer(tiny_dataset, data={
        "test_images": str(test / "images"), "test_masks": str(test / "masks"),
        "test_mask": {"encoding": "gray_values", "values": [40, 90]}})
    cfg = load_config(path)
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.data.channels, out_channels(cfg))
    save_checkpoint(make_checkpoint(model, cfg, epoch=0), tmp_path / "m.pt")
    report = evaluate(tmp_path / "m.pt", split="test", progress=False)
    matrix = np.array(report["confusion_matrix"])
    assert matrix.sum(1).tolist() == [24 * 32, 8 * 32]  # truth rows: 768 class-0 and 256 class-1 pixels
    assert Path(report["json"]).name == "evaluation_test.json"
    assert all(Path(p).is_file() for p in report["pictures"])
    with pytest.raises(UnetkitError, match="split 'train' is unknown"):
        evaluate(tmp_path / "m.pt", split="train", progress=False)
