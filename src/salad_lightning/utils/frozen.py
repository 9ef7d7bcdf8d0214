"""The ``pruning=frozen`` ablation (SPEC §7): alpha fixed by an earlier trained run.

A trained SALAD run writes, for every training video, the alpha of Algorithm 1 on
the whole video (steps x ground truths) to an ``.npz`` file
(:func:`save_frozen_alpha`). A new model is then trained from scratch with that
alpha instead of re-running the pruning; crops read their window of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

_PREFIX = "video:"


def save_frozen_alpha(path: str | Path, alphas: dict[str, np.ndarray]) -> Path:
    """Write ``{video_id: (T, N) bool}`` to ``path`` (npz, written atomically)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    # keys are prefixed: a video id such as "file" must not collide with savez's arguments
    arrays = {f"{_PREFIX}{vid}": np.asarray(a, dtype=bool) for vid, a in alphas.items()}
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    return path


class FrozenAlpha:
    """Per-video alpha of a trained run, sliced to each training crop."""

    def __init__(self, alphas: dict[str, np.ndarray]) -> None:
        self.alphas = alphas

    @classmethod
    def load(cls, path: str | Path) -> FrozenAlpha:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"frozen alpha file {path} not found: write it with a trained SALAD run "
                "(mode=export_alpha ckpt_path=...) and pass model.frozen_alpha_path=<file>"
            )
        with np.load(path) as data:
            return cls({k.removeprefix(_PREFIX): data[k] for k in data.files})

    def batch_alpha(self, batch: dict[str, Any], device: torch.device) -> torch.Tensor:
        """(B, T, N) alpha of the batch's crops and kept ground truths."""
        b, t = batch["frame_mask"].shape
        n = batch["gt_mask"].shape[1]
        out = np.zeros((b, t, n), dtype=bool)
        for i, meta in enumerate(batch["meta"]):
            vid = meta["video_id"]
            if vid not in self.alphas:
                raise KeyError(f"video {vid!r} has no frozen alpha in the loaded file")
            full = self.alphas[vid]
            start = int(meta["crop_start"])
            idx = np.asarray(meta["gt_index"], dtype=int)
            window = full[start : start + t][:, idx]
            out[i, : window.shape[0], : window.shape[1]] = window
        return torch.from_numpy(out).to(device, non_blocking=True)
