"""``mode=predict`` on video files: their features first, made as the checkpoint's were.

A checkpoint keeps the features record of the data it was trained on (the settings of
its ``features.json``: backbone, streams, the weights files' paths and sha256, fps,
window, stride, size, crop, TV-L1 parameters; `SaladDataModule.features_record`).
:func:`extract_for_checkpoint` runs the extractor (``extract/``) on a video or a folder of
videos with exactly those settings, into a features folder (resumable: a second run skips
the videos already there); the pipeline then predicts on that folder as on any other,
and the datamodule reads each video's duration from its ``features.json``.

The weights files are the record's when they are still where it says, else the ones
given (``extract.rgb_weights``, ``extract.flow_weights``); either way their sha256 must be
the record's. A checkpoint trained on features without a ``features.json`` (backbone
``"unknown"``) cannot say how to make them, and is refused.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from salad_lightning.extract.backbones import Backbone, load_backbone
from salad_lightning.extract.extractor import extract_folder, find_videos
from salad_lightning.extract.flow import TVL1Options
from salad_lightning.extract.video import VIDEO_EXTENSIONS

__all__ = ["backbones_for", "checkpoint_features", "extract_for_checkpoint", "is_video_input"]

log = logging.getLogger(__name__)


def is_video_input(path: str | os.PathLike, *, feature_ext: str = ".npy") -> bool:
    """Whether ``predict_path`` names videos, by extension (``VIDEO_EXTENSIONS``): a video
    file, or a folder with video files. A folder with videos and feature files both is an
    error (which to predict on?); a video file that is not there, too."""
    p = Path(path)
    if p.is_dir():
        names = [f.name for f in p.iterdir() if f.is_file()]
        videos = [n for n in names if Path(n).suffix.lower() in VIDEO_EXTENSIONS]
        if videos and any(n.endswith(feature_ext) for n in names):
            raise ValueError(
                f"predict_path {p} holds video files ({videos[0]}, ...) and {feature_ext} "
                "feature files: put the videos in a folder of their own"
            )
        return bool(videos)
    if p.suffix.lower() in VIDEO_EXTENSIONS:
        if not p.is_file():
            raise FileNotFoundError(f"predict_path {p}: no such video file")
        return True
    return False


def checkpoint_features(ckpt: str | os.PathLike) -> dict[str, Any] | None:
    """The features record a checkpoint keeps (with its hyperparameters), or None."""
    state = torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True)
    return state.get("hyper_parameters", {}).get("features")


def _describe(record: Mapping[str, Any] | None) -> str:
    if not record:
        return "none"
    keys = ("source", "backbone", "fps", "stride", "window", "feature_dim")
    return ", ".join(f"{k} {record.get(k)!r}" for k in keys)


def backbones_for(
    record: Mapping[str, Any] | None,
    *,
    ckpt: str | os.PathLike,
    rgb_weights: str | os.PathLike | None = None,
    flow_weights: str | os.PathLike | None = None,
) -> list[Backbone]:
    """The networks that made the record's features, loaded from the same weights (the
    recorded files, else ``rgb_weights`` / ``flow_weights``; the sha256 must match)."""
    if not record or record.get("source") == "config" or record.get("backbone") == "unknown":
        raise ValueError(
            f"{ckpt}: the checkpoint was trained on features without a features.json (its "
            f"record: {_describe(record)}), so it cannot say how to make features from a "
            "video. Extract them as its training features were made, and predict on that "
            "folder (dataset.datamodule.predict_path=<folder>)"
        )
    given = {"rgb": rgb_weights, "flow": flow_weights}
    weights = record.get("weights") or {}
    backbones = []
    for name, stream in zip(record["models"], record["streams"]):
        saved = weights.get(stream)
        if not saved:
            raise ValueError(
                f"{ckpt}: its {stream} features were made by {name} with random weights "
                "(no weights file recorded): they cannot be made again"
            )
        if given.get(stream):
            path = str(given[stream])
        elif saved.get("enum"):  # torchvision's default weights, from torch's hub cache
            path = "DEFAULT"
        else:
            path = str(saved["path"])
            if not Path(path).is_file():
                raise FileNotFoundError(
                    f"the {stream} weights of the checkpoint's features, {path} (sha256 "
                    f"{saved['sha256']}), are not there: pass extract.{stream}_weights=<that "
                    "file where it is now>"
                )
        backbone = load_backbone(name, path)
        found = (backbone.weights or {}).get("sha256")
        if found != saved["sha256"]:
            raise ValueError(
                f"{backbone.weights['path'] if backbone.weights else path}: sha256 {found}, "
                f"but the checkpoint's {stream} features were made with {saved['path']} "
                f"(sha256 {saved['sha256']}); give extract.{stream}_weights that file"
            )
        backbones.append(backbone)
    return backbones


def _flow_options(record: Mapping[str, Any]) -> TVL1Options | None:
    flow = record.get("flow")
    if not flow:
        return None
    names = {f.name for f in dataclasses.fields(TVL1Options)}
    return TVL1Options(**{k: v for k, v in flow.items() if k in names})


def extract_for_checkpoint(
    record: Mapping[str, Any] | None,
    videos: str | os.PathLike,
    out: str | os.PathLike,
    *,
    ckpt: str | os.PathLike,
    rgb_weights: str | os.PathLike | None = None,
    flow_weights: str | os.PathLike | None = None,
    device: str | None = None,
    workers: int = 2,
    batch_size: int = 8,
    progress: bool = True,
) -> Path:
    """Features of ``videos`` (a video file or a folder of them) in ``out``, made with the
    settings of ``record`` (the checkpoint ``ckpt``'s features record). Returns what to
    predict on: the video's ``.npy`` for one file, else ``out``. Videos that cannot be
    used are named in the log; none usable is an error naming each."""
    backbones = backbones_for(record, ckpt=ckpt, rgb_weights=rgb_weights, flow_weights=flow_weights)
    assert record is not None  # backbones_for refuses a missing record
    ids = [vid for vid, _ in find_videos(videos)]
    log.info(
        "extracting the features of %d video(s) into %s with the checkpoint's settings (%s)",
        len(ids), Path(out).resolve(), _describe(record),
    )  # fmt: skip
    report = extract_folder(
        videos,
        out,
        backbones,
        backbone=str(record["backbone"]),
        fps=record.get("fps_exact") or record["fps"],
        window=int(record["window"]),
        stride=int(record["stride"]),
        size=record.get("size"),
        crop=record.get("crop"),
        flow=_flow_options(record),
        batch_size=batch_size,
        device=device,
        workers=workers,
        progress=progress,
    )
    log.info("%s", report.summary())
    usable = [vid for vid in ids if vid not in report.failed]
    if not usable:
        raise ValueError(
            f"no video of {videos} can be used:\n  "
            + "\n  ".join(f"{vid}: {why}" for vid, why in report.failed.items())
        )
    if Path(videos).is_file():
        return Path(out) / f"{ids[0]}.npy"
    return Path(out)
