"""Generated bad inputs (datasets, configs, checkpoints, CLI arguments) and the one-line errors they get."""
