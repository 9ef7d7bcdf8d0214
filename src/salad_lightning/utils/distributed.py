"""Gathering per-video results across DDP processes."""

from __future__ import annotations

from typing import Any

import torch


def gather_videos(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rank's per-video results on every rank (DDP splits the videos), once each."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return items
    parts: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(parts, items)
    seen: set[str] = set()
    merged = []
    for part in parts:
        for item in part:
            if item["video_id"] not in seen:
                seen.add(item["video_id"])
                merged.append(item)
    return merged
