"""Lightning callbacks that each `callbacks` option lists by `_target_`."""
