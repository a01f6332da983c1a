"""Segmentation networks and the factory that builds them from the config."""

from unetkit.models.build import build_model
from unetkit.models.unet import UNet

__all__ = ["UNet", "build_model"]
