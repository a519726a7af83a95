"""Lightning callbacks: those each `callbacks` option lists by `_target_`, and the
safeguards (`safeguards.py`) that `train.build` adds to every run."""
