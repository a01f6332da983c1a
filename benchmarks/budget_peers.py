"""The peers of `budget.py`, trained the way their users do: a plain loop for a fixed wall time.

Each peer gets random 256x256 crops (reflect-padded where an image is smaller), batch 4, random flips and
90-degree rotations, BCE (binary, one output channel) or cross-entropy (ignoring void), Adam, fp32, NCHW, and
predicts each whole test image once, reflect-padded to its network's multiple, threshold 0.5 / arg-max.
Images are scaled to [0, 1] (x / 255), as their tutorials do.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from budget_data import IGNORE, Dataset
from torch import nn

CROP, BATCH = 256, 4


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TutorialUNet(nn.Module):
    """The U-Net of the common tutorials: padded 3x3 convs + BN + ReLU, 64-128-256-512, transposed up-convs."""

    def __init__(self, cin: int, cout: int, widths: tuple[int, ...] = (64, 128, 256, 512)) -> None:
        super().__init__()
        self.down = nn.ModuleList()
        c = cin
        for w in widths[:-1]:
            self.down.append(_block(c, w))
            c = w
        self.bottom = _block(c, widths[-1])
        self.ups = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
                                 for i in reversed(range(len(widths) - 1)))
        self.up_blocks = nn.ModuleList(_block(2 * widths[i], widths[i]) for i in reversed(range(len(widths) - 1)))
        self.head = nn.Conv2d(widths[0], cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottom(x)
        for up, block, skip in zip(self.ups, self.up_blocks, reversed(skips), strict=True):
            x = block(torch.cat([up(x), skip], 1))
        return self.head(x)


def build(peer: str, cin: int, cout: int) -> tuple[nn.Module, float, int]:
    """(network, Adam learning rate, input multiple)."""
    if peer == "monai":
        from monai.networks.nets import BasicUNet

        return BasicUNet(spatial_dims=2, in_channels=cin, out_channels=cout), 1e-3, 16
    if peer == "smp":
        import segmentation_models_pytorch as smp

        return smp.Unet("resnet34", encoder_weights=None, in_channels=cin, classes=cout), 1e-3, 32
    if peer == "tutorial":
        return TutorialUNet(cin, cout), 1e-4, 8
    raise SystemExit(f"unknown peer {peer}")


def _pad_to(image: np.ndarray, label: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = label.shape
    ph, pw = max(0, size - h), max(0, size - w)
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)), mode="reflect")
        label = np.pad(label, ((0, ph), (0, pw)), mode="reflect")
    return image, label


def _batch(images: list[np.ndarray], labels: list[np.ndarray], rng: np.random.Generator
           ) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for _ in range(BATCH):
        i = int(rng.integers(len(images)))
        image, label = _pad_to(images[i], labels[i], CROP)
        top = int(rng.integers(label.shape[0] - CROP + 1))
        left = int(rng.integers(label.shape[1] - CROP + 1))
        x = image[top:top + CROP, left:left + CROP]
        y = label[top:top + CROP, left:left + CROP]
        if rng.random() < 0.5:
            x, y = x[:, ::-1], y[:, ::-1]
        if rng.random() < 0.5:
            x, y = x[::-1], y[::-1]
        k = int(rng.integers(4))
        x, y = np.rot90(x, k), np.rot90(y, k)
        xs.append(np.ascontiguousarray(x.transpose(2, 0, 1)))
        ys.append(np.ascontiguousarray(y))
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


def _loss(binary: bool) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if binary:
        return lambda logits, y: F.binary_cross_entropy_with_logits(logits[:, 0], y.float())
    return lambda logits, y: F.cross_entropy(logits, y, ignore_index=IGNORE)


def train_peer(peer: str, dataset: Dataset, seconds: float, seed: int = 0) -> tuple[nn.Module, dict]:
    """Train `peer` on the dataset's training split for `seconds` of wall time (loading the images counts)."""
    began = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    images = [dataset.image(p) for p in dataset.train.images]
    labels = [dataset.truth(m, "train") for m in dataset.train.masks]
    binary = len(dataset.classes) == 2
    model, lr, _ = build(peer, dataset.channels, 1 if binary else len(dataset.classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = _loss(binary)
    model.train()
    steps = 0
    while time.perf_counter() - began < seconds:
        x, y = _batch(images, labels, rng)
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
    spent = time.perf_counter() - began
    return model, {"steps": steps, "train_seconds": spent, "images_per_s": steps * BATCH / spent,
                   "final_loss": float(loss.detach())}


@torch.no_grad()
def predict_peer(peer: str, model: nn.Module, dataset: Dataset) -> list[np.ndarray]:
    """(H, W) class maps of the test images: one reflect-padded pass each, eval mode."""
    multiple = build(peer, 1, 1)[2]
    binary = len(dataset.classes) == 2
    model.eval()
    out = []
    for path in dataset.test.images:
        image = dataset.image(path)
        h, w = image.shape[:2]
        ph, pw = -h % multiple, -w % multiple
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
        x = F.pad(x, (0, pw, 0, ph), mode="reflect")
        logits = model(x)[0, :, :h, :w]
        pred = (torch.sigmoid(logits[0]) > 0.5).long() if binary else logits.argmax(0)
        out.append(pred.numpy())
    return out
