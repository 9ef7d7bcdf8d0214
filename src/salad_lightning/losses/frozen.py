"""The ``pruning=frozen`` ablation (docs/method.md §7): alpha fixed by an earlier run.

A trained SALAD run writes, for every training video, the alpha of Algorithm 1 on
the whole video (steps x ground truths) to an ``.npz`` file (:func:`export_alpha`,
:func:`save_frozen_alpha`). A new model is then trained from scratch with that alpha
instead of re-running the pruning; crops read their window of it (:class:`FrozenAlpha`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from salad_lightning.data.batch import Batch
from salad_lightning.losses.matching import greedy_match
from salad_lightning.utils.io import atomic_writer

_PREFIX = "video:"


def save_frozen_alpha(path: str | Path, alphas: dict[str, np.ndarray]) -> Path:
    """Write ``{video_id: (T, N) bool}`` to ``path`` (npz, written atomically)."""
    path = Path(path)
    # keys are prefixed: a video id such as "file" must not collide with savez's arguments
    arrays = {f"{_PREFIX}{vid}": np.asarray(a, dtype=bool) for vid, a in alphas.items()}
    with atomic_writer(path, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    return path


@torch.no_grad()
def export_alpha(
    net: nn.Module, batches: Iterable[Batch], *, max_offset: float | torch.Tensor, mu: float
) -> dict[str, np.ndarray]:
    """Algorithm 1's alpha (SALAD's own pruning) for every video of ``batches`` (whole
    videos), with the trained network's scores and segments: ``{video_id: (T, N) bool}``
    over the video's training targets."""
    alphas = {}
    for batch in batches:
        out, segments = net.proposals(batch.features, batch.lengths_host, max_offset)
        match = greedy_match(
            segments,
            torch.sigmoid(out.score_logits),
            batch.gt_segments,
            batch.gt_mask,
            batch.frame_mask,
            mu,
        )
        for i, meta in enumerate(batch.meta):
            n = int(batch.gt_mask[i].sum())
            t = int(batch.lengths_host[i])
            alphas[meta["video_id"]] = match.alpha[i, :t, :n].cpu().numpy()
    return alphas


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

    def batch_alpha(self, batch: Batch, device: torch.device) -> torch.Tensor:
        """(B, T, N) alpha of the batch's crops and kept ground truths."""
        b, t = batch.frame_mask.shape
        n = batch.gt_mask.shape[1]
        out = np.zeros((b, t, n), dtype=bool)
        for i, meta in enumerate(batch.meta):
            vid = meta["video_id"]
            if vid not in self.alphas:
                raise KeyError(f"video {vid!r} has no frozen alpha in the loaded file")
            full = self.alphas[vid]
            start = int(meta["crop_start"])
            idx = np.asarray(meta["gt_index"], dtype=int)
            window = full[start : start + t][:, idx]
            out[i, : window.shape[0], : window.shape[1]] = window
        return torch.from_numpy(out).to(device, non_blocking=True)
