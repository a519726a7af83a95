"""Checkpoints written atomically: a checkpoint is complete under its final name or absent.

Lightning's `TorchCheckpointIO` writes the serialized checkpoint straight to its final
name: a full disk leaves a truncated `best-epochNN.ckpt` there (`torch.load` fails on it),
and after space is freed `ModelCheckpoint` writes `-v1` beside it. Here the bytes go to a
temporary file in the same folder, renamed when complete (`rundir.write_bytes_atomic`); a
full disk ends the run `failed` with one line naming the path and the space left.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from cnn_study.rundir import write_bytes_atomic


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose files appear whole or not at all."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(target, buffer.getvalue())
