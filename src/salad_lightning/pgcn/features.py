"""P-GCN's node features, pooled from a video's feature sequence (numpy).

A proposal ``[s, e]`` is given in feature-index units (feature ``i`` is centred at index
``i``; ``data/mapping.py::TimeMapping.to_index`` converts seconds). Its two features:

- **activity**: the mean of the sequence over ``[s, e]``, (C,);
- **completeness**: the means over the start part ``[s - 0.5 L, s]``, the course
  ``[s, e]`` and the end part ``[e, e + 0.5 L]`` (``L = e - s``), concatenated, (3C,).
  ``0.5`` is P-GCN's ``starting_ratio`` / ``ending_ratio``; the three parts with one
  piece each are its structured temporal pyramid ``(1, 1, 1)``.

**Mean over an interval** ``[a, b]`` (:func:`interval_means`): the integral of the
piecewise-linear interpolant of the sequence (value ``x[i]`` at index ``i``), held
constant beyond its ends (``x[0]`` before index 0, ``x[T-1]`` after ``T-1``), divided
by ``b - a``. At zero length it is the limit: the interpolated value at the point. The
rule is exact for any real boundaries, so a proposal that moves a little changes its
feature a little; it is computed for all proposals at once from prefix sums of the
trapezoid areas (in float64; the result has the input's float dtype).

**Where P-GCN's code differs** (``ops/I3D_Pooling.py``). P-GCN pools I3D features it
precomputed on 64-frame clips every 8 frames, with frame numbers: a span
``[start, end]`` takes the features from ``floor(start / 8)`` to
``ceil((end - 64) / 8)`` (the clips inside the span; the range stops before the
video's last feature) and **max-pools** them element-wise; when that range is empty it takes
the single feature ``floor(start / 8)``. So P-GCN's feature is a max over whole clips,
a step function of the boundaries; ours is the exact mean of the interpolated
sequence. P-GCN computes the same three parts, with the part lengths rounded down to
whole frames (``int(0.5 * L)``) and the start and end parts cut at the video's first
and last frame; :func:`pool_proposal_features` cuts them at ``bounds`` when given (pass
the video's extent in index units, ``(to_index(0), to_index(duration))``, for P-GCN's
setting). P-GCN's training and test code round the part boundaries slightly
differently (training starts the proposal one frame later); one rule serves both here.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ENDING_RATIO", "STARTING_RATIO", "interval_means", "pool_proposal_features"]

STARTING_RATIO = 0.5  # P-GCN's starting_ratio: the start part is half the proposal's length
ENDING_RATIO = 0.5  # P-GCN's ending_ratio


class _Sequence:
    """The interpolant of one (T, C) sequence: its running integral and its values."""

    def __init__(self, x: np.ndarray) -> None:
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"expected a (T, C) feature sequence with T >= 1, found {x.shape}")
        self.x = x.astype(np.float64, copy=False)
        self.last = x.shape[0] - 1
        # prefix[i] = integral of the interpolant over [0, i]: sums of trapezoids
        trapezoids = 0.5 * (self.x[:-1] + self.x[1:])
        self.prefix = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(trapezoids, axis=0)])

    def _locate(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(t clamped to [0, T-1], the step i it lies in, the fraction r in [0, 1], x[i+1] - x[i])."""
        tc = np.clip(t, 0.0, float(self.last))
        i = np.minimum(np.floor(tc).astype(np.int64), max(self.last - 1, 0))
        j = np.minimum(i + 1, self.last)  # == i only when T == 1
        return tc, i, (tc - i)[:, None], self.x[j] - self.x[i]

    def value(self, t: np.ndarray) -> np.ndarray:
        _, i, r, d = self._locate(t)
        return self.x[i] + r * d

    def integral(self, t: np.ndarray) -> np.ndarray:
        """Integral of the (constantly extended) interpolant over [0, t], (M, C)."""
        _, i, r, d = self._locate(t)
        inside = self.prefix[i] + r * self.x[i] + 0.5 * r * r * d
        before = np.minimum(t, 0.0)[:, None] * self.x[0]
        after = np.maximum(t - self.last, 0.0)[:, None] * self.x[self.last]
        return inside + before + after

    def means(
        self,
        a: np.ndarray,
        b: np.ndarray,
        integral_a: np.ndarray | None = None,
        integral_b: np.ndarray | None = None,
    ) -> np.ndarray:
        """Means over [a, b] (M,) -> (M, C); the integrals at a and b when already known."""
        ia = self.integral(a) if integral_a is None else integral_a
        ib = self.integral(b) if integral_b is None else integral_b
        length = (b - a)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = (ib - ia) / length
        return np.where(length > 0, mean, self.value(a))


def _float_dtype(x: np.ndarray) -> np.dtype:
    return x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float64)


def _check_intervals(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"{what}: expected two (M,) arrays, found {a.shape} and {b.shape}")
    bad = ~(np.isfinite(a) & np.isfinite(b) & (a <= b))
    if bad.any():
        j = int(np.argmax(bad))
        raise ValueError(
            f"{what} {j}: expected finite [start, end] with start <= end, found "
            f"[{a[j]!r}, {b[j]!r}]"
        )


def interval_means(x: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Means of the sequence ``x`` (T, C) over the intervals ``[start, end]`` (M,) -> (M, C).

    The rule is the module's: the integral of the piecewise-linear interpolant (held
    constant beyond the sequence's ends) divided by the length; the interpolated value
    at the point for a zero-length interval. Index units; ``start <= end`` required.
    """
    x = np.asarray(x)
    a = np.asarray(start, dtype=np.float64)
    b = np.asarray(end, dtype=np.float64)
    _check_intervals(a, b, "interval")
    return _Sequence(x).means(a, b).astype(_float_dtype(x), copy=False)


def pool_proposal_features(
    x: np.ndarray,
    segments: np.ndarray,
    *,
    starting_ratio: float = STARTING_RATIO,
    ending_ratio: float = ENDING_RATIO,
    bounds: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """P-GCN's (activity (P, C), completeness (P, 3C)) features of ``segments`` (P, 2).

    ``segments`` in feature-index units, ``start <= end``. Completeness is
    ``[start part, course, end part]`` on the channel axis; the start part is
    ``[s - starting_ratio * L, s]``, the end part ``[e, e + ending_ratio * L]``. With
    ``bounds = (lo, hi)`` the start part begins no earlier than ``lo`` and the end part
    ends no later than ``hi`` (P-GCN cuts them at the video's ends; a part that the cut
    leaves empty becomes the value at the proposal's boundary). The course is never
    cut: the activity feature is the mean over the whole proposal.
    """
    x = np.asarray(x)
    seg = np.asarray(segments, dtype=np.float64)
    if seg.size == 0:
        seg = seg.reshape(0, 2)
    if seg.ndim != 2 or seg.shape[1] != 2:
        raise ValueError(f"expected segments (P, 2), found {seg.shape}")
    s, e = seg[:, 0], seg[:, 1]
    _check_intervals(s, e, "proposal")
    length = e - s
    before, after = s - starting_ratio * length, e + ending_ratio * length
    if bounds is not None:
        lo, hi = bounds
        before = np.minimum(np.maximum(before, lo), s)
        after = np.maximum(np.minimum(after, hi), e)
    seq = _Sequence(x)
    at_s, at_e = seq.integral(s), seq.integral(e)
    course = seq.means(s, e, at_s, at_e)
    start_part = seq.means(before, s, integral_b=at_s)
    end_part = seq.means(e, after, integral_a=at_e)
    completeness = np.concatenate([start_part, course, end_part], axis=1)
    dtype = _float_dtype(x)
    return course.astype(dtype, copy=False), completeness.astype(dtype, copy=False)
