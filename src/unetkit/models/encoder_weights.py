"""Where an encoder's pretrained weights come from: smp's hub (named weights such as "imagenet") or a local
file (a state dict of the encoder, or of a torchvision / timm model with its keys).

The hub is asked only when it can answer: offline (no route to it within a second) it is not retried for
minutes by its client, and the error says how to pass a local file instead. smp is imported inside the functions.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import torch
from torch import Tensor, nn

from unetkit.errors import UnetkitError

_WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
T = TypeVar("T")


def is_weights_file(weights: str) -> bool:
    """A path rather than a named kind of weights ("imagenet", "ssl", ...)."""
    return weights.lower().endswith(_WEIGHT_SUFFIXES) or "/" in weights or os.sep in weights or Path(weights).exists()


def _hub_unreachable() -> str | None:
    """Why the Hugging Face Hub (smp's and timm's weights) is out of reach, or None. A 3 s connect fails in
    milliseconds without DNS, where the hub client retries ~23 s per file; behind a proxy only it can tell."""
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urlsplit(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=3.0).close()
    except OSError as err:
        return f"{url.hostname}: {err.strerror or err or type(err).__name__}"
    return None


def _network_errors() -> tuple[type[BaseException], ...]:
    """OSError covers urllib, requests and huggingface_hub's own errors; httpx's are separate."""
    found = [n for n in ("httpx2", "httpx") if importlib.util.find_spec(n) is not None]
    return (OSError, *(importlib.import_module(n).HTTPError for n in found))


@contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """The hub client's offline mode (answer from the cache, no request) for the block, then as it was.

    smp's `get_encoder` / `get_preprocessing_params` and timm's pretrained loading call `hf_hub_download`
    without `local_files_only` and offer no way to pass it, so the client's own switch,
    `huggingface_hub.constants.HF_HUB_OFFLINE` (read at every request), is the only one that reaches their
    downloads. It is process-wide: set only around the fetch, and restored even when the fetch fails.
    """
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = saved or offline
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def fetch_from_hub(fetch: Callable[[], T], encoder: str, weights: str) -> T:
    """Run `fetch` (which may download) and turn any download failure into one actionable line."""
    reason = _hub_unreachable()
    try:
        # Out of reach, the hub client answers from its cache at once: weights downloaded earlier still load.
        with _hub_offline(reason is not None):
            return fetch()
    except _network_errors() as err:
        short = reason or (str(err).strip().splitlines() or [type(err).__name__])[0][:100]
        raise UnetkitError(
            f"model.encoder_weights: {weights} weights for {encoder} cannot be downloaded here ({short}); download"
            f" them elsewhere and pass the file: --set model.encoder_weights=/path/to/{encoder}.pth"
        ) from None


def check_names(encoder: str, weights: str) -> None:
    """Unknown encoder, weight kind or file: one line saying what exists, before any network is built."""
    import difflib

    import segmentation_models_pytorch as smp
    import timm

    tu = encoder.startswith("tu-")
    if not (timm.is_model(encoder[3:]) if tu else encoder in smp.encoders.encoders):
        names = [f"tu-{n}" for n in timm.list_models()] if tu else smp.encoders.get_encoder_names()
        close = difflib.get_close_matches(encoder, names, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "e.g. resnet34, vgg16, tu-inception_v3"
        raise UnetkitError(f"model.encoder {encoder!r} is not an smp encoder nor tu-<timm model>; {hint}")
    if is_weights_file(weights) and not Path(weights).expanduser().is_file():
        raise UnetkitError(f"model.encoder_weights: file {weights} does not exist; give 'none', 'imagenet' or a file")
    if weights == "none" or is_weights_file(weights):
        return
    kinds = ["imagenet"] if tu else list(smp.encoders.encoders[encoder]["pretrained_settings"])
    if weights not in kinds:
        raise UnetkitError(f"model.encoder_weights {weights!r}: no such file, and {encoder} has pretrained weights "
                           f"{kinds} only; give one of them, 'none', or the path of a weights file")


def _norm_key(key: str) -> str:
    """Compare state-dict keys across wrappers: drop `module.` / `encoder.` / `model.` (DataParallel, smp's
    Unet, its timm wrapper) and read `_` as `.` (timm's feature extractor renames `stages.0` to `stages_0`)."""
    while key.startswith(("module.", "encoder.", "model.")):
        key = key.split(".", 1)[1]
    return key.replace("_", ".")


def _read_state(path: Path) -> Mapping[str, Tensor]:
    """A state dict from .safetensors or a torch file, bare or under "state_dict" / "model"."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a bad file fails inside the unpickler or parser in many ways; all mean the same
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:100]
        raise UnetkitError(f"model.encoder_weights: cannot read {path} ({reason}); give a state dict file") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UnetkitError(f"model.encoder_weights: {path} holds no state dict (name -> tensor)")
    return state


def load_encoder_weights(encoder: nn.Module, path: Path) -> None:
    """Load a local weights file into `encoder`, matching keys across wrappers (see `_norm_key`).

    A first convolution saved for 3 channels is adapted to the encoder's input channels the way smp and
    timm adapt pretrained weights (summed for 1 channel, repeated and rescaled for more). At least 90% of
    the encoder's weights must match, so a file for another architecture is refused rather than half used.
    """
    from timm.models import adapt_input_conv

    target = encoder.state_dict()
    by_norm: dict[str, str] = {}
    for key in target:
        by_norm[_norm_key(key)] = key if _norm_key(key) not in by_norm else ""  # "" marks an ambiguous name
    matched: dict[str, Tensor] = {}
    for key, value in _read_state(path).items():
        name = by_norm.get(_norm_key(key))
        if not name:
            continue
        want = target[name].shape
        if value.ndim == 4 and len(want) == 4 and value.shape[1] == 3 and want[1] != 3 and value.shape[2:] == want[2:]:
            value = adapt_input_conv(want[1], value)
        if value.shape == want:
            matched[name] = value
    weights = [k for k in target if not k.endswith("num_batches_tracked")]  # old torchvision files lack them
    hits = sum(k in matched for k in weights)
    if hits < 0.9 * len(weights):
        raise UnetkitError(f"model.encoder_weights: {path} matched {hits} of {len(weights)} weights of this "
                           "encoder (90% needed); is it a file for this model.encoder?")
    encoder.load_state_dict(matched, strict=False)
