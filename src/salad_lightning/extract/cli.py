"""``salad-extract VIDEOS OUT``: clip features of every video, the paper's way by default.

    salad-extract VIDEOS OUT [--backbone i3d] [--streams both|rgb|flow]
        [--rgb-weights rgb_imagenet.pt] [--flow-weights flow_imagenet.pt]
        [--fps 25] [--window 16] [--stride 16] [--size 226] [--crop 224]
        [--batch-size 8] [--device cuda] [--workers 2] [--flow-scales 5] ...

VIDEOS is a video file or a folder of them; OUT gets ``<video_id>.npy`` (T, D) float32
per video and ``features.json`` (``extract/geometry.py``). Defaults follow SALAD §4.2:
frames at 25 fps, non-overlapping 16-frame slices, I3D RGB (1024) then flow (1024).
``--stride 4`` gives ActionFormer's THUMOS14 layout. A second run into the same OUT
skips finished videos and refuses other settings. Exit status: 0, 1 when a video
failed (each named at the end and in features.json), 2 for an error before any work.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from salad_lightning.extract.backbones import BACKBONES, load_backbone
from salad_lightning.extract.extractor import extract_folder
from salad_lightning.extract.flow import TVL1Flow, TVL1Options
from salad_lightning.extract.geometry import FeatureSettingsError
from salad_lightning.extract.i3d import WeightsError
from salad_lightning.extract.video import require, to_fraction

__all__ = ["main"]

_TORCHVISION = sorted(n for n in BACKBONES if not n.startswith("i3d_"))


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, found {value}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, found {value}")
    return value


def _fps(text: str) -> str:
    try:
        to_fraction(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err
    return text


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="salad-extract",
        description="Clip features (one .npy per video and features.json) from video files.",
    )
    p.add_argument("videos", metavar="VIDEOS", help="a video file or a folder of videos")
    p.add_argument("out", metavar="OUT", help="output folder")
    p.add_argument("--backbone", choices=["i3d", *_TORCHVISION], default="i3d")
    p.add_argument(
        "--streams",
        choices=["both", "rgb", "flow"],
        default=None,
        help="I3D streams (default both: RGB then flow, concatenated); torchvision: rgb",
    )
    p.add_argument("--rgb-weights", help="I3D: the port's rgb_imagenet.pt; torchvision: a "
                   "state dict (default: the cached DEFAULT weights)")  # fmt: skip
    p.add_argument("--flow-weights", help="I3D: the port's flow_imagenet.pt")
    g = p.add_argument_group("frames and slices")
    g.add_argument("--fps", type=_fps, default="25", help="resampled rate, e.g. 25 or 30000/1001")
    g.add_argument("--window", type=_positive, default=16, help="frames per slice (16)")
    g.add_argument("--stride", type=_positive, default=16, help="frames between slices "
                   "(16: non-overlapping, the paper; 4: ActionFormer's THUMOS14)")  # fmt: skip
    g.add_argument("--size", type=_positive, help="shorter side after resizing "
                   "(default: the backbone's, 226 for I3D)")  # fmt: skip
    g.add_argument("--crop", type=_positive, help="centre crop (default: the backbone's, 224)")
    r = p.add_argument_group("running")
    r.add_argument("--batch-size", type=_positive, default=8, help="clips per forward (8)")
    r.add_argument("--device", help="cuda when available, else cpu")
    r.add_argument(
        "--workers", type=_count, default=2, help="decoding processes (2; 0: in this one)"
    )
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    d = TVL1Options()
    f = p.add_argument_group(
        "TV-L1 flow (OpenCV's defaults; the slow stage: 0.27-0.59 s per 224 x 224 pair "
        "measured on a 2-core CPU, see extract/flow.py)"
    )
    f.add_argument("--flow-scales", type=_positive, default=d.scales, help="pyramid levels")
    f.add_argument("--flow-warps", type=_positive, default=d.warps, help="warps per level")
    f.add_argument("--flow-outer-iterations", type=_positive, default=d.outer_iterations)
    f.add_argument("--flow-inner-iterations", type=_positive, default=d.inner_iterations)
    f.add_argument("--flow-epsilon", type=float, default=d.epsilon, help="stopping tolerance")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)

    def fail(message: str) -> int:
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 2

    if args.backbone == "i3d":
        streams = {"both": ["rgb", "flow"], "rgb": ["rgb"], "flow": ["flow"]}[
            args.streams or "both"
        ]
    elif args.streams in (None, "rgb"):
        streams = ["rgb"]
    else:
        return fail(f"--backbone {args.backbone} has an RGB stream only (--streams rgb)")
    flow = TVL1Options(
        scales=args.flow_scales,
        warps=args.flow_warps,
        outer_iterations=args.flow_outer_iterations,
        inner_iterations=args.flow_inner_iterations,
        epsilon=args.flow_epsilon,
    )
    try:
        require("av")
        if "flow" in streams:
            TVL1Flow(flow)  # OpenCV with its contrib modules, before any work
        weights = {"rgb": args.rgb_weights, "flow": args.flow_weights}
        if args.backbone == "i3d":
            for stream in streams:
                if weights[stream] is None:
                    return fail(
                        f"--{stream}-weights is required for the I3D {stream} stream (the "
                        f"PyTorch port's {stream}_imagenet.pt)"
                    )
            backbones = [load_backbone(f"i3d_{s}", weights[s]) for s in streams]
        else:
            backbones = [load_backbone(args.backbone, weights["rgb"] or "DEFAULT")]
        report = extract_folder(
            args.videos,
            args.out,
            backbones,
            backbone=args.backbone,
            fps=args.fps,
            window=args.window,
            stride=args.stride,
            size=args.size,
            crop=args.crop,
            flow=flow,
            batch_size=args.batch_size,
            device=args.device,
            workers=args.workers,
            progress=not args.no_progress,
        )
    except (WeightsError, FeatureSettingsError, FileNotFoundError, ImportError, ValueError) as err:
        return fail(str(err))
    print(report.summary(), file=sys.stderr)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
