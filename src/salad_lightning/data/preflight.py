"""Pre-flight: every feature file a run will read, checked before the first training step.

For each video of each split used (train, validation, test, predict), every file is

- present (missing ones were already skipped or refused when the split was built),
- readable: a ``.npy`` header with the right magic string, a 2-D non-empty float
  array with ``feature_dim`` channels, and as many bytes as the header promises
  (a truncated download is caught here, not epochs later in a loader worker);
  ``.pt`` / ``.csv`` files are loaded whole,
- finite: no NaN or Inf anywhere, the first bad value given at its step in the whole
  video.

The check reads each file whole, sequentially, in a few threads (numpy releases the GIL
while it reads and tests), one ``isfinite`` pass per file; a non-finite value is then
located exactly. Its cost is measured in ``experiments/benchmarks/data.py``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from salad_lightning.data.features import (
    FeatureSource,
    first_non_finite,
    npy_header,
    read_feature_file,
)


@dataclass(frozen=True)
class FileProblem:
    """A feature file the run cannot use."""

    split: str
    video_id: str
    path: str
    problem: str

    def message(self) -> str:
        return f"{self.path} (video {self.video_id}, {self.split}): {self.problem}"


def _check_npy(path: Path, feature_dim: int | None, values: bool) -> tuple[str | None, int]:
    """(problem, channels) of one ``.npy`` file."""
    try:
        shape, dtype, offset = npy_header(path)
    except (ValueError, OSError, EOFError, SyntaxError) as err:
        return f"not a readable .npy file ({err})", 0
    if len(shape) != 2 or 0 in shape:
        return f"expected a non-empty 2-D (T, C) array, found shape {shape}", 0
    if dtype.kind != "f":
        return f"expected floating-point features, found dtype {dtype}", shape[1]
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    size = os.path.getsize(path)
    if size < expected:
        return (
            f"truncated: the header promises {shape} {dtype} ({expected - offset} bytes of "
            f"data) but the file holds {max(size - offset, 0)}",
            shape[1],
        )
    if values:
        # one sequential read of the whole file: faster from disk than a memory map's
        # page faults (experiments/benchmarks/data.py --parts preflight)
        x = np.load(path, allow_pickle=False)
        bad = first_non_finite(x)
        if bad is not None:
            return f"features must be finite, found {bad}", shape[1]
    return None, shape[1]


def _check_loaded(path: Path, values: bool) -> tuple[str | None, int]:
    try:
        x = np.asarray(read_feature_file(path))
    except Exception as err:  # noqa: BLE001 - any reader failure is this file's problem
        return f"cannot be read ({type(err).__name__}: {err})", 0
    if x.ndim != 2 or 0 in x.shape:
        return f"expected a non-empty 2-D (T, C) array, found shape {x.shape}", 0
    if values:
        bad = first_non_finite(np.asarray(x, dtype=np.float32))
        if bad is not None:
            return f"features must be finite, found {bad}", x.shape[1]
    return None, x.shape[1]


def check_video(
    source: FeatureSource, video_id: str, *, split: str, values: bool = True
) -> list[FileProblem]:
    """Problems of one video's feature file(s) (RGB and flow: each file, then the sum)."""
    problems, channels = [], 0
    for path in source.paths(video_id):
        if path.suffix.lower() == ".npy":
            problem, c = _check_npy(path, source.feature_dim, values)
        else:
            problem, c = _check_loaded(path, values)
        channels += c
        if problem is not None:
            problems.append(FileProblem(split, video_id, str(path), problem))
    if not problems and source.feature_dim is not None and channels != source.feature_dim:
        where = " + ".join(str(p) for p in source.paths(video_id))
        problems.append(
            FileProblem(
                split,
                video_id,
                where,
                f"expected feature_dim {source.feature_dim}, found {channels} channels",
            )
        )
    return problems


def check_split(
    source: FeatureSource,
    video_ids: Sequence[str],
    *,
    split: str,
    values: bool = True,
    workers: int | None = None,
) -> list[FileProblem]:
    """Every problem of the split's files, in video order (threads read in parallel)."""
    # reading is bound by the disk, not the cores: a few more threads than cores keep
    # more reads in flight (4 threads: 26.9 s, 2: 29.9 s for 15.8 GB cold, 2 cores)
    workers = workers or min(8, 2 * (os.cpu_count() or 1))
    if workers <= 1 or len(video_ids) < 2:
        found = [check_video(source, v, split=split, values=values) for v in video_ids]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            found = list(
                pool.map(lambda v: check_video(source, v, split=split, values=values), video_ids)
            )
    return [p for ps in found for p in ps]
