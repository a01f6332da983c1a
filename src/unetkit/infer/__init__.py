"""Inference: a predictor that handles any image size, folder prediction and evaluation."""
