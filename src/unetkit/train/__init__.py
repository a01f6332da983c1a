"""Training: plain functions for one epoch, validation, checkpoints and the whole run."""
