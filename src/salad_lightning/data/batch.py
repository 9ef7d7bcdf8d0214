"""The batch: what :func:`~salad_lightning.data.dataset.collate_videos` returns and every
step (training, evaluation, prediction, export) reads (docs/design.md, "The batch")."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import Tensor


@dataclass
class Batch:
    """A padded batch of B videos (or training crops) with their targets.

    ``lengths_host`` stays on the CPU whatever the device of the rest: packing the GRU
    needs the lengths on the host, and reading them back from the device would make
    every training step wait for it.
    """

    features: Tensor  # (B, T, C) float32, zero padded
    frame_mask: Tensor  # (B, T) bool, False = padding
    lengths: Tensor  # (B,) int64
    gt_segments: Tensor  # (B, N, 2) float32, index units of this (cropped) sequence
    gt_labels: Tensor  # (B, N) int64, 0..K-1
    gt_mask: Tensor  # (B, N) bool, False = padding
    scale: Tensor  # (B,) float64: the sequence's TimeMapping (crop included)
    offset: Tensor  # (B,) float64
    duration: Tensor  # (B,) float64
    meta: list[dict[str, Any]]  # per video: ids, crop, the whole video's ground truth
    lengths_host: Tensor  # (B,) int64 on the CPU

    @property
    def size(self) -> int:
        return int(self.features.shape[0])

    def tensors(self) -> dict[str, Tensor]:
        return {name: getattr(self, name) for name in TENSOR_FIELDS}

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> Batch:
        """The tensors on ``device``; ``meta`` and ``lengths_host`` stay where they are."""
        moved = {k: v.to(device, non_blocking=non_blocking) for k, v in self.tensors().items()}
        return replace(self, **moved)

    def pin_memory(self) -> Batch:
        """What a DataLoader with ``pin_memory=True`` calls."""
        return replace(self, **{k: v.pin_memory() for k, v in self.tensors().items()})


# What moves to the device: every field but the two that stay on the host.
TENSOR_FIELDS = tuple(f.name for f in fields(Batch) if f.name not in ("meta", "lengths_host"))
