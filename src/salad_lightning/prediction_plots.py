"""The timeline of a prediction without ground truth: one video's detections by score.

`plots.plot_timeline` marks each detection true or false positive against the ground
truth; a new video has none, so here each detection is coloured by its class and named
in the legend. matplotlib with the Agg backend, chosen inside the function.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from salad_lightning.data.detections import VideoDetections

__all__ = ["plot_detections"]

# seconds of video per row before the timeline wraps onto another (at most 6 rows)
SECONDS_PER_ROW = 120.0


def plot_detections(
    video: VideoDetections,
    class_names: Sequence[str | None],
    path: str | Path,
    *,
    duration: float | None = None,
    max_detections: int = 30,
    labelled: int = 5,
) -> None:
    """The ``max_detections`` best-scored detections of ``video`` drawn over ``[0,
    duration]`` (seconds) at the height of their score, coloured by class (legend: the
    class names), the ``labelled`` best also named on the figure. A long video wraps
    over rows of about ``SECONDS_PER_ROW`` seconds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    segs, scores, labels = video.segments, video.scores, video.labels
    shown = np.argsort(-scores, kind="stable")[:max_detections]
    ends = [1.0, *segs[shown, 1].tolist()]
    end = float(duration) if duration is not None and math.isfinite(duration) else max(ends)
    end = max(end, 1e-3)
    n_rows = int(np.clip(math.ceil(end / SECONDS_PER_ROW), 1, 6))
    width = end / n_rows

    def name(c: int) -> str:
        found = class_names[c] if 0 <= c < len(class_names) else None
        return found if found is not None else f"class {c}"

    classes = sorted(set(labels[shown].tolist()), key=lambda c: -scores[labels == c].max())
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    color = {c: cmap(i % cmap.N) for i, c in enumerate(classes)}
    top = max(1.0, float(scores.max(initial=0))) * 1.08
    fig, axes = plt.subplots(n_rows, 1, figsize=(12, 1.3 + 2.0 * n_rows), squeeze=False)
    for r, ax in enumerate(axes[:, 0]):
        for k in shown[::-1]:  # the best scores drawn last, on top
            ax.hlines(scores[k], *segs[k], color=color[labels[k]], lw=2.6)
        for k in shown[:labelled]:
            mid = 0.5 * (segs[k, 0] + segs[k, 1])
            if r * width <= mid <= (r + 1) * width:
                ax.annotate(
                    f"{name(int(labels[k]))} {scores[k]:.2f}", (mid, scores[k]),
                    xytext=(0, 4), textcoords="offset points", ha="center", fontsize=8,
                )  # fmt: skip
        ax.set_xlim(r * width, (r + 1) * width)
        ax.set_ylim(-0.03, top)
        ax.set_ylabel("score")
        ax.grid(axis="y", ls=":", lw=0.6)
    axes[-1, 0].set_xlabel("time (s)")
    handles = [plt.Line2D([], [], color=color[c], lw=2.6, label=name(c)) for c in classes]
    if handles:
        axes[0, 0].legend(handles=handles, loc="lower left", bbox_to_anchor=(0, 1.0),
                          ncol=min(5, len(handles)), fontsize=8, frameon=False)  # fmt: skip
    fig.suptitle(
        f"{video.video_id}: the top {len(shown)} of {len(scores)} detections by score "
        f"({end:.1f} s of video; no ground truth)",
        fontsize=10,
    )
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
