"""Export a checkpoint as a bioimage.io model package: one zip that bioimage.io's tools and unetkit both run.

The package holds `rdf.yaml` (bioimage.io model spec 0.5, built with bioimageio.spec's own description
classes and written by its `save_bioimageio_package`, which validates what it wrote), TorchScript and ONNX
weights from unetkit's exporters (each carrying the resolved config, so `unetkit predict model.zip` writes
masks in the training encoding), the test input and output (`unetkit.sharing.sample`), a cover image
(input | prediction), README.md with the run's training data and validation scores, licence, authors and
citations. `unetkit.sharing.describe` says how sizes, preprocessing and activations are expressed.
"""

from __future__ import annotations

import getpass
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
from PIL import Image

from unetkit.checkpoint import load_checkpoint, model_from_checkpoint
from unetkit.errors import UnetkitError
from unetkit.export import export_model
from unetkit.sharing import describe
from unetkit.sharing.readme import network_text, readme, run_facts
from unetkit.sharing.sample import cover, find_sample, fit_to_network, raw_pixels, reference_tensors

TAGS = ["unetkit", "unet", "segmentation", "semantic-segmentation", "2d", "pytorch", "onnx"]


@dataclass(frozen=True)
class PackageOptions:
    """What a model package says about itself beyond the checkpoint (the CLI's `export --format bioimageio`
    flags). Empty `authors` names the user running the export; None `name` takes the run folder's name."""

    name: str | None = None
    description: str | None = None
    license: str = "MIT"  # an SPDX licence id
    authors: tuple[str, ...] = field(default_factory=tuple)
    sample: Path | None = None  # the test image; default: the run's first validation image
    opset: int = 17  # of the ONNX weights


def _default_author() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in a container without a passwd entry
        return "unetkit user"


def default_name(checkpoint: Path) -> str:
    """'U-Net RUN-FOLDER' in the characters bioimage.io allows in a name (letters, digits, _+- ()), <= 64 long."""
    run = re.sub(r"[^A-Za-z0-9_+\- ()]", "-", checkpoint.resolve().parent.name or checkpoint.stem)
    return f"U-Net {run}"[:64]


def _check_output(output: Path) -> None:
    if output.is_dir():
        raise UnetkitError(f"-o {output} is a folder; give the package file to write, e.g. -o {output / 'model.zip'}")
    if output.suffix.lower() != ".zip":
        raise UnetkitError(f"-o {output}: a bioimage.io package is a .zip file; give e.g. -o {output.stem}.zip")
    if not output.parent.is_dir():
        raise UnetkitError(f"-o {output}: folder {output.parent} does not exist; create it first")


def export_bioimageio(checkpoint: str | Path, output: str | Path, options: PackageOptions | None = None) -> Path:
    """Write the bioimage.io model package of a unetkit checkpoint to `output` (a .zip); returns its path.

    Input: raw `(batch, channel, y, x)` pixels; output: class probabilities `(batch, K, y', x')` (K = 1,
    p(foreground), for a one-logit binary model), y' = y - 2 * margin.
    """
    options = options or PackageOptions()
    checkpoint, output = Path(checkpoint), Path(output)
    _check_output(output)
    for module in ("bioimageio.spec", "onnx", "onnxruntime"):  # before the slow part: say how to install at once
        describe.require(module)
    from bioimageio.spec import save_bioimageio_package

    v = describe.spec()
    name = options.name or default_name(checkpoint)
    people = _people(options, name)
    contents = load_checkpoint(checkpoint)
    net, cfg = model_from_checkpoint(contents, str(checkpoint))
    net.eval()
    out_channels = contents["out_channels"]
    cfg, summary = run_facts(checkpoint, cfg)
    with tempfile.TemporaryDirectory(prefix="unetkit-package-") as tmp:
        folder = Path(tmp)
        onnx_path = export_model(checkpoint, folder / "weights.onnx", "onnx", opset=options.opset)
        ts_path = export_model(checkpoint, folder / "weights.torchscript.pt", "torchscript")
        sample_path = find_sample(cfg, options.sample)
        image = fit_to_network(raw_pixels(sample_path, cfg.data.channels), net)  # (h, w, C)
        test_in, test_out = reference_tensors(image, cfg, ts_path.read_bytes(), out_channels)
        np.save(folder / "test_input.npy", test_in)
        np.save(folder / "test_output.npy", test_out)
        Image.fromarray(cover(image, test_out, cfg, net.margin)).save(folder / "cover.png")
        # the test tensors as pictures for people: (C, h, w) raw pixels, (K', h', w') probabilities
        tifffile.imwrite(folder / "sample_input.tif", test_in[0], photometric="minisblack")
        tifffile.imwrite(folder / "sample_output.tif", test_out[0], photometric="minisblack")
        (folder / "README.md").write_text(readme(cfg, net, summary, name, out_channels))
        found = f" The test image is {sample_path.name}." if sample_path is not None else ""
        model = v.ModelDescr(
            name=name, description=options.description or f"{network_text(cfg)} segmenting "
            f"{', '.join(cfg.data.classes)}.{found}", **people,
            cite=describe.citations(cfg), tags=TAGS,
            documentation=v.FileDescr(source=folder / "README.md"), covers=[v.FileDescr(source=folder / "cover.png")],
            inputs=[describe.input_tensor(cfg, net, image.dtype, folder / "test_input.npy",
                                          folder / "sample_input.tif")],
            outputs=[describe.output_tensor(cfg, net, out_channels, folder / "test_output.npy",
                                            folder / "sample_output.tif")],
            weights=v.WeightsDescr(
                torchscript=v.TorchscriptWeightsDescr(source=ts_path, pytorch_version=v.Version(torch.__version__)),
                onnx=v.OnnxWeightsDescr(source=onnx_path, opset_version=options.opset, parent="torchscript",
                                        comment="exported by unetkit from the same checkpoint, checked against it")))
        save_bioimageio_package(model, output_path=output)
    return output


def _people(options: PackageOptions, name: str) -> dict[str, Any]:
    """The `license` and `authors` fields, checked with the spec's own types before any slow work: a bad
    licence id, author or name is one line naming the option."""
    v = describe.spec()
    try:
        licence = v.LicenseId(options.license)
    except ValueError:  # pydantic's ValidationError, listing every SPDX id
        raise UnetkitError(f"--license {options.license!r} is not an SPDX licence id; use e.g. MIT, CC-BY-4.0 "
                           "or Apache-2.0 (https://spdx.org/licenses)") from None
    authors = []
    for author in options.authors or (_default_author(),):
        try:
            authors.append(v.Author(name=author))
        except ValueError:
            raise UnetkitError(f"--author {author!r}: bioimage.io takes a person's name without '/'") from None
    if not re.fullmatch(r"[A-Za-z0-9_+\- ()]{5,128}", name):
        raise UnetkitError(f"--name {name!r}: bioimage.io names are 5 to 128 letters, digits, spaces or _+-()")
    return {"license": licence, "authors": authors}
