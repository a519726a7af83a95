"""Hydra sweeper plugin `hydra/sweeper=cnn_study`: a study's part × seed jobs, in rounds.

Kept light (Hydra imports every plugin at start-up); the work is in `cnn_study.study`."""
