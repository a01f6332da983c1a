"""The physical size of a pixel, read from the file an image came in and carried into what is written about it.

Three places hold it: OME-TIFF's OME-XML (`Pixels` `PhysicalSizeX/Y` with `PhysicalSizeX/YUnit`, micrometres when
no unit is given), OME-Zarr's multiscales metadata (the `scale` of the chosen level's coordinateTransformations,
the unit on its axes), and the TIFF resolution tags (pixels per inch, centimetre, ...). Without one, object tables
stay in pixels: a guessed size would be worse than none. The screen defaults 72 and 96 pixels per inch that many
programs write into every TIFF say nothing about the sample and are ignored.

OME-TIFF names units by symbol (`µm`), OME-Zarr by UDUNITS name (`micrometer`); `PixelSize.unit` is the symbol
and `ngff_unit` gives the name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# symbol -> OME-Zarr (UDUNITS) name, for the lengths a microscope or a scanner uses
UNIT_NAMES = {"pm": "picometer", "Å": "angstrom", "nm": "nanometer", "µm": "micrometer", "mm": "millimeter",
              "cm": "centimeter", "m": "meter", "in": "inch"}
_SYMBOLS = {**{name: symbol for symbol, name in UNIT_NAMES.items()}, "um": "µm", "μm": "µm", "micron": "µm",
            "microns": "µm", "nanometre": "nm", "micrometre": "µm", "millimetre": "mm", "metre": "m"}
SCREEN_DPI = (72.0, 96.0)  # resolution tags of this value in inches are a program's default, not a measurement
_TIFF_UNITS = {2: 25400.0, 3: 10000.0, 4: 1000.0, 5: 1.0}  # ResolutionUnit tag -> micrometres per unit


@dataclass(frozen=True)
class PixelSize:
    """Height and width of one pixel in `unit` (a symbol such as `µm`); y first, as in (Y, X) arrays."""

    y: float
    x: float
    unit: str = "µm"

    def scaled(self, factor_y: float, factor_x: float) -> PixelSize:
        """The pixel size of a level that is `factor` times coarser (a pyramid level, a strided read)."""
        return PixelSize(self.y * factor_y, self.x * factor_x, self.unit)

    @property
    def ngff_unit(self) -> str | None:
        """The unit's OME-Zarr name (`micrometer`), None when OME-Zarr has no name for it."""
        return UNIT_NAMES.get(self.unit)

    def per_centimetre(self) -> tuple[float, float] | None:
        """(x, y) pixels per centimetre, the TIFF resolution tags' form; None for a unit that is not a length."""
        metres = {"pm": 1e-12, "Å": 1e-10, "nm": 1e-9, "µm": 1e-6, "mm": 1e-3, "cm": 1e-2, "m": 1.0, "in": 0.0254}
        if self.unit not in metres:
            return None
        return 0.01 / (self.x * metres[self.unit]), 0.01 / (self.y * metres[self.unit])


def unit_symbol(unit: str | None) -> str:
    """`µm` for `micrometer`, `um`, `µm` ...; an unknown unit is kept as written."""
    if not unit:
        return "µm"  # the OME default
    return _SYMBOLS.get(unit.strip(), unit.strip())


def from_ome_xml(pixels: dict[str, Any]) -> PixelSize | None:
    """From the `Pixels` element of OME-XML as `tifffile.xml2dict` gives it; None unless both sizes are there."""
    try:
        y, x = float(pixels["PhysicalSizeY"]), float(pixels["PhysicalSizeX"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (y > 0 and x > 0):
        return None
    unit = unit_symbol(pixels.get("PhysicalSizeXUnit"))
    if unit_symbol(pixels.get("PhysicalSizeYUnit", unit)) != unit:
        return None  # rows and columns in different units: nothing downstream could use it
    return PixelSize(y, x, unit)


def from_tiff_tags(resolution: tuple[float, float], resolution_unit: int) -> PixelSize | None:
    """From a page's `(x, y)` pixels per unit and its ResolutionUnit tag (2 inch, 3 cm, 4 mm, 5 µm), in µm."""
    if resolution_unit not in _TIFF_UNITS:
        return None
    x_res, y_res = (float(v) for v in resolution)
    if x_res <= 0 or y_res <= 0 or (resolution_unit == 2 and x_res in SCREEN_DPI and y_res in SCREEN_DPI):
        return None
    micrometres = _TIFF_UNITS[resolution_unit]  # per unit of the tag
    return PixelSize(micrometres / y_res, micrometres / x_res, "µm")


def from_ngff(axes: list[dict[str, Any]] | list[str], scale: list[float]) -> PixelSize | None:
    """From OME-Zarr axes (names, with units from version 0.4 on) and the scale of one level, None without a
    unit on the y and x axes (a scale without a unit is only a ratio between levels)."""
    named = [a if isinstance(a, dict) else {"name": a} for a in axes]
    names = [str(a.get("name", "")).lower() for a in named]
    if "y" not in names or "x" not in names or len(scale) != len(names):
        return None
    y, x = named[names.index("y")], named[names.index("x")]
    if not y.get("unit") or not x.get("unit") or unit_symbol(y["unit"]) != unit_symbol(x["unit"]):
        return None
    return PixelSize(float(scale[names.index("y")]), float(scale[names.index("x")]), unit_symbol(x["unit"]))
