"""Loading torch files without running code from them: the weights-only unpickler, its allow-list, and one
line saying why a file was refused.

A `.pt` file is a pickle, and a pickle can call any function while it loads. Checkpoints and ensemble files
hold only tensors, numbers and strings, so they load with `torch.load(weights_only=True)` and an explicit,
empty allow-list; anything else a file asks for is named in the error and never imported.
"""

from __future__ import annotations

import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from unetkit.errors import UnetkitError

# What `torch.load` may rebuild beyond the weights-only unpickler's defaults (tensors, storages, dtypes,
# OrderedDict, lists, tuples, dicts, numbers, strings): nothing. unetkit checkpoints hold only those; python
# `random` state is a tuple of ints, numpy arrays are stored as tensors or lists. An entry here lets every
# file construct it, so only a plain data type may ever be added, never a function.
SAFE_GLOBALS: list[Any] = []
_BLOCKED = re.compile(r"GLOBAL ([\w.]+)")  # how the weights-only unpickler names what it refused to import
_DOTTED = re.compile(r"[A-Za-z_][\w.]*")


def _pickle_imports(path: Path) -> list[str]:
    """Names a plain (non-zip) pickle file imports, read opcode by opcode with pickletools: nothing is run."""
    names: list[str] = []
    strings: list[str] = []  # STACK_GLOBAL takes module and name from the two strings pushed before it
    try:
        with open(path, "rb") as f:
            for op, arg, _ in pickletools.genops(f):
                if op.name in ("GLOBAL", "INST"):
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL":
                    names.append(".".join(strings[-2:]))
                elif isinstance(arg, str):
                    strings.append(arg)
    except Exception:  # not a pickle, or damaged further on: report what was read up to there
        pass
    return [n for n in names if _DOTTED.fullmatch(n)]  # text that merely parses as opcodes names nothing


def _refused_import(path: Path, err: Exception) -> str | None:
    """What loading `path` would have had to import and call, when that is why the weights-only load failed."""
    if "Weights only load failed" not in str(err):
        return None
    found = _BLOCKED.search(str(err))
    if found:
        return found.group(1)
    if not zipfile.is_zipfile(path):  # the unpickler stopped before the import (e.g. at a newer opcode)
        names = _pickle_imports(path)
        return names[0] if names else None
    return None


def _reason(path: Path, err: Exception) -> str:
    """One short line saying why torch could not read a file."""
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            start = f.read(2)
        if start == b"PK":  # a zip archive without its directory at the end: cut short
            return "the file is truncated or damaged"
        if start[:1] != b"\x80":  # torch files are zip archives or pickles (protocol 2 or later)
            return "not a PyTorch file"
    if isinstance(err, EOFError):
        return "the file ends early"
    if "Weights only load failed" in str(err):
        return "unexpected pickle data"
    text = " ".join(re.sub(r"\[enforce fail at [^\]]*\]\s*\.?", "", str(err)).split())
    return text.split(". ")[0][:120] or type(err).__name__


def load_torch_file(path: str | Path, kind: str = "unetkit checkpoint", mmap: bool = False) -> Any:
    """`torch.load` that never runs code from the file, for checkpoints and ensemble files.

    Unpickling is weights-only with the explicit allow-list `SAFE_GLOBALS`, so a file that needs anything else
    to load (a pickled class or function, as in a crafted file that runs a command when unpickled) is refused
    before any of it runs, with one line naming what it asked for; an unreadable file gets one line as well.
    `mmap` maps the tensors instead of reading them (zip files only), for a quick look at the metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise UnetkitError(f"{kind} {path} does not exist")
    if path.stat().st_size == 0:
        raise UnetkitError(f"{path} is not a {kind} (the file is empty)")
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(SAFE_GLOBALS):
            warnings.simplefilter("ignore")  # e.g. torch's note on pickle protocols, printed before it refuses
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    # A file that is not a torch archive fails inside the unpickler in many ways (UnpicklingError, EOFError,
    # IndexError on a stray opcode, UnicodeDecodeError, ...); each means the same thing: not a checkpoint.
    except Exception as err:
        imported = _refused_import(path, err)
        if imported is not None:
            raise UnetkitError(f"{path}: unetkit refuses to run code from a file, and loading this one would call "
                               f"{imported}, which a {kind} never needs; only load checkpoints you trust"
                               ) from None
        raise UnetkitError(f"{path} is not a {kind} (cannot load it: {_reason(path, err)})") from None
