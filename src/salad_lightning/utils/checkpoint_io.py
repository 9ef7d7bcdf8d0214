"""Checkpoints written atomically: a crash while saving never leaves a broken file."""

from __future__ import annotations

from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from salad_lightning.utils.io import atomic_writer


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file in the target folder, then ``os.replace``."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path, storage_options: Any = None
    ) -> None:
        with atomic_writer(path, "wb") as fh:
            torch.save(checkpoint, fh)
