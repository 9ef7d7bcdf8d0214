"""Decoding a video into RGB frames at a fixed rate, resized and centre-cropped (PyAV).

Resampling by timestamps. The decoded frames, in presentation order, have times
``t_j = (pts_j - pts_0) * time_base`` (exact fractions; the first frame is time 0) and
the video ends at ``D = t_last + d_last``, where ``d_last`` is the last frame's own
duration as the container gives it, else one frame at the stream's average rate.
Output frame ``k`` is at time ``k / fps`` and is the last decoded frame with
``t_j <= k / fps``; there is one for every ``k`` with ``k / fps < D``, i.e.
``ceil(D * fps)`` frames. A frame is repeated when the source is slower than ``fps`` and
skipped when it is faster; variable frame rates and rates such as 30000/1001 (29.97)
keep their true timing, with no drift from a rounded rate. Examples: 90 frames at 30 fps
(3 s) give 75 frames at 25 fps; 20 frames at 29.97 fps (0.6673 s) give 17.

Geometry: each frame is resized so that its shorter side is ``size`` (the aspect kept,
the longer side rounded; FFmpeg's bilinear scaler through PyAV, which averages over the
source pixels when shrinking), then the centre ``crop`` x ``crop`` is cut, the odd pixel
of a margin on the right / bottom.

PyAV (``av``) is imported only when a video is read: ``pip install salad-lightning[video]``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "VIDEO_EXTENSIONS",
    "ResampledVideo",
    "VideoDecodeError",
    "VideoInfo",
    "crop_box",
    "require",
    "resample",
    "resized_shape",
    "to_fraction",
]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".mpg", ".mpeg", ".m4v")

T = TypeVar("T")


def require(module: str) -> Any:
    """Import PyAV or OpenCV, or say how to install them."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        what = {"av": "PyAV (av)", "cv2": "OpenCV with contrib (opencv-contrib-python-headless)"}
        raise ImportError(
            f"reading videos needs {what.get(module, module)}: pip install salad-lightning[video]"
        ) from err


class VideoDecodeError(ValueError):
    """A video that cannot be used: which file, and why."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class VideoInfo:
    """What decoding one video found (its record in features.json)."""

    source: str
    average_rate: float | None  # the stream's own average frame rate, as the container says
    duration: float  # seconds, D above
    source_frames: int  # frames decoded
    frames: int  # frames after resampling

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def to_fraction(fps: float | str | Fraction) -> Fraction:
    """A frame rate as an exact fraction: 25, "25", 29.97 or "30000/1001"."""
    try:
        value = Fraction(str(fps)) if not isinstance(fps, Fraction) else fps
    except (ValueError, ZeroDivisionError) as err:
        raise ValueError(f"fps must be a positive number or a fraction, found {fps!r}") from err
    if value <= 0:
        raise ValueError(f"fps must be > 0, found {fps}")
    return value


def resample(frames: Iterable[tuple[Fraction, Fraction, T]], fps: Fraction) -> Iterator[T]:
    """The rule above on ``(start time, duration, payload)`` items in presentation order.

    Yields one payload per output frame: the last item whose start is <= ``k / fps``,
    for every ``k`` with ``k / fps`` before the last item's end.
    """
    k = 0
    current: T | None = None
    end = Fraction(0)
    for start, duration, payload in frames:
        if current is not None:
            while k / fps < start:  # output times before this frame show the previous one
                yield current
                k += 1
        current, end = payload, start + duration
    if current is not None:
        while k / fps < end:
            yield current
            k += 1


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) with the shorter side ``size``, the other rounded (half up)."""
    if height <= width:
        return size, max(size, int(width * size / height + 0.5))
    return max(size, int(height * size / width + 0.5)), size


def crop_box(height: int, width: int, crop: int) -> tuple[int, int]:
    """(top, left) of the centre ``crop`` x ``crop`` square."""
    if crop > min(height, width):
        raise ValueError(f"crop {crop} is larger than the resized frame {height} x {width}")
    return (height - crop) // 2, (width - crop) // 2


def frame_to_array(frame: Any, *, size: int, crop: int) -> np.ndarray:
    """One decoded ``av.VideoFrame`` -> (crop, crop, 3) uint8 RGB, by the geometry above."""
    h, w = resized_shape(frame.height, frame.width, size)
    rgb = frame.to_ndarray(width=w, height=h, format="rgb24", interpolation="BILINEAR")
    top, left = crop_box(h, w, crop)
    return np.ascontiguousarray(rgb[top : top + crop, left : left + crop])


class _Timeline:
    """The start and duration of each decoded frame, by the rule above; what was decoded."""

    def __init__(self, stream: Any) -> None:
        rate = stream.average_rate or stream.guessed_rate
        self.rate = Fraction(rate) if rate else None
        self.time_base = Fraction(stream.time_base) if stream.time_base else Fraction(1)
        self.count, self.end = 0, Fraction(0)

    def timed(self, frames: Iterable[Any]) -> Iterator[tuple[Fraction, Fraction, Any]]:
        nominal = 1 / self.rate if self.rate else Fraction(1, 25)
        first = previous = None
        for frame in frames:
            if frame.pts is not None:
                first = frame.pts if first is None else first
                start = (frame.pts - first) * self.time_base
            else:  # no timestamp: one nominal frame after the previous one
                start = previous + nominal if previous is not None else Fraction(0)
            previous = start
            own = getattr(frame, "duration", None)
            duration = own * self.time_base if own else nominal
            self.count += 1
            self.end = start + duration
            yield start, duration, frame


class ResampledVideo:
    """One video's frames at ``fps``, as (crop, crop, 3) uint8 RGB arrays; iterate once.

    ``expected_frames`` (from the container's duration, for a progress bar; None when it
    says nothing) is known after the file is opened; ``info`` after the last frame.
    Raises :class:`VideoDecodeError` for a file that is not a video, has no video
    stream, cannot be decoded to the end, or has no frame.
    """

    def __init__(
        self, path: str | os.PathLike, *, fps: float | str = 25, size: int = 226, crop: int = 224
    ) -> None:
        if crop > size:
            raise ValueError(f"crop ({crop}) must not exceed size ({size})")
        self.path, self.fps, self.size, self.crop = str(path), to_fraction(fps), size, crop
        self.expected_frames: int | None = None
        self.info: VideoInfo | None = None

    def __iter__(self) -> Iterator[np.ndarray]:
        av = require("av")
        try:
            container = av.open(self.path)
        except (av.FFmpegError, OSError, UnicodeDecodeError) as err:
            raise VideoDecodeError(self.path, f"cannot open as a video ({err})") from err
        with container:
            if not container.streams.video:
                raise VideoDecodeError(self.path, "no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if container.duration:
                self.expected_frames = math.ceil(container.duration / 1e6 * self.fps)
            timeline = _Timeline(stream)
            shown, array, n_out = None, None, 0
            try:
                for frame in resample(timeline.timed(container.decode(stream)), self.fps):
                    if frame is not shown:  # convert a frame once, however often it is shown
                        shown, array = frame, frame_to_array(frame, size=self.size, crop=self.crop)
                    n_out += 1
                    yield array
            except av.FFmpegError as err:
                raise VideoDecodeError(
                    self.path, f"decoding failed after {timeline.count} frames ({err})"
                ) from err
            if timeline.count == 0:
                raise VideoDecodeError(self.path, "no frame could be decoded")
            self.info = VideoInfo(
                source=self.path,
                average_rate=float(timeline.rate) if timeline.rate else None,
                duration=float(timeline.end),
                source_frames=timeline.count,
                frames=n_out,
            )
