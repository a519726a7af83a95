"""The training recipe beyond the network: batch mixing (MixUp/CutMix), learning-rate
warmup before a schedule, test-time augmentation. Each is one config group (`mixing`,
`scheduler`, `tta`) whose YAML names a function or class here; label smoothing is torch's
own `CrossEntropyLoss` (`loss`), the EMA of weights Lightning's (`cnn_study.callbacks.ema`)."""

from cnn_study.recipe.mixing import BatchMixing
from cnn_study.recipe.scheduling import warmup_then
from cnn_study.recipe.tta import FlipTTA

__all__ = ["BatchMixing", "FlipTTA", "warmup_then"]
