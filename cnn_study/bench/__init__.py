"""Benchmarks that print figures and ratios (speed and memory targets are checked here, not
in unit tests): `python -m cnn_study.bench` (training: Lightning vs a hand loop vs a
DataLoader; `--late-from` for late training states), `python -m cnn_study.bench.stream`
(image folders in memory vs streamed)."""
