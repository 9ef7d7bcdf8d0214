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
    FeatureFileError,
    FeatureSource,
    first_non_finite,
    npy_header,
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


def _check_npy_data(path: Path, values: bool) -> str | None:
    """What is wrong with a ``.npy`` file whose header the dataset has read: its dtype,
    fewer bytes than the header promises (an interrupted copy), non-finite values."""
    try:
        shape, dtype, offset = npy_header(path)
    except (ValueError, OSError, EOFError, SyntaxError) as err:
        return f"not a readable .npy file ({err})"
    if dtype.kind != "f":
        return f"expected floating-point features, found dtype {dtype}"
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    size = os.path.getsize(path)
    if size < expected:
        return (
            f"truncated: the header promises {shape} {dtype} ({expected - offset} bytes of "
            f"data) but the file holds {max(size - offset, 0)}"
        )
    if values:
        # one sequential read of the whole file: faster from disk than a memory map's
        # page faults (experiments/benchmarks/data.py --parts preflight)
        bad = first_non_finite(np.load(path, allow_pickle=False))
        if bad is not None:
            return f"features must be finite, found {bad}"
    return None


def check_video(
    source: FeatureSource, video_id: str, *, split: str, values: bool = True
) -> list[FileProblem]:
    """Problems of one video's feature file(s). Shapes and the dimension are the
    source's own checks (``.npy`` headers, or the whole ``.pt`` / ``.csv`` file)."""
    try:
        source.scan_shape(video_id)  # .npy: headers, shapes, feature_dim; else None
        if source.ext.lower() != ".npy":
            x = source.load(video_id)
            bad = first_non_finite(np.asarray(x, dtype=np.float32)) if values else None
            if bad is not None:
                where = " + ".join(str(p) for p in source.paths(video_id))
                raise FeatureFileError(where, video_id, f"features must be finite, found {bad}")
    except FeatureFileError as err:
        return [FileProblem(split, video_id, err.path, err.problem)]
    problems = []
    for path in source.paths(video_id) if source.ext.lower() == ".npy" else ():
        problem = _check_npy_data(path, values)
        if problem is not None:
            problems.append(FileProblem(split, video_id, str(path), problem))
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
