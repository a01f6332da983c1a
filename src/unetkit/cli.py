"""The `unetkit` command: parse arguments, call the library, print. No work happens here.

Everything beyond argparse is imported inside the command functions: torch alone takes seconds to import,
and `unetkit --help` or a mistyped option should answer at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from unetkit.errors import TrainingStopped, UnetkitError

if TYPE_CHECKING:
    from unetkit.infer.inference import InferOptions

EPILOG = "Errors in your data, config or arguments print one line and exit with status 2."
EXAMPLES = """examples:
  unetkit demo                                          synthetic cells: train, evaluate, predict
  unetkit train mydata --minutes 10                     plan, train and tune for your folder in 10 minutes
  unetkit plan mydata --minutes 30 -o plan.yaml         the same plan as an editable, commented config
  unetkit data inspect mydata/train                     which mask encoding to declare
  unetkit train configs/isbi2012.yaml --set train.epochs=5
  unetkit evaluate runs/isbi2012-.../best.pt --split val --em --tta d4
  unetkit predict runs/isbi2012-.../best.pt new_slices/ -o masks --overlay
  unetkit <command> --help                              options of one command

"""


IGNORE_HELP = ("a DATA folder: the mask value (e.g. 11) or R,G,B colour of unlabelled (void) pixels, skipped by "
               "training and scores; default: 255 in index masks of classes 0..K is void; none: no void")


def _train(args: argparse.Namespace) -> None:
    from unetkit.config import load_config
    from unetkit.distributed import world_from_env
    from unetkit.train.run import train

    if args.config is None and args.resume is None:
        raise UnetkitError("give a DATA folder or a CONFIG.yaml, or --resume RUN_DIR to continue a run")
    plan = None
    if args.config is not None and Path(args.config).is_dir():
        from unetkit.train.plan import make_plan

        plan = make_plan(args.config, args.minutes or 10.0, args.device or "auto", ignore=args.ignore)
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
              "min_object_px": "min_object_px", "em": "em_scores", "instances": "instances",
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unetkit", epilog=EXAMPLES + EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train, evaluate and apply U-Nets for semantic segmentation of your own images.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a U-Net on a dataset folder (planned for you) or from a YAML config",
                       epilog=EPILOG,
                       description="Train a U-Net. Given a DATA folder (train/images + train/masks, optional val/ "
                                   "and test/), unetkit plans the network and recipe for --minutes on this machine "
                                   "(see `unetkit plan`), trains, and chooses threshold, small-object removal and "
                                   "TTA on the validation images. Writes a run folder with config.yaml, plan.yaml, "
                                   "metrics.csv, curves.png, samples/, last.pt and best.pt.")
    p.add_argument("config", nargs="?", metavar="DATA|CONFIG",
                   help="a dataset folder, or a YAML config (see configs/); optional with --resume")
    p.add_argument("--minutes", type=float, metavar="N",
                   help="wall-time budget: the schedule anneals by then (a DATA folder: default 10, planning and "
                        "choices included; a config: sets train.max_minutes)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: the config's, auto = cuda when present)")
    p.add_argument("--ignore", metavar="VALUE", help=IGNORE_HELP)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=5 (repeatable)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last.pt")
    p.set_defaults(func=_train)

    p = sub.add_parser("plan", help="write a complete, commented config for a dataset folder and a time budget",
                       epilog=EPILOG,
                       description="Fingerprint the dataset (mask encoding, classes, sizes, objects, intensities), "
                                   "time candidate networks on this machine, and write the config that trains best "
                                   "in --minutes. Every value carries its reason; edit it and run `unetkit train "
                                   "plan.yaml`.")
    p.add_argument("data", metavar="DATA", help="folder with train/images and train/masks (optional val/, test/)")
    p.add_argument("--minutes", type=float, default=10.0, help="wall-time budget (default %(default)s)")
    p.add_argument("--device", default="auto", help="cpu, cuda or cuda:N to plan for (default %(default)s)")
    p.add_argument("--ignore", metavar="VALUE", help=IGNORE_HELP)
    p.add_argument("-o", "--output", metavar="PLAN.yaml", help="write the plan here (default: print it)")
    p.set_defaults(func=_plan)

    p = sub.add_parser("evaluate", help="score a checkpoint on labelled images", epilog=EPILOG,
                       description="Per-class IoU, Dice, precision, recall, mIoU and pixel accuracy from one "
                                   "confusion matrix over all images; printed as a table and written as JSON.")
    p.add_argument("checkpoint", help="best.pt or last.pt of a run")
    p.add_argument("--data", metavar="DIR", help="folder with images/ and masks/")
    p.add_argument("--split", choices=["val", "test"],
                   help="instead of --data: the run's own validation images, or the config's data.test_* folders")
    p.add_argument("--images", metavar="DIR", help="images folder, if not DIR/images")
    p.add_argument("--masks", metavar="DIR", help="masks folder, if not DIR/masks")
    p.add_argument("-o", "--output", metavar="FILE.json",
                   help="where to write the scores (default: next to the checkpoint)")
    p.add_argument("--em", action="store_true",
                   help="also report the ISBI 2012 EM scores: pixel error, Rand error, V_rand, V_info "
                        "(binary boundary data, class 1 = boundary)")
    p.add_argument("--instances", action="store_true",
                   help="also score objects: precision, recall, F1 at IoU 0.5, DSB score, AJI, panoptic quality; "
                        "true objects from DIR/instances/ when present, else the masks' connected components")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("predict", help="segment images with a checkpoint", epilog=EPILOG,
                       description="Write one mask per image, in the training data's own encoding "
                                   "(0/255 stays 0/255, palette colours stay colours). Any image size.")
    p.add_argument("checkpoint", help="best.pt or last.pt of a run")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder (not an input folder)")
    p.add_argument("--overlay", action="store_true", help="also write NAME_overlay.png (class colours on the image)")
    p.add_argument("--probabilities", action="store_true", help="also write NAME_probs.npy (K, H, W) float16")
    p.add_argument("--instances", action="store_true",
                   help="also write NAME_instances.png (16-bit, one label per object) and NAME_objects.csv (area, "
                        "centroid, box, diameter, eccentricity, mean intensity); with --overlay, object outlines")
    p.add_argument("--overwrite", action="store_true",
                   help="predict images whose mask is already in the output folder again (default: keep it)")
    p.add_argument("--format", choices=["png", "ome-zarr", "ome-tiff"], default="png",
                   help="mask file: PNG in the training encoding (default), or for large images a pyramid of class "
                        "indices with the input's pixel size, NAME.ome.zarr or a tiled, compressed NAME.ome.tif")
    p.set_defaults(func=_predict)

    p = sub.add_parser("ensemble", help="combine checkpoints into a weighted ensemble (optionally search weights)",
                       epilog=EPILOG,
                       description="Average the members' class probabilities with weights; score each member, the "
                                   "equal-weight ensemble and the chosen weights by mIoU; save the ensemble as a file "
                                   "that predict and evaluate accept like a checkpoint.")
    p.add_argument("checkpoints", nargs="+", metavar="CKPT", help="member checkpoints (same classes and channels)")
    p.add_argument("--data", metavar="DIR", help="labelled folder with images/ and masks/")
    p.add_argument("--split", choices=["val", "test"], help="instead of --data: the first member's val or test split")
    p.add_argument("--images", metavar="DIR", help="images folder, if not DIR/images")
    p.add_argument("--masks", metavar="DIR", help="masks folder, if not DIR/masks")
    p.add_argument("--weights", metavar="W1,W2,...", help="member weights (normalized to sum 1)")
    p.add_argument("--search", action="store_true", help="grid-search the weights that maximize mIoU")
    p.add_argument("--grid-step", type=float, default=0.1, help="weight grid step for --search (default %(default)s)")
    p.add_argument("-o", "--output", metavar="FILE", help="ensemble file to write (default ensemble.pt)")
    p.set_defaults(func=_ensemble)

    p = sub.add_parser("export", help="export a checkpoint to ONNX, TorchScript or a bioimage.io model package",
                       epilog=EPILOG,
                       description="Export the network (normalized image -> logits) with dynamic batch, height and "
                                   "width, the run's config embedded, and check it against PyTorch (1e-4). An .onnx "
                                   "file runs on onnxruntime wherever a checkpoint is accepted (predict, evaluate). "
                                   "--format bioimageio writes a bioimage.io model package (.zip: both weights, "
                                   "preprocessing, test tensors, cover, README with the run's scores).")
    p.add_argument("checkpoint", help="best.pt or last.pt of a run")
    p.add_argument("-o", "--output", metavar="FILE", help="output file (default: next to the checkpoint)")
    p.add_argument("--format", choices=["onnx", "torchscript", "bioimageio"], default="onnx",
                   help="(default %(default)s)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default %(default)s)")
    p.add_argument("--tile", type=int, metavar="PX", help="fix the input size (default: dynamic; not for bioimageio)")
    p.add_argument("--name", help="bioimageio: the model's name (default: U-Net RUN-FOLDER)")
    p.add_argument("--description", help="bioimageio: one sentence on what it segments (default: from the config)")
    p.add_argument("--license", default="MIT", metavar="SPDX", help="bioimageio: licence id (default %(default)s)")
    p.add_argument("--author", action="append", default=[], metavar="NAME",
                   help="bioimageio: an author (repeatable; default: your login name)")
    p.add_argument("--sample", metavar="IMAGE",
                   help="bioimageio: the test image (default: the run's first validation image, else a generated one)")
    p.set_defaults(func=_export)

    p = sub.add_parser("weightmap", help="draw the paper's border weight map of masks", epilog=EPILOG,
                       description="w = w_c + w0 * exp(-(d1 + d2)^2 / (2 sigma^2)) (U-Net paper, eq. 2), with the "
                                   "mask encoding and data.weight_map settings of CONFIG.")
    p.add_argument("config", help="YAML config declaring the mask encoding (and data.weight_map)")
    p.add_argument("masks", nargs="+", metavar="MASK", help="mask files or folders")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.set_defaults(func=_weightmap)

    p = sub.add_parser("data", help="prepare and inspect datasets (patches, inspect)", epilog=EPILOG)
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    q = data_sub.add_parser("patches", help="cut images and masks into patches", epilog=EPILOG,
                            description="Cut SRC/images and SRC/masks (paired by name) into SIZE x SIZE patches "
                                        "named NAME_y<top>_x<left>.png, pixels unchanged.")
    q.add_argument("src", help="folder with images/ and masks/ (masks optional)")
    q.add_argument("dst", help="output folder (gets images/ and masks/)")
    q.add_argument("--size", type=int, default=128, help="patch size in pixels (default %(default)s)")
    q.add_argument("--stride", type=int, help="step between patches (default: the size, no overlap)")
    q.add_argument("--keep-partial", action="store_true", help="also cover the right/bottom remainder")
    q.add_argument("--images", metavar="DIR", help="images folder, if not SRC/images")
    q.add_argument("--masks", metavar="DIR", help="masks folder, if not SRC/masks")
    q.set_defaults(func=_data_patches)
    q = data_sub.add_parser("inspect", help="what is in a dataset folder, and which mask encoding to declare",
                            epilog=EPILOG,
                            description="Counts, sizes, channels, mask values and their pixel share, pairing "
                                        "problems; suggests the data.mask section of the config.")
    q.add_argument("dir", help="folder with images/ and masks/ (or just images)")
    q.add_argument("--images", default="images", help="images subfolder name (default %(default)s)")
    q.add_argument("--masks", default="masks", help="masks subfolder name (default %(default)s)")
    q.set_defaults(func=_data_inspect)

    p = sub.add_parser("demo", help="generate synthetic cells, train, evaluate and predict (a few minutes on CPU)",
                       epilog=EPILOG)
    p.add_argument("-o", "--output", metavar="DIR",
                   help="demo folder (default unetkit_demo, with --instances unetkit_demo_instances)")
    p.add_argument("--epochs", type=int, help="training epochs (default: as in the demo config)")
    p.add_argument("--instances", action="store_true",
                   help="touching synthetic nuclei instead: an instance model planned for --minutes, object scores, "
                        "object tables")
    p.add_argument("--minutes", type=float, default=2.0, help="with --instances: the training budget (default 2)")
    p.set_defaults(func=_demo)

    for name, p in sub.choices.items():
        if name == "data":
            continue
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
        if name in ("evaluate", "predict", "ensemble"):
            p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default %(default)s)")
            p.add_argument("--tile", type=int, metavar="PX",
                           help="output tile size; larger images are predicted tile by tile (default: config, 512)")
            p.add_argument("--overlap", type=int, metavar="PX",
                           help="pixels shared by neighbouring tiles, blended (default: 0 = exact overlap-tile "
                                "for valid U-Nets, tile/4 for padded ones)")
            p.add_argument("--tta", choices=["none", "flips", "d4"],
                           help="test-time augmentation: average over flips, or flips and 90-degree rotations")
        if name in ("evaluate", "predict"):
            p.add_argument("--level", type=int, metavar="N",
                           help="read pyramid level N of TIFF / OME-TIFF and OME-Zarr images (default 0 = full "
                                "resolution; evaluate's masks must be of that level's size)")
            p.add_argument("--precision", choices=["fp32", "bf16", "fp16"],
                           help="bf16 autocast (CPUs with AVX-512 bf16/AMX, GPUs) or fp16 (GPUs); default fp32")
            p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                           help="NHWC activations: same results, faster convolutions (default: on, from the config)")
            p.add_argument("--compile", action="store_true",
                           help="torch.compile the network (faster tiles after a slow first batch)")
            p.add_argument("--threshold", type=float, metavar="P",
                           help="binary models: foreground where its probability exceeds P (default: the "
                                "checkpoint's infer.threshold, 0.5 = arg-max)")
            p.add_argument("--min-object-px", type=int, metavar="N",
                           help="binary models: drop foreground regions under N pixels (default: the checkpoint's "
                                "infer.min_object_px, 0 = keep all)")
    return parser


def _rank_tag() -> str:
    """`[rank N] ` under torchrun, so a message from one failing process is told apart; empty otherwise."""
    from unetkit.distributed import world_from_env

    world = world_from_env()
    return f"[rank {world.rank}] " if world.distributed else ""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
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
