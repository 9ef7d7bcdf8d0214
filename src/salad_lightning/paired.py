"""Rows of a sweep compared seed by seed with a reference row: the per-seed differences,
a paired t interval (the Student t quantile exact, no scipy) and a percentile bootstrap
over seeds, and the verdict they give. numpy only."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import mean, stdev

import numpy as np

from salad_lightning.sweeps import AggregateError, Row, Run


def t_cdf(t: float, df: int) -> float:
    """Student t distribution function for an integer ``df >= 1``, in closed form.

    With ``θ = atan(t / sqrt(df))`` and ``c = cos θ`` (Abramowitz & Stegun 26.7.3-4),
    ``A = P(-t < T < t)`` is ``(2/π)(θ + sin θ c (1 + (2/3)c² + (2·4)/(3·5)c⁴ + ...
    + (2·4···(df-3))/(3·5···(df-2)) c^(df-3)))`` for odd df (``2θ/π`` for df = 1) and
    ``sin θ (1 + (1/2)c² + (1·3)/(2·4)c⁴ + ... + (1·3···(df-3))/(2·4···(df-2)) c^(df-2))``
    for even df; ``A`` is odd in t and the distribution function is ``(1 + A) / 2``.
    """
    if df < 1 or int(df) != df:
        raise ValueError(f"df must be a positive integer, found {df}")
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    term = total = 1.0
    if df % 2:
        for j in range(1, (df - 3) // 2 + 1):
            term *= 2 * j / (2 * j + 1) * c2
            total += term
        inner = math.sin(theta) * math.cos(theta) * total if df > 1 else 0.0
        a = 2.0 / math.pi * (theta + inner)
    else:
        for j in range(1, (df - 2) // 2 + 1):
            term *= (2 * j - 1) / (2 * j) * c2
            total += term
        a = math.sin(theta) * total
    return 0.5 * (1.0 + a)


def t_quantile(q: float, df: int) -> float:
    """The ``q`` quantile of Student's t with ``df`` degrees of freedom (bisection on
    :func:`t_cdf`, to about 1e-12)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in (0, 1), found {q}")
    if q < 0.5:
        return -t_quantile(1.0 - q, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < q:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < q else (lo, mid)
        if hi - lo < 1e-12:
            break
    return 0.5 * (lo + hi)


def t_interval(diffs: list[float], level: float = 0.95) -> tuple[float, float]:
    """Paired t interval of the mean of ``diffs``: ``mean ± t(1 - (1-level)/2, n-1) sd/sqrt(n)``
    (nan, nan with fewer than 2 values)."""
    n = len(diffs)
    if n < 2:
        return math.nan, math.nan
    half = t_quantile(1.0 - (1.0 - level) / 2.0, n - 1) * stdev(diffs) / math.sqrt(n)
    return mean(diffs) - half, mean(diffs) + half


def bootstrap_interval(
    diffs: list[float], *, resamples: int = 10000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``diffs``: ``resamples`` draws of n
    values with replacement from ``numpy.random.default_rng(seed)``, then the
    ``(1-level)/2`` and ``1-(1-level)/2`` quantiles (numpy's linear rule) of their
    means (nan, nan with fewer than 2 values or no resamples)."""
    n = len(diffs)
    if n < 2 or resamples < 1:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(resamples, n))
    means = np.asarray(diffs, dtype=np.float64)[draws].mean(axis=1)
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return float(lo), float(hi)


def verdict(interval: tuple[float, float]) -> str:
    """ "better" when the interval lies above 0, "worse" below 0, else "not resolved"."""
    lo, hi = interval
    if lo > 0:
        return "better"
    if hi < 0:
        return "worse"
    return "not resolved"


@dataclass(frozen=True)
class Paired:
    """One row against the reference row, on the seeds both have."""

    key: str
    label: str
    seeds: tuple[int, ...]
    measure: str  # "average" or "mAP@0.5"
    diffs: tuple[float, ...]  # row - reference per seed, points of %
    mean: float
    t: tuple[float, float]
    bootstrap: tuple[float, float]

    @property
    def verdict(self) -> str:
        """The t interval's verdict; notes the bootstrap's where it differs."""
        by_t = verdict(self.t) if len(self.diffs) > 1 else "not resolved"
        by_boot = verdict(self.bootstrap) if len(self.diffs) > 1 else by_t
        if by_boot == by_t or math.isnan(self.bootstrap[0]):
            return by_t
        return f"{by_t} (bootstrap: {by_boot})"


def _measure(run: Run, measure: str) -> float:
    if measure == "average":
        return run.average
    return 100.0 * run.maps.get(float(measure.split("@", 1)[1]), math.nan)


def paired(
    rows: list[Row], reference: str, *, resamples: int = 10000, seed: int = 0
) -> list[Paired]:
    """Every row but ``reference`` (a row's key or label) against it, on the average and
    on mAP@0.5."""
    found = [r for r in rows if reference in (r.key, r.label)]
    if not found:
        names = [r.key if r.label == r.key else f"{r.key} ({r.label})" for r in rows]
        raise AggregateError(
            f"reference row {reference!r} is not among the rows: {'; '.join(names)}"
        )
    ref = {run.seed: run for run in found[0].runs}
    out = []
    for row in rows:
        if row is found[0]:
            continue
        runs = [run for run in row.runs if run.seed in ref]
        for measure in ("average", "mAP@0.5"):
            diffs = [_measure(run, measure) - _measure(ref[run.seed], measure) for run in runs]
            if not diffs or any(math.isnan(d) for d in diffs):
                continue
            t, boot = t_interval(diffs), bootstrap_interval(diffs, resamples=resamples, seed=seed)
            seeds = tuple(run.seed for run in runs)
            out.append(
                Paired(row.key, row.label, seeds, measure, tuple(diffs), mean(diffs), t, boot)
            )
    return out
