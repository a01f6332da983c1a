"""What every benchmark script needs: the repository root and the real datasets' folder."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the datasets beside the project, or wherever UNETKIT_DATASETS points
DATASETS = Path(os.environ.get("UNETKIT_DATASETS", ROOT.parent / "shared" / "datasets"))
