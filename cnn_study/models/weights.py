"""Loading weights from a local file into a network, tolerating a differently sized head."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnn_study.errors import CnnStudyError

log = logging.getLogger(__name__)

# Prefixes that wrap a whole network's keys: DataParallel/DDP, torch.compile, other trainers.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")
# An ImageClassifier checkpoint keeps its network under `net.`, beside other state.
_CLASSIFIER_PREFIX = "net."


def read_weights_file(path: str | Path) -> Any:
    """The object stored in a weights file or checkpoint, on the CPU."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CnnStudyError(f"weights file {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise CnnStudyError(f"cannot read weights file {path}: {error}") from None


def network_state(loaded: Any, path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a state dict, or of a checkpoint's `state_dict`, prefixes removed."""
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
            break
    if not isinstance(loaded, dict) or not loaded:
        raise CnnStudyError(f"{path} holds no state dict (a dict of tensors)")
    state = {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
    if any(k.startswith(_CLASSIFIER_PREFIX) for k in state):
        prefix = _CLASSIFIER_PREFIX
        return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    for prefix in _WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
    return state


def load_weights(network: nn.Module, path: str | Path, loaded: Any = None) -> list[str]:
    """Load `path` into `network`; tensors whose shape differs (a head) are dropped and named.

    Every other tensor of the network must be in the file: a file for another architecture
    fails here with the missing keys, instead of training from a half-loaded network.
    `loaded` is the file's content when the caller has read it already.
    Returns the names of the dropped tensors.
    """
    own = network.state_dict()
    if loaded is None:
        loaded = read_weights_file(path)
    state = {k: v for k, v in network_state(loaded, path).items() if k in own}
    dropped = [k for k, v in state.items() if v.shape != own[k].shape]
    for key in dropped:
        del state[key]
    missing = [k for k in own if k not in state and k not in dropped]
    if missing:
        raise CnnStudyError(
            f"{path} does not fit {type(network).__name__}: {len(missing)} tensors missing, "
            f"e.g. {missing[:5]}; is it a file of the architecture chosen with arch=?"
        )
    network.load_state_dict(state, strict=False)
    if dropped:
        log.info("loaded %s; kept the new head, dropped %s (shape differs)", path, dropped)
    else:
        log.info("loaded %s (%d tensors)", path, len(state))
    return dropped
