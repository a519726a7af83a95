"""Network builders: each `arch` option names one of these through `_target_`."""
