"""Config options that change what a training run does, each proven by a short real run.

Every test trains for one to four epochs and checks an outcome that only holds when the option is honoured:
computed class weights reach the loss, a frozen encoder (batch-norm statistics included) stays bitwise
unchanged, `best.pt` follows the validation loss, the plateau schedule cuts the learning rate by its factor,
SGD runs with its momentum, a time budget ends the run early, ignored pixels count nowhere, a BCE model has
one output channel and evaluates, and a step with an infinite gradient (but a finite loss) never reaches the
optimizer: the run stops naming it, or skips it, even when that leaves an epoch with no trained step.
"""

import csv
import importlib
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from unetkit.checkpoint import load_checkpoint, model_from_checkpoint
from unetkit.config import IGNORE_INDEX, Config, load_config
from unetkit.data.class_weights import class_pixel_counts, class_weights
from unetkit.data.dataset import dataset_pairs
from unetkit.data.masks import MaskCodec
from unetkit.errors import UnetkitError
from unetkit.train.run import train

fit_module = importlib.import_module("unetkit.train.fit")  # the epochs: where the training loss is built
loop_module = importlib.import_module("unetkit.train.loop")

FAST = ["train.sample_images=0", "data.crops_per_image=1"]  # 8 training images, batch 4: 2 steps per epoch


def _wrap_training_loss(monkeypatch: pytest.MonkeyPatch,
                        act: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Pass every training step's loss through `act(step, value, logits, target)` (1-based; validation untouched)."""
    build = fit_module.build_loss
    counter = {"calls": 0}

    def build_and_wrap(*args: object, **kwargs: object) -> torch.nn.Module:
        loss = build(*args, **kwargs)
        forward = loss.forward

        def wrapped(logits: torch.Tensor, target: torch.Tensor, *a: object, **k: object) -> torch.Tensor:
            value = forward(logits, target, *a, **k)
            if torch.is_grad_enabled():
                counter["calls"] += 1
                return act(counter["calls"], value, logits, target)
            return value

        loss.forward = wrapped
        return loss

    monkeypatch.setattr(fit_module, "build_loss", build_and_wrap)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "last.pt")["model"]


def _finite(tensors: dict[str, torch.Tensor]) -> bool:
    return all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())


def test_median_class_weights_come_from_the_training_masks_and_reach_the_loss(
        synthetic_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[torch.nn.Module] = []
    for module in (fit_module, loop_module):  # the training loss, and validation's own
        real = module.build_loss

        def capture(*args: object, _real: Callable[..., torch.nn.Module] = real, **kwargs: object) -> torch.nn.Module:
            loss = _real(*args, **kwargs)
            built.append(loss)
            return loss

        monkeypatch.setattr(module, "build_loss", capture)
    cfg = synthetic_config("train.epochs=1", "loss.class_weights=median", *FAST)
    result = train(cfg, progress=False)
    assert len(result.history) == 1

    train_pairs, _ = dataset_pairs(cfg.data)
    expected = class_weights(class_pixel_counts(train_pairs, MaskCodec(cfg.data.mask, cfg.data.num_classes)),
                             "median")
    assert np.ptp(expected) > 0.1  # the classes are unbalanced: uniform weights would not pass below
    assert len(built) == 2
    for loss in built:
        for term in loss.terms:  # ce and dice, both weighted
            np.testing.assert_allclose(term.weight.numpy(), expected, rtol=0, atol=1e-6)  # recorded to 6 places
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())["loss"]["class_weights"]
    np.testing.assert_allclose(saved, expected, rtol=0, atol=1e-6)
    assert load_checkpoint(result.run_dir / "last.pt")["config"]["loss"]["class_weights"] == saved


def test_frozen_encoder_and_its_batch_norm_stay_bitwise_unchanged_until_released(
        synthetic_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch) -> None:
    # snapshot the weights whenever an epoch sets the encoder's state: before epoch 1 and after epoch 1
    snapshots: list[tuple[bool, dict[str, torch.Tensor]]] = []
    real = fit_module.set_encoder_frozen

    def record(model: torch.nn.Module, frozen: bool) -> None:
        snapshots.append((frozen, {k: v.detach().clone() for k, v in model.state_dict().items()}))
        real(model, frozen)

    monkeypatch.setattr(fit_module, "set_encoder_frozen", record)
    cfg = synthetic_config("train.epochs=2", "model.name=encoder_unet", "model.encoder=resnet18",
                           "model.encoder_weights=none", "model.freeze_encoder_epochs=1", *FAST)
    result = train(cfg, progress=False)
    assert [frozen for frozen, _ in snapshots] == [True, False]
    initial, after_one = snapshots[0][1], snapshots[1][1]
    after_two = load_checkpoint(result.run_dir / "last.pt")["model"]

    encoder = [k for k in initial if k.startswith("encoder.")]
    decoder = [k for k in initial if not k.startswith("encoder.")]
    running = [k for k in encoder if k.endswith(("running_mean", "running_var"))]
    assert encoder and decoder and running
    # epoch 1: weights and batch-norm statistics of the encoder untouched (it runs in eval mode), decoder trained
    changed = [k for k in encoder if not torch.equal(after_one[k], initial[k])]
    assert not changed, changed
    assert any(not torch.equal(after_one[k], initial[k]) for k in decoder)
    # epoch 2: the released encoder trains, its batch norm collects statistics again
    assert not torch.equal(after_two["encoder.conv1.weight"], after_one["encoder.conv1.weight"])
    assert all(not torch.equal(after_two[k], after_one[k]) for k in running)
    assert int(after_two["encoder.bn1.num_batches_tracked"]) == int(after_one["encoder.bn1.num_batches_tracked"]) + 2


def test_monitor_val_loss_keeps_the_epoch_with_the_lowest_validation_loss(
        synthetic_config: Callable[..., Config]) -> None:
    result = train(synthetic_config("train.epochs=3", "train.monitor=val_loss", "model.batch_norm=false", *FAST),
                   progress=False)
    losses = [row["val_loss"] for row in result.history]
    lowest = int(np.argmin(losses)) + 1
    assert result.best_epoch == lowest
    assert load_checkpoint(result.run_dir / "best.pt")["epoch"] == lowest
    # the kept score is a loss, not an mIoU (which would be the best score if the option were ignored)
    assert result.best_score == pytest.approx(min(losses), abs=1e-6)
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["monitor"] == "val_loss" and summary["best_epoch"] == lowest
    assert summary["best"]["val_loss"] == pytest.approx(min(losses), abs=1e-6)


def test_plateau_schedule_cuts_the_learning_rate_when_the_score_stalls(
        synthetic_config: Callable[..., Config]) -> None:
    # lr 1e-6 without batch norm: the predictions (and so the monitored mIoU) do not move at all
    lr, factor, min_lr = 1e-6, 0.25, 1e-7
    result = train(synthetic_config("train.epochs=3", "model.batch_norm=false", f"optim.lr={lr}",
                                    "optim.schedule=plateau", "optim.plateau_patience=0",
                                    f"optim.plateau_factor={factor}", f"optim.min_lr={min_lr}", *FAST),
                   progress=False)
    assert len({row["val_miou"] for row in result.history}) == 1  # the score stalled from epoch 1 on
    # epoch 1 sets the best score; each epoch after it fails to improve, and with patience 0 the lr is cut at once
    assert [row["lr"] for row in result.history] == [lr, lr, lr * factor]
    last = load_checkpoint(result.run_dir / "last.pt")
    assert last["optimizer"]["param_groups"][0]["lr"] == min_lr  # the next cut, 6.25e-8, is held at min_lr


def test_sgd_trains_with_the_configured_momentum(synthetic_config: Callable[..., Config]) -> None:
    result = train(synthetic_config("train.epochs=2", "optim.name=sgd", "optim.lr=0.05", "optim.momentum=0.7",
                                    "optim.weight_decay=0.0001", "optim.schedule=none", *FAST), progress=False)
    history = result.history
    assert [row["lr"] for row in history] == [0.05, 0.05]
    assert all(math.isfinite(row["train_loss"]) for row in history)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    optimizer = load_checkpoint(result.run_dir / "last.pt")["optimizer"]
    group = optimizer["param_groups"][0]
    assert group["momentum"] == 0.7 and group["weight_decay"] == 0.0001 and group["lr"] == 0.05
    assert "betas" not in group and not group["nesterov"]  # torch.optim.SGD's settings, not Adam's
    states = optimizer["state"].values()
    assert states and all("momentum_buffer" in s and "exp_avg" not in s for s in states)


def test_time_budget_stops_in_the_epoch_that_spends_it(synthetic_config: Callable[..., Config],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    result = train(synthetic_config("train.epochs=5", "train.max_minutes=0.0001", *FAST), progress=False)
    assert [row["epoch"] for row in result.history] == [1]
    out = capsys.readouterr().out
    assert "time budget of 0.0001 minutes used up in epoch 1 (step 1 of 2); the learning rate ended at 0" in out
    last = load_checkpoint(result.run_dir / "last.pt")
    assert last["epoch"] == 1 and last["config"]["train"]["epochs"] == 5
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["best_epoch"] == 1
    # stopped early, not finished: a resumed run goes on with epoch 2 (and, as budgets go, stops after it)
    resumed = train(resume=result.run_dir, progress=False)
    assert [row["epoch"] for row in resumed.history] == [1, 2]


IGNORE_RAW = 9  # an index-encoded mask value that is no class


def _write_ignore_dataset(root: Path, split: str, count: int, seed: int) -> int:
    """32x32 gray images with a bright disk (class 1) and a band of raw value 9 across the top; returns the
    number of ignored pixels written."""
    rng = np.random.default_rng(seed)
    (root / split / "images").mkdir(parents=True)
    (root / split / "masks").mkdir(parents=True)
    yy, xx = np.mgrid[:32, :32]
    ignored = 0
    for i in range(count):
        cy, cx = rng.integers(12, 20, size=2)
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= 36
        image = np.where(inside, 200, 40) + rng.integers(-20, 21, size=(32, 32))
        mask = inside.astype(np.uint8)
        band = 4 + 2 * i  # rows of the ignored band: a different share in every image
        mask[:band] = IGNORE_RAW
        ignored += band * 32
        Image.fromarray(image.astype(np.uint8)).save(root / split / "images" / f"img_{i}.png")
        Image.fromarray(mask).save(root / split / "masks" / f"img_{i}.png")
    return ignored


def test_ignored_pixels_count_in_neither_the_loss_nor_the_metrics(
        tmp_path: Path, tiny_config_writer: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "ignore_data"
    train_ignored = _write_ignore_dataset(root, "train", count=4, seed=0)
    val_ignored = _write_ignore_dataset(root, "val", count=2, seed=1)
    seen = {"ignored": 0, "steps": 0, "valid_gradient": 0}

    def check(step: int, value: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ignored = target == IGNORE_INDEX  # (N, H, W)
        # the run's loss is plain `ce`: its value is the mean over the labelled pixels alone, not diluted
        pixels = logits.detach().permute(0, 2, 3, 1)  # (N, H, W, C)
        labelled = torch.nn.functional.cross_entropy(pixels[~ignored], target[~ignored].long())
        torch.testing.assert_close(value.detach(), labelled)
        (grad,) = torch.autograd.grad(value, logits, retain_graph=True)  # (N, C, H, W)
        assert bool((grad.permute(0, 2, 3, 1)[ignored] == 0).all()), "an ignored pixel moved the loss"
        seen["valid_gradient"] += int((grad.permute(0, 2, 3, 1)[~ignored] != 0).any(-1).sum())
        seen["ignored"] += int(ignored.sum())
        seen["steps"] += 1
        return value

    _wrap_training_loss(monkeypatch, check)
    path = tiny_config_writer(root, data={"train_images": "train/images", "train_masks": "train/masks",
                                          "val_images": "val/images", "val_masks": "val/masks",
                                          "mask": {"encoding": "index", "ignore_value": IGNORE_RAW}},
                              train={"sample_images": 0})
    cfg = load_config(path)
    assert cfg.data.crop_size == 32 and cfg.data.augment == []  # every crop is a whole image, unchanged
    result = train(cfg, progress=False)
    assert seen["steps"] == 2 and seen["ignored"] == train_ignored  # every raw 9 became the ignore label
    assert seen["valid_gradient"] == 4 * 32 * 32 - train_ignored  # and every other pixel did count
    confusion = load_checkpoint(result.run_dir / "last.pt")["val_confusion"]
    assert int(confusion.sum()) == 2 * 32 * 32 - val_ignored


def test_bce_makes_a_one_channel_binary_model_that_trains_and_evaluates(
        tiny_dataset: Path, tiny_config_writer: Callable[..., Path]) -> None:
    from unetkit.infer.evaluate import evaluate

    path = tiny_config_writer(tiny_dataset, loss={"terms": [{"name": "bce"}]}, optim={"lr": 0.01},
                              train={"epochs": 3, "sample_images": 0})
    result = train(load_config(path), progress=False)
    losses = [row["train_loss"] for row in result.history]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    checkpoint = load_checkpoint(result.run_dir / "best.pt")
    assert checkpoint["out_channels"] == 1
    model, _ = model_from_checkpoint(checkpoint)
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 1, 32, 32)).shape == (1, 1, 32, 32)
    report = evaluate(result.run_dir / "best.pt", split="val", progress=False)
    assert report["images"] == 1 and 0.0 <= report["miou"] <= 1.0
    assert set(report["per_class"]) == {"background", "foreground"}


class _InfiniteGradient(torch.autograd.Function):
    """The identity forward (a finite loss), an infinite gradient backward."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, value: torch.Tensor) -> torch.Tensor:
        return value.clone()

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        return grad * math.inf


def _infinite_gradient_at(monkeypatch: pytest.MonkeyPatch, *at: int) -> None:
    def act(step: int, value: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _InfiniteGradient.apply(value) if step in at else value

    _wrap_training_loss(monkeypatch, act)


# CPU: under CUDA mixed precision the GradScaler itself drops steps whose gradients overflow
INF_GRAD = ["train.device=cpu", "data.batch_size=2", *FAST]  # 4 steps per epoch


def test_infinite_gradient_of_a_finite_loss_stops_the_run_naming_the_step(
        synthetic_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch) -> None:
    _infinite_gradient_at(monkeypatch, 3)
    cfg = synthetic_config("train.epochs=1", "train.checkpoint_every=1", "train.run_name=inf", *INF_GRAD)
    with pytest.raises(UnetkitError) as stopped:
        train(cfg, progress=False)
    message = str(stopped.value)
    assert "gradients became non-finite" in message and "in epoch 1 at step 3 (global step 3)" in message
    assert "is kept" in message and "train.on_nonfinite: skip" in message
    kept = load_checkpoint(Path(cfg.train.output_dir) / "inf" / "last.pt")
    assert kept["global_step"] == 2 and _finite(kept["model"])


def test_infinite_gradient_step_is_skipped_and_the_weights_stay_finite(
        synthetic_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch) -> None:
    _infinite_gradient_at(monkeypatch, 2)
    result = train(synthetic_config("train.epochs=2", "train.on_nonfinite=skip", *INF_GRAD), progress=False)
    assert [row["skipped_steps"] for row in result.history] == [1, 0]
    last = load_checkpoint(result.run_dir / "last.pt")
    assert _finite(last["model"])
    # an infinite gradient that reached Adam would leave inf / NaN moments behind for good
    assert all(_finite(state) for state in last["optimizer"]["state"].values())
    assert all(math.isfinite(row["train_loss"]) for row in result.history)


# the epoch-based schedule steps after an epoch in which the optimizer never did; torch warns, the epoch still counts
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before:UserWarning")
def test_an_epoch_whose_every_step_is_skipped_is_recorded_and_the_run_goes_on(
        synthetic_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch) -> None:
    _infinite_gradient_at(monkeypatch, 1, 2, 3, 4)  # all of epoch 1
    result = train(synthetic_config("train.epochs=2", "train.on_nonfinite=skip", *INF_GRAD), progress=False)
    first, second = result.history
    assert first["skipped_steps"] == 4 and second["skipped_steps"] == 0
    # no trained step: no training loss or score to show (not a crash, and not a made-up 0.0)
    assert first["train_miou"] is None and first["train_loss"] is None
    assert second["train_miou"] is not None and math.isfinite(second["train_loss"])
    assert (result.run_dir / "curves.png").is_file() and _finite(_weights(result.run_dir))
    rows = list(csv.DictReader(open(result.run_dir / "metrics.csv")))
    assert rows[0]["train_miou"] == rows[0]["train_loss"] == "" and rows[0]["skipped_steps"] == "4"
