"""What a decoding worker does: a video's frames (and flow) in runs of whole slices.

For each video of its share (a worker takes every ``num_workers``-th video, whole), a
worker sends ``start`` (with the frame count the container announces, for a progress
bar), then ``chunk`` messages, each with the frames of ``slices_per_chunk`` consecutive
whole slices (``geometry.SliceChunker``) as tensors: ``rgb`` (n, H, W, 3) uint8 and
``flow`` (n, H, W, 2) float32 in [-1, 1], either absent when not needed; then ``end``
with the video's record, or ``error`` with the reason when the video cannot be used
(it cannot be decoded, or it is shorter than one slice). The main process
(``extract/extractor.py``) turns runs into clips.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from salad_lightning.extract.flow import TVL1Flow, TVL1Options, frames_with_flow
from salad_lightning.extract.geometry import SliceChunker, num_slices
from salad_lightning.extract.video import ResampledVideo, VideoDecodeError

__all__ = ["FramePlan", "FrameRuns"]


@dataclass(frozen=True)
class FramePlan:
    """How frames are taken from each video and grouped."""

    fps: str  # the exact rate, "25" or "30000/1001"
    size: int  # shorter side after resizing
    crop: int  # centre crop
    window: int  # frames per slice
    stride: int  # frames between slice starts
    slices_per_chunk: int  # slices per message: one forward per stream
    rgb: bool  # send the RGB frames
    flow: TVL1Options | None  # compute and send TV-L1 flow with these options


class FrameRuns(IterableDataset):
    """The messages above for ``videos`` (``(video_id, path)`` pairs), in order per video."""

    def __init__(self, videos: Sequence[tuple[str, Path]], plan: FramePlan) -> None:
        super().__init__()
        self.videos, self.plan = list(videos), plan

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker = get_worker_info()
        share = range(len(self.videos))
        if worker is not None:
            share = share[worker.id :: worker.num_workers]
        flow = None
        if self.plan.flow is not None:
            flow = TVL1Flow(self.plan.flow, threads=1 if worker is not None else None)
        for index in share:
            yield from self._video(index, flow)

    def _video(self, index: int, flow: TVL1Flow | None) -> Iterator[dict[str, Any]]:
        p = self.plan
        path = self.videos[index][1]
        reader = ResampledVideo(path, fps=p.fps, size=p.size, crop=p.crop)
        chunker = SliceChunker(
            window=p.window, stride=p.stride, slices_per_chunk=p.slices_per_chunk
        )
        try:
            frames = iter(reader)
            items = frames_with_flow(frames, flow) if flow is not None else frames
            for item in items:
                if chunker.seen == 0:
                    yield {"kind": "start", "video": index, "expected": reader.expected_frames}
                chunk = chunker.push(item)
                if chunk is not None:
                    yield self._chunk(index, chunk, chunker.seen)
            chunk = chunker.flush()
            if chunk is not None:
                yield self._chunk(index, chunk, chunker.seen)
            info = reader.info
            if num_slices(info.frames, window=p.window, stride=p.stride) == 0:
                raise VideoDecodeError(
                    path,
                    f"{info.frames} frames at {p.fps} fps ({info.duration:.3f} s): shorter "
                    f"than one slice of {p.window} frames",
                )
            yield {"kind": "end", "video": index, "info": info.as_dict()}
        except (VideoDecodeError, OSError) as err:
            yield {"kind": "error", "video": index, "reason": getattr(err, "problem", str(err))}

    def _chunk(self, index: int, chunk: tuple[int, list], seen: int) -> dict[str, Any]:
        first, items = chunk
        rgb = fields = None
        if self.plan.flow is None:
            rgb = torch.from_numpy(np.stack(items))
        else:
            fields = torch.from_numpy(np.stack([item[1] for item in items]))
            if self.plan.rgb:
                rgb = torch.from_numpy(np.stack([item[0] for item in items]))
        return {
            "kind": "chunk",
            "video": index,
            "first": first,
            "seen": seen,
            "rgb": rgb,
            "flow": fields,
        }
