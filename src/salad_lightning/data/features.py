"""Reading one video's features from disk, and the two resamplings (docs/method.md §1).

Layout: one file per video, ``{feature_dir}/{prefix}{video_id}{ext}``, a (T, C) array:

- ``.npy``: opened memory-mapped; only the rows a sample needs are read;
- ``.pt``: a tensor (or array) saved with ``torch.save``;
- ``.csv``: BMN's layout, T rows of C comma-separated values, one header row allowed.

With ``rgb_dir`` and ``flow_dir`` instead of ``feature_dir`` the two files are read
and concatenated on the channel axis (RGB first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SUPPORTED_EXT = (".npy", ".pt", ".csv")


class FeatureFileError(ValueError):
    """A feature file that cannot be used: which file, which video, what is wrong."""

    def __init__(self, path: str | Path, video_id: str, problem: str) -> None:
        self.path, self.video_id, self.problem = str(path), video_id, problem
        super().__init__(f"{path} (video {video_id}): {problem}")


def npy_header(path: str | Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) from a ``.npy`` header, without reading the data.

    ValueError (or EOFError) when the file is not a ``.npy`` file.
    """
    with open(path, "rb") as fh:
        major, _ = np.lib.format.read_magic(fh)
        read = (
            np.lib.format.read_array_header_1_0
            if major == 1
            else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read(fh)
        return tuple(shape), np.dtype(dtype), fh.tell()


def npy_shape(path: str | Path) -> tuple[int, ...]:
    """The array shape stored in a ``.npy`` header, without reading the data."""
    return npy_header(path)[0]


def read_feature_file(path: str | Path) -> np.ndarray:
    """Open one feature file; ``.npy`` stays memory-mapped (nothing is read yet)."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext == ".npy":
        return np.load(path, mmap_mode="r", allow_pickle=False)
    if ext == ".pt":
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, torch.Tensor):
            return obj.detach().numpy()
        if isinstance(obj, np.ndarray):
            return obj
        raise ValueError(f"{path}: expected a saved tensor, found {type(obj).__name__}")
    if ext == ".csv":
        with open(path) as fh:
            first = fh.readline()
        try:
            [float(x) for x in first.strip().split(",") if x.strip()]
            skip = 0
        except ValueError:
            skip = 1  # a header row (BMN writes column names)
        return np.loadtxt(path, delimiter=",", skiprows=skip, dtype=np.float32, ndmin=2)
    raise ValueError(
        f"{path}: unsupported feature file type {ext!r}; expected one of {SUPPORTED_EXT}"
    )


def downsample_features(x: np.ndarray, k: int) -> np.ndarray:
    """Average groups of ``k`` consecutive steps: (T, C) -> (ceil(T / k), C).

    A last, partial group (when k does not divide T) is averaged over the steps it has.
    """
    if k <= 1:
        return x
    t = x.shape[0]
    full = (t // k) * k
    out = x[:full].reshape(t // k, k, -1).mean(axis=1, dtype=np.float64)
    if full < t:
        out = np.concatenate([out, x[full:].mean(axis=0, keepdims=True, dtype=np.float64)])
    return out.astype(np.float32)


def resize_features(x: np.ndarray, length: int) -> np.ndarray:
    """Linear interpolation of (T, C) to (length, C).

    Same as ``F.interpolate(mode="linear", align_corners=False)``: output step ``i``
    samples the input at position ``(i + 0.5) * T / length - 0.5`` (clamped to
    ``[0, T - 1]``), so each step stands for an equal share of the video (step ``i``
    covers ``[i, i + 1) * duration / length``). Written as two row gathers and a
    blend (0.7 ms for T = 99 -> 100, C = 2048 on our CPU): ``F.interpolate`` on the
    (1, C, T) view of a (T, C) array took 6-8 ms, which capped one loader process at
    ~80 videos/s.
    """
    t = x.shape[0]
    if t == length:
        return x
    pos = np.clip((np.arange(length) + 0.5) * (t / length) - 0.5, 0.0, t - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, t - 1)
    w = (pos - i0).astype(np.float32)[:, None]
    lo, hi = np.asarray(x[i0], dtype=np.float32), np.asarray(x[i1], dtype=np.float32)
    return lo + w * (hi - lo)


@dataclass(frozen=True)
class FeatureSource:
    """Where a video's features live and how to check them."""

    feature_dir: str | None = None
    rgb_dir: str | None = None
    flow_dir: str | None = None
    prefix: str = ""
    ext: str = ".npy"
    feature_dim: int | None = None

    def __post_init__(self) -> None:
        two = self.rgb_dir is not None or self.flow_dir is not None
        if two and (self.rgb_dir is None or self.flow_dir is None):
            raise ValueError("rgb_dir and flow_dir go together: set both, or feature_dir alone")
        if two == (self.feature_dir is not None):
            raise ValueError("set either feature_dir, or rgb_dir and flow_dir")
        if not self.ext.startswith("."):
            object.__setattr__(self, "ext", "." + self.ext)
        if self.ext.lower() not in SUPPORTED_EXT:
            raise ValueError(f"ext {self.ext!r} is not supported; expected one of {SUPPORTED_EXT}")

    @property
    def dirs(self) -> tuple[str, ...]:
        if self.feature_dir is not None:
            return (self.feature_dir,)
        return (str(self.rgb_dir), str(self.flow_dir))

    def paths(self, video_id: str) -> list[Path]:
        return [Path(d) / f"{self.prefix}{video_id}{self.ext}" for d in self.dirs]

    def missing(self, video_ids: Sequence[str]) -> list[str]:
        """The ids of the videos with at least one feature file absent."""
        return [v for v in video_ids if not all(p.is_file() for p in self.paths(v))]

    def scan_shape(self, video_id: str) -> tuple[int, int] | None:
        """(T, C) from the ``.npy`` headers, checked; None for formats that need a full read."""
        if self.ext.lower() != ".npy":
            return None
        shapes = []
        for p in self.paths(video_id):
            try:
                shapes.append((p, npy_shape(p)))
            except (ValueError, OSError, EOFError, SyntaxError) as err:
                raise FeatureFileError(p, video_id, f"not a readable .npy file ({err})") from None
        for p, shape in shapes:
            self._check_shape(p, video_id, shape)
        return self._combined_shape(video_id, shapes)

    def load(self, video_id: str) -> np.ndarray:
        """The (T, C) array (memory-mapped for one ``.npy`` file), shape-checked."""
        arrays = []
        for p in self.paths(video_id):
            try:
                arr = read_feature_file(p)
            except Exception as err:  # noqa: BLE001 - any reader failure is this file's
                raise FeatureFileError(p, video_id, f"cannot be read ({err})") from err
            self._check_shape(p, video_id, arr.shape)
            arrays.append((p, arr))
        self._combined_shape(video_id, [(p, a.shape) for p, a in arrays])
        if len(arrays) == 1:
            return arrays[0][1]
        return np.concatenate([np.asarray(a, dtype=np.float32) for _, a in arrays], axis=1)

    def _check_shape(self, path: Path, video_id: str, shape: tuple[int, ...]) -> None:
        if len(shape) != 2:
            raise FeatureFileError(
                path, video_id, f"expected a 2-D (T, C) array, found shape {tuple(shape)}"
            )
        if shape[0] == 0 or shape[1] == 0:
            raise FeatureFileError(path, video_id, f"empty feature array, shape {tuple(shape)}")

    def _combined_shape(
        self, video_id: str, shapes: list[tuple[Path, tuple[int, ...]]]
    ) -> tuple[int, int]:
        lengths = {s[0] for _, s in shapes}
        if len(lengths) > 1:
            found = ", ".join(f"{p} has {s[0]}" for p, s in shapes)
            where = " + ".join(str(p) for p, _ in shapes)
            raise FeatureFileError(where, video_id, f"RGB and flow lengths differ: {found} steps")
        t, c = shapes[0][1][0], sum(s[1] for _, s in shapes)
        if self.feature_dim is not None and c != self.feature_dim:
            where = " + ".join(str(p) for p, _ in shapes)
            raise FeatureFileError(
                where,
                video_id,
                f"expected feature_dim {self.feature_dim}, found {c} channels "
                f"(shape {' + '.join(str(tuple(s)) for _, s in shapes)})",
            )
        return t, c


def first_non_finite(x: np.ndarray, *, offset: int = 0) -> str | None:
    """None when every value of ``x`` (T, C) is finite, else what and where.

    ``offset`` is added to the reported step: the whole video's step of row 0 of ``x``.
    """
    finite = np.isfinite(x)
    if finite.all():  # the common case: one pass, no index work
        return None
    step, channel = np.argwhere(~finite)[0]
    n_nan, n_inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
    return (
        f"{n_nan} NaN and {n_inf} Inf values, the first at step {int(step) + offset} "
        f"(channel {int(channel)})"
    )


def check_finite(x: np.ndarray, where: str, *, offset: int = 0) -> None:
    """Raise naming ``where`` and the first bad step (of the whole video) on NaN or Inf."""
    bad = first_non_finite(x, offset=offset)
    if bad is not None:
        raise ValueError(f"{where}: features must be finite, found {bad}")


def expected_length(duration: float, fps: float, stride: int) -> float:
    """Clip features expected from a video: about ``duration * fps / stride``."""
    return duration * fps / stride


# A video's feature length outside this ratio of duration * fps / stride is reported.
LENGTH_RATIO = (0.5, 2.0)


def length_ratio_ok(length: int, expected: float) -> bool:
    """``length`` within `LENGTH_RATIO` of ``expected`` (or nothing to compare with)."""
    low, high = LENGTH_RATIO
    return expected <= 0 or low <= length / expected <= high
