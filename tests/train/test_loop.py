"""The training loop's own contract, without a run around it: what one epoch adds to its progress, what a
valid network's loss sees, how non-finite steps are stopped or skipped, and that a resumed epoch counts on."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unetkit.models.unet import UNet
from unetkit.train.loop import NonFiniteLoss, StepOptions, center_crop, train_one_epoch
from unetkit.train.state import EpochProgress

CPU = torch.device("cpu")


def _batches(count: int, size: int = 32, classes: int = 2) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [{"image": torch.randn(2, 1, size, size, generator=generator),
             "mask": torch.randint(0, classes, (2, size, size), generator=generator)} for _ in range(count)]


class RecordingLoss(nn.Module):
    """Cross-entropy that remembers the target shape and value of every call; `poison` steps return NaN."""

    def __init__(self, poison: set[int] = frozenset()) -> None:
        super().__init__()
        self.poison, self.targets, self.values = set(poison), [], []

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        loss = nn.functional.cross_entropy(logits, target)
        if len(self.values) + 1 in self.poison:
            loss = loss * float("nan")
        self.targets.append(target)
        self.values.append(float(loss.detach()))
        return loss


def _epoch(model: nn.Module, batches: list, loss: nn.Module, progress: EpochProgress, **options: object
           ) -> tuple[EpochProgress, list[int]]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    seen: list[int] = []
    train_one_epoch(model, batches, loss, optimizer, torch.amp.GradScaler("cuda", enabled=False), CPU, progress,
                    after_step=lambda p: seen.append(p.steps), show=False, **options)
    return progress, seen


def test_one_epoch_adds_every_step_to_the_progress_and_calls_after_step_each_time() -> None:
    torch.manual_seed(0)
    model = UNet(1, 2, depth=2, base_channels=4, padding="same")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = RecordingLoss()
    progress, seen = _epoch(model, _batches(3), loss, EpochProgress(1, 2))
    assert seen == [1, 2, 3] and (progress.steps, progress.skipped, progress.trained) == (3, 0, 3)
    assert progress.mean_loss() == pytest.approx(sum(loss.values) / 3, rel=1e-6)
    assert int(progress.confusion.matrix.sum()) == 3 * 2 * 32 * 32  # every trained pixel counted once
    assert model.training and any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_valid_network_is_scored_on_the_centre_its_output_sees() -> None:
    torch.manual_seed(0)
    model = UNet(1, 2, depth=2, base_channels=4, padding="valid")
    batches = _batches(1, size=44)  # 44 -> 4 output pixels per side
    loss = RecordingLoss()
    _epoch(model, batches, loss, EpochProgress(1, 2))
    assert loss.targets[0].shape == (2, 4, 4)
    assert torch.equal(loss.targets[0], center_crop(batches[0]["mask"], 4, 4))
    assert torch.equal(center_crop(torch.arange(36).reshape(6, 6), 2, 2), torch.tensor([[14, 15], [20, 21]]))


def test_a_non_finite_step_stops_before_the_weights_move_or_is_skipped_and_counted() -> None:
    torch.manual_seed(0)
    model = UNet(1, 2, depth=2, base_channels=4, padding="same")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(NonFiniteLoss) as stopped:
        _epoch(model, _batches(3), RecordingLoss(poison={1}), EpochProgress(1, 2))
    assert stopped.value.step == 1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items() if v.is_floating_point())

    progress, seen = _epoch(model, _batches(3), RecordingLoss(poison={2}), EpochProgress(1, 2),
                            steps=StepOptions(on_nonfinite="skip"))
    assert seen == [1, 2, 3] and (progress.steps, progress.skipped, progress.trained) == (3, 1, 2)
    assert int(progress.confusion.matrix.sum()) == 2 * 2 * 32 * 32  # the skipped step counts nowhere
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())


def test_a_restored_epoch_counts_on_from_its_saved_steps() -> None:
    torch.manual_seed(0)
    model = UNet(1, 2, depth=2, base_channels=4, padding="same")
    first, _ = _epoch(model, _batches(2), RecordingLoss(), EpochProgress(1, 2))
    restored = EpochProgress.from_state(first.state_dict(), 2, CPU)
    assert (restored.steps, int(restored.confusion.matrix.sum())) == (2, 2 * 2 * 32 * 32)
    progress, seen = _epoch(model, _batches(1), RecordingLoss(), restored)
    assert seen == [3] and progress.steps == 3 and int(progress.confusion.matrix.sum()) == 3 * 2 * 32 * 32
