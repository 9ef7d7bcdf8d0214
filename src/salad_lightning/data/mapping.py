"""Seconds <-> feature-index units, in one place (docs/method.md §1).

Every mapping the project uses is affine: ``t_sec = index * scale + offset``,
clamped to ``[0, duration]``. The data layer converts ground truth from seconds
to index units with :meth:`TimeMapping.to_index`; post-processing converts
predictions back with :meth:`TimeMapping.to_seconds` (or its vectorised twin
:func:`index_to_seconds` on a batch of tensors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TimeMapping:
    """Affine map between feature index and seconds for one video."""

    scale: float  # seconds per feature step
    offset: float  # seconds at index 0 (the centre of the first feature)
    duration: float  # video duration in seconds (clamp bound)

    @classmethod
    def from_clip(
        cls, *, fps: float, stride: int, window: int, duration: float, downsample: int = 1
    ) -> TimeMapping:
        """Clip features: feature ``i`` covers frames ``[i*stride, i*stride + window)``.

        ``downsample=k`` averages k consecutive clips; the averaged feature covers
        frames ``[i*k*stride, i*k*stride + (k-1)*stride + window)``, so the effective
        stride is ``k*stride`` and the effective window ``window + (k-1)*stride``.
        """
        if fps <= 0:
            raise ValueError(f"fps must be > 0, found {fps}")
        eff_stride = stride * downsample
        eff_window = window + (downsample - 1) * stride
        return cls(scale=eff_stride / fps, offset=0.5 * eff_window / fps, duration=float(duration))

    @classmethod
    def from_resize(cls, *, length: int, duration: float) -> TimeMapping:
        """Resized features: step ``i`` covers ``[i, i+1) * duration / length``."""
        if length <= 0:
            raise ValueError(f"resize length must be > 0, found {length}")
        step = float(duration) / length
        return cls(scale=step, offset=0.5 * step, duration=float(duration))

    def to_index(self, seconds: Any) -> np.ndarray:
        """Seconds -> (float) feature index. Not clamped: the data layer checks bounds."""
        return (np.asarray(seconds, dtype=np.float64) - self.offset) / self.scale

    def to_seconds(self, index: Any) -> np.ndarray:
        """(Float) feature index -> seconds, clamped to ``[0, duration]``."""
        sec = np.asarray(index, dtype=np.float64) * self.scale + self.offset
        return np.clip(sec, 0.0, self.duration)

    def shifted(self, start: int) -> TimeMapping:
        """The mapping of a crop whose index 0 is this mapping's index ``start``."""
        return TimeMapping(self.scale, self.offset + start * self.scale, self.duration)


def index_to_seconds(index, scale, offset, duration):
    """Vectorised :meth:`TimeMapping.to_seconds` for torch tensors on any device.

    ``index`` is (B, ...) and ``scale``, ``offset``, ``duration`` are (B,) tensors.
    """
    shape = (-1,) + (1,) * (index.dim() - 1)
    sec = index * scale.view(shape) + offset.view(shape)
    return sec.clamp(min=0.0).minimum(duration.view(shape))
