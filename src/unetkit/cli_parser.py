"""The `unetkit` command line: every command, its flags and their help, and nothing else.

Each parser names its command's handler (`handler="train"`, `"data_patches"`); `cli.py` maps the names to
the functions, so building the parser imports nothing beyond argparse (`unetkit --help` answers at once).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # argparse does not export the type of add_subparsers()
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

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


def _add_train(sub: Subparsers) -> None:
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
    p.set_defaults(handler="train")


def _add_plan(sub: Subparsers) -> None:
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
    p.set_defaults(handler="plan")


def _add_evaluate(sub: Subparsers) -> None:
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
    p.set_defaults(handler="evaluate")


def _add_predict(sub: Subparsers) -> None:
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
    p.set_defaults(handler="predict")


def _add_ensemble(sub: Subparsers) -> None:
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
    p.set_defaults(handler="ensemble")


def _add_export(sub: Subparsers) -> None:
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
    p.set_defaults(handler="export")


def _add_weightmap(sub: Subparsers) -> None:
    p = sub.add_parser("weightmap", help="draw the paper's border weight map of masks", epilog=EPILOG,
                       description="w = w_c + w0 * exp(-(d1 + d2)^2 / (2 sigma^2)) (U-Net paper, eq. 2), with the "
                                   "mask encoding and data.weight_map settings of CONFIG.")
    p.add_argument("config", help="YAML config declaring the mask encoding (and data.weight_map)")
    p.add_argument("masks", nargs="+", metavar="MASK", help="mask files or folders")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.set_defaults(handler="weightmap")


def _add_data(sub: Subparsers) -> None:
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
    q.set_defaults(handler="data_patches")
    q = data_sub.add_parser("inspect", help="what is in a dataset folder, and which mask encoding to declare",
                            epilog=EPILOG,
                            description="Counts, sizes, channels, mask values and their pixel share, pairing "
                                        "problems; suggests the data.mask section of the config.")
    q.add_argument("dir", help="folder with images/ and masks/ (or just images)")
    q.add_argument("--images", default="images", help="images subfolder name (default %(default)s)")
    q.add_argument("--masks", default="masks", help="masks subfolder name (default %(default)s)")
    q.set_defaults(handler="data_inspect")


def _add_demo(sub: Subparsers) -> None:
    p = sub.add_parser("demo", help="generate synthetic cells, train, evaluate and predict (a few minutes on CPU)",
                       epilog=EPILOG)
    p.add_argument("-o", "--output", metavar="DIR",
                   help="demo folder (default unetkit_demo, with --instances unetkit_demo_instances)")
    p.add_argument("--epochs", type=int, help="training epochs (default: as in the demo config)")
    p.add_argument("--instances", action="store_true",
                   help="touching synthetic nuclei instead: an instance model planned for --minutes, object scores, "
                        "object tables")
    p.add_argument("--minutes", type=float, default=2.0, help="with --instances: the training budget (default 2)")
    p.set_defaults(handler="demo")


def _add_common(sub: Subparsers) -> None:
    """Flags several commands share: quiet everywhere, and how the network runs over images for the ones
    that predict."""
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
            p.add_argument("--boundary-seeds", type=float, metavar="P",
                           help="boundary maps: close boundary gaps by a watershed seeded where p(boundary) < P "
                                "(default: the checkpoint's infer.boundary_seeds, none = off)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unetkit", epilog=EXAMPLES + EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train, evaluate and apply U-Nets for semantic segmentation of your own images.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_train, _add_plan, _add_evaluate, _add_predict, _add_ensemble, _add_export, _add_weightmap,
                _add_data, _add_demo, _add_common):
        add(sub)
    return parser
