"""TV-L1 optical flow between consecutive resampled frames (OpenCV contrib), scaled for I3D.

Pairs: for ``n`` frames there are ``n`` fields, so that flow and RGB slices are the same
frames: field ``j`` is the flow from frame ``j`` to frame ``j + 1`` for ``j < n - 1``, and
the last field repeats its predecessor (a one-frame video has one zero field). A
16-frame slice thus sees 16 fields, the last of them reaching into the next frame.

Scaling: each component (x, y: where a pixel of frame ``j`` moves to in frame ``j + 1``,
in pixels of the cropped frame) is clipped to [-20, 20] and divided by 20, so [-1, 1]:
what the JPEG-quantised flow that I3D's flow stream was trained on encodes.

Flow is computed in grayscale on the cropped frames (what the network sees): fewer pixels
than the whole resized frame (224 x 224 against 226 x 301 for a 4:3 video), at the price
of less accurate flow within a few pixels of the crop's border. Cost: TV-L1 is the slow stage. With OpenCV's defaults, on this
project's 2-core CPU, a 224 x 224 pair took 0.27 s on the benchmark's synthetic frames
(3.7 pairs per second, so about 7 minutes for the 1,500 pairs of a one-minute video at
25 fps) and 0.59 s on a pair of random-noise frames: the cost depends on the content,
through the stopping tolerance. The knobs of :class:`TVL1Options` trade accuracy for
speed (scales 3, warps 3, 5 outer iterations: 6.2 pairs per second on the same frames);
the defaults are OpenCV's; ``experiments/benchmarks/extract.py`` measures them.

OpenCV (``opencv-contrib-python-headless``) is imported only when flow is computed:
``pip install salad-lightning[video]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from salad_lightning.extract.video import require

__all__ = ["FLOW_BOUND", "TVL1Flow", "TVL1Options", "frames_with_flow", "scale_flow"]

FLOW_BOUND = 20.0


@dataclass(frozen=True)
class TVL1Options:
    """OpenCV's ``DualTVL1OpticalFlow`` parameters (its defaults). The speed knobs:
    ``scales`` (pyramid levels), ``warps`` per level, ``outer_iterations`` and
    ``inner_iterations`` per warp, and the stopping ``epsilon``; fewer / larger is faster."""

    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    scales: int = 5
    warps: int = 5
    epsilon: float = 0.01
    inner_iterations: int = 30
    outer_iterations: int = 10
    scale_step: float = 0.8
    gamma: float = 0.0
    median_filtering: int = 5

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def scale_flow(flow: np.ndarray, bound: float = FLOW_BOUND) -> np.ndarray:
    """Clip to [-bound, bound] and divide by bound: float32 in [-1, 1]."""
    return (np.clip(flow, -bound, bound) / bound).astype(np.float32, copy=False)


class TVL1Flow:
    """``flow(prev_gray, next_gray)`` -> (H, W, 2) float32 in [-1, 1] (x then y)."""

    def __init__(self, options: TVL1Options = TVL1Options(), *, threads: int | None = None) -> None:
        """``threads``: OpenCV's thread count (1 in a decoding worker, which has a whole
        video to itself); None leaves OpenCV's default."""
        cv2 = require("cv2")
        if not hasattr(cv2, "optflow"):
            raise ImportError(
                "TV-L1 flow needs OpenCV's contrib modules (cv2.optflow), which this cv2 "
                "lacks: pip uninstall opencv-python opencv-python-headless; "
                "pip install salad-lightning[video]"
            )
        o = options
        self._tvl1 = cv2.optflow.DualTVL1OpticalFlow_create(
            o.tau,
            o.lambda_,
            o.theta,
            o.scales,
            o.warps,
            o.epsilon,
            o.inner_iterations,
            o.outer_iterations,
            o.scale_step,
            o.gamma,
            o.median_filtering,
        )
        self._cv2 = cv2
        if threads is not None:
            cv2.setNumThreads(threads)

    def gray(self, rgb: np.ndarray) -> np.ndarray:
        return self._cv2.cvtColor(rgb, self._cv2.COLOR_RGB2GRAY)

    def __call__(self, prev_gray: np.ndarray, next_gray: np.ndarray) -> np.ndarray:
        return scale_flow(self._tvl1.calc(prev_gray, next_gray, None))


def frames_with_flow(
    frames: Iterable[np.ndarray], flow: TVL1Flow
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(frame j, field j)`` for every frame, by the pairing rule above."""
    previous = previous_gray = field = None
    for frame in frames:
        gray = flow.gray(frame)
        if previous is not None:
            field = flow(previous_gray, gray)
            yield previous, field
        previous, previous_gray = frame, gray
    if previous is not None:
        if field is None:
            field = np.zeros((*previous.shape[:2], 2), np.float32)
        yield previous, field
