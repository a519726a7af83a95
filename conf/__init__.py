"""Hydra configs, shipped inside the package as ``cnn_study.conf`` (see pyproject.toml)."""
