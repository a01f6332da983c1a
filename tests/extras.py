"""Optional extras in tests: skipped with a reason on a developer's machine, a failure in CI.

`pytest.importorskip` skips silently wherever a package is missing, so a CI image that lost `onnxruntime` would
pass with the export tests never run. CI (`CI=true`) installs every extra the tests use; there a missing one fails.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def require(module: str) -> ModuleType:
    """Import `module`, or skip the calling test module (fail it under `CI=true`) naming what is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        message = f"optional extra `{module}` is not installed ({error}); install with pip install -e '.[dev]'"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message, allow_module_level=True)
