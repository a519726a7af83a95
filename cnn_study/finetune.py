"""Freeze policies: functions `network → network` that choose what trains, by structure."""

from __future__ import annotations

from torch import nn


def train_all(network: nn.Module) -> nn.Module:
    """Train every parameter: the small CNNs from scratch, or full fine-tuning."""
    network.requires_grad_(True)
    return network
