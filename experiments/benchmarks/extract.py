"""Frames per second of each stage of feature extraction, and what a minute of video costs.

    python experiments/benchmarks/extract.py [--seconds 4] [--source 320x240] [--rate 30]
        [--pairs 8] [--batch 2] [--repeats 3] [--device cpu|cuda] [--threads N]
        [--flow-scales 5 --flow-warps 5 --flow-outer-iterations 10 --flow-inner-iterations 30]

A synthetic H.264 video (a textured ground and a textured square that moves, ``--source``
pixels at ``--rate`` fps, ``--seconds`` long, written with PyAV into a temporary folder)
goes through the extractor's stages, each timed on its own:

- ``decode``: decoding, resampling to 25 fps, resizing (shorter side 226) and the centre
  224 x 224 crop (``ResampledVideo``), in resampled frames per second;
- ``flow``: TV-L1 on ``--pairs`` consecutive 224 x 224 frames (``TVL1Flow``, OpenCV's
  defaults, and the ``--flow-*`` settings when given), on the CPU, pairs per second;
- ``i3d rgb``, ``i3d flow``: the I3D forward (random weights) on ``--batch`` clips of
  16 x 224 x 224 on ``--device``, in frames per second (each clip's 16 frames; with
  non-overlapping slices every frame is in one clip); the median of ``--repeats`` after a
  warm-up.

Each line also gives what a one-minute video at 25 fps (1,500 frames) costs in that
stage. The stages run one after another here; in the extractor, decoding and flow run
in the DataLoader workers while the device runs I3D, so the slowest stage sets the pace.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from salad_lightning.extract.backbones import load_backbone
from salad_lightning.extract.flow import TVL1Flow, TVL1Options, frames_with_flow
from salad_lightning.extract.video import ResampledVideo, require

MINUTE = 1500  # frames in one minute at 25 fps


def write_source(path: Path, *, width: int, height: int, rate: int, seconds: float) -> int:
    """A textured square moving over a textured ground (flow has work to do everywhere)."""
    av = require("av")
    rng = np.random.default_rng(0)
    ground = rng.integers(20, 120, (height // 4 + 1, width // 4 + 1), dtype=np.uint8)
    ground = np.kron(ground, np.ones((4, 4), np.uint8))[:height, :width]
    side = min(width, height) // 3
    square = np.kron(rng.integers(130, 250, (side // 4, side // 4), dtype=np.uint8), np.ones((4, 4), np.uint8))  # fmt: skip
    n = int(seconds * rate)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(rate))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for j in range(n):
            img = ground.copy()
            x = (3 * j) % (width - square.shape[1])
            y = (j // 2) % (height - square.shape[0])
            img[y : y + square.shape[0], x : x + square.shape[1]] = square
            rgb = np.repeat(img[..., None], 3, axis=2)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return n


def report(stage: str, frames: int, seconds: float, unit: str = "frames") -> None:
    fps = frames / seconds
    print(f"{stage:<52} {fps:9.1f} {unit}/s   one minute at 25 fps: {MINUTE / fps:8.1f} s")


def time_decode(path: Path, repeats: int) -> list[np.ndarray]:
    times, frames = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        frames = list(ResampledVideo(path, fps=25, size=226, crop=224))
        times.append(time.perf_counter() - start)
    report("decode + resample + resize/crop", len(frames), statistics.median(times))
    return frames


def time_flow(frames: list[np.ndarray], pairs: int, options: TVL1Options, label: str) -> None:
    flow = TVL1Flow(options)
    start = time.perf_counter()
    got = list(frames_with_flow(frames[: pairs + 1], flow))
    seconds = time.perf_counter() - start
    report(f"flow TV-L1 ({label})", len(got) - 1, seconds, "pairs")


def time_i3d(name: str, batch: int, repeats: int, device: torch.device) -> None:
    model = load_backbone(name).module.to(device)  # random weights
    channels = 3 if name == "i3d_rgb" else 2
    clips = torch.randn(batch, channels, 16, 224, 224, device=device)
    times = []
    with torch.inference_mode():
        for k in range(repeats + 1):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(clips)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if k:  # the first call warms up
                times.append(time.perf_counter() - start)
    report(f"{name} forward, batch {batch} ({device.type})", batch * 16, statistics.median(times))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=4.0, help="length of the test video (4)")
    p.add_argument("--source", default="320x240", help="its frame size, WxH (320x240)")
    p.add_argument("--rate", type=int, default=30, help="its frame rate (30)")
    p.add_argument("--pairs", type=int, default=8, help="flow pairs timed (8)")
    p.add_argument("--batch", type=int, default=2, help="clips per I3D forward (2)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (median; 3)")
    p.add_argument("--device", default="cpu", help="the I3D forward's device (cpu)")
    p.add_argument("--threads", type=int, help="torch and OpenCV threads (default: theirs)")
    d = TVL1Options()
    p.add_argument("--flow-scales", type=int, default=d.scales)
    p.add_argument("--flow-warps", type=int, default=d.warps)
    p.add_argument("--flow-outer-iterations", type=int, default=d.outer_iterations)
    p.add_argument("--flow-inner-iterations", type=int, default=d.inner_iterations)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        require("cv2").setNumThreads(args.threads)
    width, height = (int(v) for v in args.source.lower().split("x"))
    device = torch.device(args.device)
    print(
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"OpenCV {require('cv2').__version__} ({require('cv2').getNumThreads()} threads), "
        f"PyAV {require('av').__version__}, torch {torch.__version__}"
        + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "")
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "source.mp4"
        n = write_source(path, width=width, height=height, rate=args.rate, seconds=args.seconds)
        print(f"source: {n} frames, {width}x{height} at {args.rate} fps (H.264)")
        frames = time_decode(path, args.repeats)
    pairs = min(args.pairs, len(frames) - 1)
    time_flow(frames, pairs, d, "OpenCV's defaults")
    knobs = TVL1Options(
        scales=args.flow_scales,
        warps=args.flow_warps,
        outer_iterations=args.flow_outer_iterations,
        inner_iterations=args.flow_inner_iterations,
    )
    if knobs != d:
        label = (
            f"scales {knobs.scales}, warps {knobs.warps}, "
            f"iterations {knobs.outer_iterations} x {knobs.inner_iterations}"
        )
        time_flow(frames, pairs, knobs, label)
    for name in ("i3d_rgb", "i3d_flow"):
        time_i3d(name, args.batch, args.repeats, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
