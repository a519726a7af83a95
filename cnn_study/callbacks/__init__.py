"""Lightning callbacks: those each `callbacks` option lists by `_target_`, and the
safeguards (`safeguards.py`) that `train.build` adds to every run."""

from cnn_study import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "EMA": "ema",
    "EvaluationFigures": "evaluation_figures",
    "GradCAMFigure": "gradcam",
    "FirstConvGradientMonitor": "grad_monitor",
    "RngState": "safeguards",
    "DivergenceGuard": "safeguards",
    "FrozenBatchNorm": "safeguards",
    "publish_figure": "figure_output",
})  # fmt: skip
