"""The SALAD network (:mod:`.net`) and its post-processing (:mod:`.postprocess`)."""

from salad_lightning.models.net import SaladNet, SaladOutput
from salad_lightning.models.postprocess import (
    batched_soft_nms,
    decode,
    fuse_scores,
    offsets_to_segments,
    postprocess_batch,
    segment_iou,
    soft_nms,
    topk,
)

__all__ = [
    "SaladNet",
    "SaladOutput",
    "batched_soft_nms",
    "decode",
    "fuse_scores",
    "offsets_to_segments",
    "postprocess_batch",
    "segment_iou",
    "soft_nms",
    "topk",
]
