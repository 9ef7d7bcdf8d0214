"""Features from video files: one (T, D) float32 ``.npy`` per video and ``features.json``.

The work is split where it is cheap to move: DataLoader workers decode, resample,
resize and crop each video and compute its TV-L1 flow (``extract/stream.py``), and send
runs of frames that hold ``batch_size`` whole slices; the main process cuts each run
into clips (B, C, window, H, W), scales them as each backbone expects and runs the
backbones on the device, one forward per stream per run. Features are concatenated on
the channel axis in the order of the backbones (RGB first for I3D). A worker handles
whole videos, so with several workers several videos are in flight at once.

A video that cannot be decoded, or is shorter than one slice, is reported and skipped;
the others go on. :func:`extract_folder` writes each video's ``.npy`` and then
``features.json`` atomically as soon as the video is done, so an interrupted run loses
at most the videos in flight, and a second run skips every video already recorded with
a complete file. Settings that differ from those of an existing ``features.json`` are
refused, by name, before any work.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from salad_lightning import __version__
from salad_lightning.data.features import npy_shape
from salad_lightning.extract.backbones import Backbone
from salad_lightning.extract.flow import FLOW_BOUND, TVL1Flow, TVL1Options
from salad_lightning.extract.geometry import (
    FEATURES_JSON,
    FORMAT,
    FeatureSettingsError,
    num_slices,
    read_features_json,
    settings_mismatches,
)
from salad_lightning.extract.stream import FramePlan, FrameRuns
from salad_lightning.extract.video import VIDEO_EXTENSIONS, VideoDecodeError, require, to_fraction
from salad_lightning.utils.io import atomic_write_json, atomic_writer

__all__ = [
    "ExtractReport",
    "extract_folder",
    "extract_video",
    "find_videos",
    "plan_frames",
    "settings_record",
]


def find_videos(videos: str | os.PathLike) -> list[tuple[str, Path]]:
    """``(video_id, path)`` for a video file, or for every video in a folder (sorted).

    The id is the file's stem; two files with one stem (``a.mp4``, ``a.avi``) are an error.
    """
    root = Path(videos).resolve()
    if root.is_file():
        return [(root.stem, root)]
    if not root.is_dir():
        raise FileNotFoundError(f"{videos}: no such video file or folder")
    found = sorted(p for p in root.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS)
    if not found:
        raise FileNotFoundError(f"{videos}: no video files ({' '.join(VIDEO_EXTENSIONS)})")
    by_id: dict[str, Path] = {}
    for path in found:
        if path.stem in by_id:
            raise ValueError(f"two videos with the id {path.stem!r}: {by_id[path.stem]}, {path}")
        by_id[path.stem] = path
    return list(by_id.items())


def plan_frames(
    backbones: Sequence[Backbone],
    *,
    fps: float | str = 25,
    window: int = 16,
    stride: int = 16,
    size: int | None = None,
    crop: int | None = None,
    flow: TVL1Options | None = None,
    batch_size: int = 8,
) -> FramePlan:
    """The frame plan for ``backbones``, checked (with the libraries it needs) before any
    file is read or written. ``size`` / ``crop`` default to the first backbone's, ``flow``
    to OpenCV's TV-L1 defaults when a backbone takes flow."""
    spec = backbones[0].spec
    size, crop = size or spec.size, crop or spec.crop
    streams = [b.spec.stream for b in backbones]
    if crop > size:
        raise ValueError(f"crop ({crop}) must not exceed size ({size})")
    if min(window, stride, batch_size) < 1:
        raise ValueError(
            f"window, stride, batch size must be >= 1: {window}, {stride}, {batch_size}"
        )
    flow = (flow or TVL1Options()) if "flow" in streams else None
    require("av")
    if flow is not None:
        TVL1Flow(flow)  # OpenCV with its contrib modules
    return FramePlan(
        fps=str(to_fraction(fps)), size=size, crop=crop, window=window, stride=stride,
        slices_per_chunk=batch_size, rgb="rgb" in streams, flow=flow,
    )  # fmt: skip


def settings_record(
    backbones: Sequence[Backbone], plan: FramePlan, *, backbone: str
) -> dict[str, Any]:
    """The ``settings`` object of features.json: everything that changes the numbers."""
    rate = to_fraction(plan.fps)
    return {
        "backbone": backbone,
        "streams": [b.spec.stream for b in backbones],
        "models": [b.spec.name for b in backbones],
        "weights": {b.spec.stream: b.weights for b in backbones},
        "fps": int(rate) if rate.denominator == 1 else float(rate),
        "fps_exact": plan.fps,
        "window": plan.window,
        "stride": plan.stride,
        "size": plan.size,
        "crop": plan.crop,
        "resize": f"shorter side to {plan.size} (bilinear), centre crop {plan.crop} x {plan.crop}",
        "scaling": {b.spec.stream: b.spec.describe_scaling() for b in backbones},
        "flow": (
            {"method": "TV-L1 (OpenCV)", "bound": FLOW_BOUND, **plan.flow.as_dict()}
            if plan.flow is not None
            else None
        ),
        "feature_dim": sum(b.spec.feature_dim for b in backbones),
        "stream_dims": [b.spec.feature_dim for b in backbones],
    }


def _identity(item):
    return item


def _clips(frames: torch.Tensor, window: int, stride: int) -> torch.Tensor:
    """(n, H, W, C) frames -> (m, C, window, H, W) clips, clip i = frames [i*stride, +window)."""
    x = frames.permute(3, 0, 1, 2).unfold(1, window, stride)  # C, m, H, W, window
    return x.permute(1, 0, 4, 2, 3).contiguous()


@torch.inference_mode()
def _features(
    backbones: Sequence[Backbone], msg: dict[str, Any], plan: FramePlan, device: torch.device
) -> np.ndarray:
    parts = []
    for b in backbones:
        frames = msg[b.spec.stream].to(device, non_blocking=True)
        clips = b.spec.scale(_clips(frames, plan.window, plan.stride))
        parts.append(b.module(clips).float())
    return torch.cat(parts, dim=1).cpu().numpy()


def _outcomes(
    videos: Sequence[tuple[str, Path]],
    backbones: Sequence[Backbone],
    plan: FramePlan,
    *,
    device: torch.device,
    workers: int,
    progress: bool,
) -> Iterator[tuple[str, str, Any]]:
    """Per video, as each finishes: ``("done", id, (features, record))`` or
    ``("failed", id, reason)``."""
    from tqdm import tqdm

    loader = DataLoader(
        FrameRuns(videos, plan),
        batch_size=None,
        num_workers=workers,
        collate_fn=_identity,
        prefetch_factor=2 if workers else None,
        # fresh processes: OpenCV's thread pool (and CUDA) do not survive a fork, and a
        # forked worker can hang in its first TV-L1 call
        multiprocessing_context="spawn" if workers else None,
    )
    for b in backbones:
        b.module.to(device)
    dim = sum(b.spec.feature_dim for b in backbones)
    parts: dict[int, list[np.ndarray]] = {}
    bars: dict[int, Any] = {}
    for msg in loader:
        index, kind = msg["video"], msg["kind"]
        video_id = videos[index][0]
        if kind == "start":
            parts[index] = []
            bars[index] = tqdm(
                total=msg["expected"], desc=video_id, unit="frame", leave=False,
                disable=not progress, file=sys.stderr, dynamic_ncols=True,
            )  # fmt: skip
            continue
        if kind == "chunk":
            parts[index].append(_features(backbones, msg, plan, device))
            bars[index].update(msg["seen"] - bars[index].n)
            continue
        if index in bars:
            bars.pop(index).close()
        chunks = parts.pop(index, [])
        if kind == "error":
            yield "failed", video_id, msg["reason"]
            continue
        info = msg["info"]
        feats = np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)
        info["features"] = int(feats.shape[0])
        assert feats.shape[0] == num_slices(info["frames"], window=plan.window, stride=plan.stride)
        if not np.isfinite(feats).all():
            yield "failed", video_id, "the features hold NaN or infinite values"
            continue
        yield "done", video_id, (feats.astype(np.float32, copy=False), info)


def _device(device: str | torch.device | None) -> torch.device:
    """``device``, by default CUDA when there is one; a CUDA device that is not there is
    refused before any work."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} asked for, but CUDA is not available here")
    return device


def extract_video(
    path: str | os.PathLike,
    backbones: Sequence[Backbone],
    *,
    device: str | torch.device | None = None,
    progress: bool = False,
    **frames: Any,
) -> tuple[np.ndarray, dict[str, Any]]:
    """One video's (T, D) float32 features and its record (``VideoInfo`` + ``features``).

    ``frames``: :func:`plan_frames`' keywords (fps, window, stride, size, crop, flow,
    batch_size). Raises :class:`VideoDecodeError` when the video
    cannot be used.
    """
    plan = plan_frames(backbones, **frames)
    device = _device(device)
    path = Path(path).resolve()
    ((status, _, result),) = _outcomes(
        [(path.stem, path)], backbones, plan, device=device, workers=0, progress=progress
    )
    if status == "failed":
        raise VideoDecodeError(path, result)
    return result


@dataclass
class ExtractReport:
    """What :func:`extract_folder` did: ids extracted now, skipped (already done), failed."""

    out: Path
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # id -> "path: reason"

    def summary(self) -> str:
        lines = [
            f"{self.out}: {len(self.done)} extracted, {len(self.skipped)} already done, "
            f"{len(self.failed)} failed"
        ]
        lines += [f"  failed {vid}: {reason}" for vid, reason in self.failed.items()]
        return "\n".join(lines)


def _complete(out: Path, record: dict[str, Any] | None, feature_dim: int, vid: str) -> bool:
    if not record:
        return False
    try:
        return npy_shape(out / f"{vid}.npy") == (record["features"], feature_dim)
    except (OSError, ValueError, EOFError, KeyError):
        return False


def _start(out: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The folder's features.json: an existing one when its settings are these, else a
    new one written now; other settings are refused, each named."""
    if (out / FEATURES_JSON).exists():
        meta = read_features_json(out)
        wrong = settings_mismatches(meta["settings"], settings)
        if wrong:
            raise FeatureSettingsError(
                f"{out / FEATURES_JSON} was written with other settings; use another output "
                "folder, or the same settings:\n  " + "\n  ".join(wrong)
            )
        return meta
    meta = {"format": FORMAT, "version": __version__, "settings": settings}
    meta.update(videos={}, failed={})
    atomic_write_json(out / FEATURES_JSON, meta)
    return meta


def extract_folder(
    videos: str | os.PathLike,
    out: str | os.PathLike,
    backbones: Sequence[Backbone],
    *,
    backbone: str = "i3d",
    device: str | torch.device | None = None,
    workers: int = 2,
    progress: bool = True,
    **frames: Any,
) -> ExtractReport:
    """Extract every video of ``videos`` (a file or a folder) into ``out``; see the module
    docstring. ``backbone`` is the name recorded in features.json; ``frames``:
    :func:`plan_frames`' keywords (fps, window, stride, size, crop, flow, batch_size). Raises :class:`FeatureSettingsError` when ``out`` holds
    features made with other settings, before reading any video."""
    from tqdm import tqdm

    out = Path(out)
    items = find_videos(videos)
    plan = plan_frames(backbones, **frames)
    device = _device(device)
    settings = settings_record(backbones, plan, backbone=backbone)
    meta = _start(out, settings)
    report = ExtractReport(out)
    todo = []
    for vid, path in items:
        if _complete(out, meta["videos"].get(vid), settings["feature_dim"], vid):
            report.skipped.append(vid)
        else:
            todo.append((vid, path))
    sources = dict(todo)
    bar = tqdm(total=len(todo), desc="videos", unit="video", disable=not progress, file=sys.stderr)
    workers = min(workers, len(todo))  # none to start when every video is done
    outcomes = _outcomes(todo, backbones, plan, device=device, workers=workers, progress=progress)
    for status, vid, result in outcomes:
        meta["version"] = __version__
        if status == "done":
            feats, record = result
            with atomic_writer(out / f"{vid}.npy", "wb") as fh:
                np.save(fh, feats)
            meta["videos"][vid] = record
            meta["failed"].pop(vid, None)
            report.done.append(vid)
        else:
            meta["failed"][vid] = {"source": str(sources[vid]), "reason": result}
            report.failed[vid] = f"{sources[vid]}: {result}"
            bar.write(f"failed: {sources[vid]}: {result}", file=sys.stderr)
        atomic_write_json(out / FEATURES_JSON, meta)
        bar.update(1)
    bar.close()
    return report
