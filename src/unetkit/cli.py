"""The `unetkit` command: parse arguments (`cli_parser.py`), call the library, print. No work happens here.

Everything beyond argparse is imported inside the command functions: torch alone takes seconds to import,
and `unetkit --help` or a mistyped option should answer at once.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from unetkit.cli_parser import build_parser
from unetkit.errors import TrainingStopped, UnetkitError

if TYPE_CHECKING:
    from unetkit.infer.inference import InferOptions


def _train(args: argparse.Namespace) -> None:
    began = time.perf_counter()  # --minutes counts from here: importing torch below takes seconds of them
    from unetkit.config import load_config
    from unetkit.distributed import world_from_env
    from unetkit.train.run import train

    if args.config is None and args.resume is None:
        raise UnetkitError("give a DATA folder or a CONFIG.yaml, or --resume RUN_DIR to continue a run")
    plan = None
    if args.config is not None and Path(args.config).is_dir():
        from unetkit.train.plan import make_plan

        plan = make_plan(args.config, args.minutes or 10.0, args.device or "auto", ignore=args.ignore, began=began)
        print(plan.yaml(), end="")
        cfg, name = plan.config(args.set), Path(args.config).resolve().name
    else:
        source = args.config if args.config is not None else Path(args.resume) / "config.yaml"
        extra = [f"train.max_minutes={args.minutes}"] if args.minutes else []
        extra += [f"train.device={args.device}"] if args.device else []
        cfg, name = load_config(source, args.set + extra), Path(source).stem
    result = train(cfg, resume=args.resume, name=name, progress=not args.quiet)
    if not world_from_env().main:  # under torchrun, rank 0 speaks for the run
        return
    if plan is not None:
        (result.run_dir / "plan.yaml").write_text(plan.yaml())
    print(f"run folder: {result.run_dir}")
    best = result.run_dir / "best.pt"
    print(f"best epoch {result.best_epoch}: {cfg.train.monitor} {result.best_score:.4f} -> {best}")
    if result.chosen_scores is not None:
        from unetkit.metrics import headline

        print(f"with the settings chosen on the validation images: {headline(result.chosen_scores, 'val ')}")
    print("next:\n" + "\n".join(f"  {command}" for command in next_commands(result.run_dir)))


def next_commands(run_dir: Path) -> list[str]:
    """What to run after training: score the best checkpoint on the validation images, then apply it."""
    best = run_dir / "best.pt"
    return [f"unetkit evaluate {best} --split val", f"unetkit predict {best} IMAGES/ -o masks --overlay"]


def _infer_options(args: argparse.Namespace) -> InferOptions:
    """The inference flags a command has (tile, overlap, TTA, threshold, ...) as one `InferOptions`; a flag not
    given stays None so the checkpoint's own setting applies (an unset `--em` / `--compile` is "not given")."""
    from unetkit.infer.inference import InferOptions

    fields = {"tile": "tile", "overlap": "overlap", "tta": "tta", "threshold": "threshold",
              "min_object_px": "min_object_px", "boundary_seeds": "boundary_seeds", "em": "em_scores",
              "instances": "instances",
              "precision": "precision", "channels_last": "channels_last", "compile": "compile", "level": "level"}
    given = {}
    for flag, field in fields.items():
        value = getattr(args, flag, None)
        if flag in ("em", "compile", "instances"):  # store_true: False means the flag was not given
            value = value or None
        if value is not None:
            given[field] = value
    return InferOptions(**given)


def _evaluate(args: argparse.Namespace) -> None:
    from unetkit.distributed import world_from_env
    from unetkit.infer.evaluate import evaluate
    from unetkit.metrics import format_table, headline

    report = evaluate(args.checkpoint, args.data, split=args.split, images=args.images, masks=args.masks,
                      output=args.output, options=_infer_options(args), device=args.device, progress=not args.quiet)
    if not world_from_env().main:  # under torchrun, rank 0 reports
        return
    print(format_table(report))
    loss = "" if report["loss"] is None else f"  loss {report['loss']:.4f}"
    print(f"{headline(report)}{loss}")
    if "em_scores" in report:
        print("EM scores (ISBI 2012, mean over images): "
              + ", ".join(f"{k} {v:.4f}" for k, v in report["em_scores"].items()))
    if "instance_scores" in report:
        found = report["instance_scores"]
        print("objects: " + ", ".join(f"{k} {found[k]:.4f}" for k in ("precision", "recall", "f1", "dsb_score",
                                                                        "aji", "panoptic_quality"))
              + f" (IoU 0.5; {sum(found['true_counts'])} true, {sum(found['predicted_counts'])} predicted)")
    print(f"scores written to {report['json']}, report page {report['html']}; "
          f"pictures: {', '.join(report['pictures'])}")


def _predict(args: argparse.Namespace) -> None:
    from unetkit.distributed import world_from_env
    from unetkit.infer.predict import existing_masks, predict

    kept = [] if args.overwrite else existing_masks(args.inputs, args.output, args.format)
    written = predict(args.checkpoint, args.inputs, args.output, options=_infer_options(args), overlays=args.overlay,
                      overwrite=args.overwrite, probabilities=args.probabilities, device=args.device,
                      progress=not args.quiet, mask_format=args.format)
    if not world_from_env().main:  # under torchrun, rank 0 reports
        return
    print(f"{len(written)} mask(s) written to {args.output}")
    if kept:
        print(f"{len(kept)} image(s) already had a mask there, kept as it was; --overwrite predicts them again")


def _plan(args: argparse.Namespace) -> None:
    from unetkit.train.plan import make_plan

    plan = make_plan(args.data, args.minutes, args.device, ignore=args.ignore)
    text = plan.yaml()
    if args.output:
        Path(args.output).write_text(text)
        print(f"plan written to {args.output}; train it with: unetkit train {args.output}")
    else:
        print(text, end="")


def _weightmap(args: argparse.Namespace) -> None:
    from unetkit.config import load_config
    from unetkit.data.io import list_images
    from unetkit.data.weightmap import write_weight_maps

    cfg = load_config(args.config, args.set)
    masks = [m for item in map(Path, args.masks) for m in (list_images(item) if item.is_dir() else [item])]
    missing = [m for m in masks if not m.is_file()]
    if missing:
        raise UnetkitError(f"mask {missing[0]} does not exist")
    written = write_weight_maps(cfg, masks, Path(args.output))
    print(f"{len(written)} weight map(s) written to {args.output} (NAME_weights.png picture, NAME_weights.npy values)")


def _ensemble(args: argparse.Namespace) -> None:
    from unetkit.infer.ensemble_search import ensemble, format_ensemble_report

    try:
        weights = [float(w) for w in args.weights.split(",")] if args.weights else None
    except ValueError:
        raise UnetkitError(f"--weights {args.weights!r}: give numbers separated by commas, e.g. 1,2") from None
    report = ensemble(args.checkpoints, args.data, split=args.split, images=args.images, masks=args.masks,
                      weights=weights, search=args.search, output=args.output, grid_step=args.grid_step,
                      options=_infer_options(args), device=args.device, progress=not args.quiet)
    print(format_ensemble_report(report))
    print(f"ensemble written to {report['ensemble']} (use it like a checkpoint with predict and evaluate)")


def _export(args: argparse.Namespace) -> None:
    from unetkit.export import export_model

    if args.format == "bioimageio":
        from unetkit.sharing.package import PackageOptions, export_bioimageio

        if args.tile is not None:
            raise UnetkitError("--tile is for onnx and torchscript; a bioimage.io package keeps its sizes dynamic")

        options = PackageOptions(name=args.name, description=args.description, license=args.license,
                                 authors=tuple(args.author), sample=Path(args.sample) if args.sample else None,
                                 opset=args.opset)
        path = export_bioimageio(args.checkpoint, Path(args.output or Path(args.checkpoint).with_suffix(".zip")),
                                 options)
        print(f"bioimage.io model package written to {path} (runs in bioimage.io tools, and with unetkit predict "
              f"{path} ...)")
        return
    default = Path(args.checkpoint).with_suffix(".onnx" if args.format == "onnx" else ".torchscript.pt")
    path = export_model(args.checkpoint, Path(args.output) if args.output else default, args.format,
                        opset=args.opset, tile=args.tile)
    print(f"exported to {path}" + (" (use it like a checkpoint: unetkit predict " + str(path) + " ...)"
                                   if args.format == "onnx" else ""))


def _data_patches(args: argparse.Namespace) -> None:
    from unetkit.data.patches import make_patches

    masks = Path(args.masks) if args.masks else (Path(args.src) / "masks")
    images = Path(args.images) if args.images else (Path(args.src) / "images")
    count = make_patches(images, masks if masks.is_dir() else None, Path(args.dst), size=args.size,
                         stride=args.stride, keep_partial=args.keep_partial)
    print(f"{count} patch(es) of {args.size}x{args.size} written to {args.dst}/images"
          + (f" and {args.dst}/masks" if masks.is_dir() else ""))


def _data_inspect(args: argparse.Namespace) -> None:
    from unetkit.data.inspect import format_inspection, inspect_folder

    print(format_inspection(inspect_folder(Path(args.dir), images=args.images, masks=args.masks)))
    instances = Path(args.dir) / "instances"
    if instances.is_dir():  # instance label images beside the masks
        from unetkit.data.instance_labels import format_instance_facts, instance_facts

        print(format_instance_facts(instance_facts(sorted(p for p in instances.iterdir() if p.is_file()))))


def _demo(args: argparse.Namespace) -> None:
    from unetkit.demo import run_demo, run_instance_demo

    if args.instances:
        run_instance_demo(args.output or "unetkit_demo_instances", minutes=args.minutes, progress=not args.quiet)
    else:
        run_demo(args.output or "unetkit_demo", epochs=args.epochs, progress=not args.quiet)


def _rank_tag() -> str:
    """`[rank N] ` under torchrun, so a message from one failing process is told apart; empty otherwise."""
    from unetkit.distributed import world_from_env

    world = world_from_env()
    return f"[rank {world.rank}] " if world.distributed else ""


HANDLERS = {"train": _train, "plan": _plan, "evaluate": _evaluate, "predict": _predict, "ensemble": _ensemble,
            "export": _export, "weightmap": _weightmap, "data_patches": _data_patches, "data_inspect": _data_inspect,
            "demo": _demo}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        HANDLERS[args.handler](args)
    except UnetkitError as err:
        print(f"unetkit: error: {_rank_tag()}{err}", file=sys.stderr)
        return 2
    except TrainingStopped as stopped:
        print(f"unetkit: {_rank_tag()}{stopped}", file=sys.stderr)
        return stopped.exit_code
    except KeyboardInterrupt:
        print("unetkit: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
