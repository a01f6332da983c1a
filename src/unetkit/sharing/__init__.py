"""Sharing trained models: bioimage.io model packages (`unetkit export --format bioimageio`)."""
