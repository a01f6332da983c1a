"""`unetkit plan`: a complete config for a dataset folder and a time budget, every value with its reason.

nnU-Net showed that a U-Net configured from the data (patch and depth from image and object sizes, features
doubling to a cap, Dice + cross-entropy, foreground oversampling) beats hand-tuned recipes; it plans for days
of GPU time. This planner follows the same rules, adapted to the minutes a user has: the width, the precision
and the number of validations come from timing this machine, not from a table. Nothing here names a dataset;
every choice follows from the fingerprint (`unetkit.data.fingerprint`) or a measurement, and says which.

DATA is a folder with `train/images` + `train/masks` (or `images` + `masks`), optionally `val/` and `test/`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unetkit.config import Config, apply_override, config_from_dict
from unetkit.data.fingerprint import Fingerprint, describe, fingerprint
from unetkit.data.void import parse_ignore
from unetkit.errors import UnetkitError
from unetkit.train.plan_budget import measured_choices
from unetkit.train.plan_rules import layout_choices, recipe_choices, shape_choices

SECTIONS = ("data", "model", "loss", "optim", "train", "infer")


@dataclass
class Choice:
    key: str  # dotted config key, e.g. "model.depth"
    value: Any
    reason: str


@dataclass
class Layout:
    root: Path
    train: str  # relative folder holding images/ and masks/
    val: str | None = None
    test: str | None = None
    masks: str = "masks"  # the label folder in each: "instances" when train/ has instance label images


@dataclass
class Plan:
    layout: Layout
    fingerprint: Fingerprint
    minutes: float
    device: str
    choices: list[Choice] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)  # what was measured, for the header
    object_seconds: float = 0.0  # an instance model: growing and scoring the validation images' objects once
    gap_seconds: float = 0.0  # a boundary map: closing the validation images' gaps once (a watershed each)

    def add(self, key: str, value: Any, reason: str) -> None:
        self.choices = [c for c in self.choices if c.key != key] + [Choice(key, value, reason)]

    def value(self, key: str) -> Any:
        return next(c.value for c in self.choices if c.key == key)

    def tree(self) -> dict[str, Any]:
        """The choices as the nested YAML tree of a config."""
        tree: dict[str, Any] = {}
        for choice in self.choices:
            *parents, last = choice.key.split(".")
            node = tree
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = choice.value
        return tree

    def config(self, overrides: list[str] | None = None) -> Config:
        """The plan as a validated config, with `--set key=value` overrides applied on top."""
        tree = self.tree()
        for assignment in overrides or []:
            apply_override(tree, assignment)
        given = {a.split("=", 1)[0].strip(): a for a in overrides or []}
        return config_from_dict(tree, "plan", given)

    def yaml(self) -> str:
        """The plan as a commented YAML config: a header of facts, then each value with its reason."""
        lines = [f"# unetkit plan for {self.layout.root}: {self.minutes:g} minutes on {self.device}"]
        lines += [f"#   {fact}" for fact in [*describe(self.fingerprint), *self.facts]]
        lines.append("# Edit any value and run: unetkit train THIS_FILE")
        written: set[str] = set()
        for section in SECTIONS:
            lines.append(f"{section}:")
            for choice in (c for c in self.choices if c.key.split(".")[0] == section):
                parts = choice.key.split(".")
                if len(parts) == 3 and ".".join(parts[:2]) not in written:
                    written.add(".".join(parts[:2]))
                    lines.append(f"  {parts[1]}:")
                indent = "  " * (len(parts) - 1)
                lines.append(f"{indent}{parts[-1]}: {json.dumps(choice.value)}   # {choice.reason}")
        return "\n".join(lines) + "\n"


def locate(data: Path) -> Layout:
    """Where the training (and validation, test) images and masks of DATA are; one line when it is neither."""
    data = Path(data).resolve()

    def pair(sub: str, labels: tuple[str, ...] = ("masks", "instances")) -> str | None:
        folder = data / sub if sub else data
        labelled = any((folder / name).is_dir() for name in labels)
        return sub if (folder / "images").is_dir() and labelled else None

    train = pair("train") or pair("")
    if train is None:
        raise UnetkitError(f"{data}: expected train/images and train/masks or train/instances (or images/ and "
                           "masks/) inside; see the README's \"Your own data\"")
    labels = "instances" if (data / train / "instances").is_dir() else "masks"  # instances: an instance model
    return Layout(data, train, pair("val", (labels,)), pair("test", (labels,)), labels)


def make_plan(data: str | Path, minutes: float = 10.0, device: str = "auto",
              say: Callable[[str], None] = print, ignore: str | None = None, began: float | None = None) -> Plan:
    """Fingerprint DATA, time candidate networks on `device`, and return the plan (see the module docstring):
    it fits a training of `minutes` minutes of wall time, this planning and the choices after it included.
    `ignore` names the mask value (or R,G,B colour) of unlabelled pixels, "none" for none (see data/void.py).
    `began` (a `time.perf_counter()` reading) is when the minutes started, if before this call: the command's
    start, so the seconds it took to import torch count too."""
    began = time.perf_counter() if began is None else began
    device = planning_device(device)
    layout = locate(Path(data))
    say(f"fingerprinting {layout.root / layout.train} ...")
    fp = fingerprint(layout.root / layout.train, masks=layout.masks, ignore=parse_ignore(ignore))
    for line in describe(fp):
        say(f"  {line}")
    plan = Plan(layout, fp, minutes, device)
    layout_choices(plan)
    for fact in plan.facts:  # what the layout found wrong with the data, before the minutes of timing
        say(f"  {fact}")
    shape_choices(plan)
    recipe_choices(plan)
    measured_choices(plan, say, began)
    plan.add("train.device", device, "the device planned and timed on")
    plan.config()  # every plan must be a valid config
    return plan


def planning_device(name: str) -> str:
    """The device a plan is made for: auto = cuda when present."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UnetkitError(f"--device {name}: no CUDA GPU is visible here; plan for cpu")
    return name
