"""Tiny generated videos with a known moving pattern, for tests that need video files.

A textured square sits on a still textured ground; during each ``action`` interval
(seconds) it moves ``dx`` pixels to the right per frame, and it stands still otherwise, so
that what happens when is known from the file's parameters alone. H.264 written with PyAV
(near-lossless), at any frame rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

H, W = 48, 64  # frame size
SIDE = 12  # the square's side


def _blocks(rng: np.random.Generator, low: int, high: int, rows: int, cols: int) -> np.ndarray:
    """Random gray 3 x 3 blocks: texture coarse enough for the flow's image pyramid."""
    small = rng.integers(low, high, (rows // 3, cols // 3, 1), dtype=np.uint8)
    return np.repeat(np.repeat(np.repeat(small, 3, 0), 3, 1), 3, 2)


_RNG = np.random.default_rng(0)
_SQUARE = _blocks(_RNG, 140, 250, SIDE, SIDE)
_GROUND = _blocks(_RNG, 20, 90, H, W + 2)[:, :W]


def square_positions(
    n: int, rate: float | Fraction, actions: Sequence[tuple[float, float]], dx: int = 2
) -> list[int]:
    """The square's left edge in each of ``n`` frames: it moves ``dx`` pixels a frame
    while frame ``j``'s time ``j / rate`` lies in an action, bouncing between the edges."""
    x, step, xs = 4, dx, []
    for j in range(n):
        t = j / float(rate)
        if any(a <= t < b for a, b in actions):
            if not 0 <= x + step <= W - SIDE:
                step = -step
            x += step
        xs.append(x)
    return xs


def write_moving_square(
    path: Path,
    seconds: float,
    *,
    rate: int | Fraction = 30,
    actions: Sequence[tuple[float, float]] = (),
    dx: int = 2,
) -> Path:
    """``seconds`` of video at ``rate`` fps whose square moves during ``actions``."""
    import av

    n = int(round(seconds * float(rate)))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate, options={"crf": "0"})
        stream.height, stream.width, stream.pix_fmt = H, W, "yuv420p"
        for x in square_positions(n, rate, actions, dx):
            img = _GROUND.copy()
            img[18 : 18 + SIDE, x : x + SIDE] = _SQUARE
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
