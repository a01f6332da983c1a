"""Data: reading images and masks, mask encodings, datasets, augmentation, tiling, demo data."""
