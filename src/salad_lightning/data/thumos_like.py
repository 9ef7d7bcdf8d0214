"""A THUMOS14-shaped benchmark: real THUMOS14 timing, synthetic I3D-like features.

Reads a real THUMOS14 annotation file (every video's duration, fps, instances and
classes, both subsets) and writes, in ActionFormer's layout::

    {out}/annotations/thumos14.json      the annotation file, kept videos only
    {out}/i3d_features/{video_id}.npy    (T, 2048) float32, stride 4, window 16

``T = (frames - 16) // 4 + 1`` with ``frames = floor(duration * fps)`` (the count of
ActionFormer's release), feature ``i`` covering frames ``[4i, 4i + 16)``. The features come from the generative model of
``synthetic.py`` (:func:`~salad_lightning.data.synthetic.synthesize_features`)
driven by the real segments and labels; see docs/synthetic.md.

    python -m salad_lightning.data.thumos_like --annotations PATH --out DIR \\
        [--fraction 0.1] [--test-fraction 1.0] [--seed 0] [--feature-dim 2048] \\
        [--dtype float32] [--amplitude 1.0] [--noise 0.5]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from salad_lightning.data.annotations import class_index_from_file
from salad_lightning.data.synthetic import (
    GENERATOR_VERSION,
    FeatureModel,
    class_patterns,
    synthesize_features,
)
from salad_lightning.utils.io import build_folder_atomically

ANNOTATION_PATH = "annotations/thumos14.json"
# the real THUMOS14 annotation file kept in the repository (data/thumos14/README.md)
REPO_ANNOTATIONS = Path(__file__).resolve().parents[3] / "data" / "thumos14" / "thumos14.json.gz"
FEATURE_DIR = "i3d_features"


def select_videos(
    database: dict, fraction: float, *, subset_fractions: Mapping[str, float] | None = None
) -> list[str]:
    """A deterministic ``fraction`` of each subset's videos, in file order.

    ``subset_fractions`` gives a subset its own share instead (e.g. ``{"Test": 1.0}``:
    train on a fraction of ``Validation``, test on every ``Test`` video). Videos are
    ranked by the SHA-1 of their id (no seed), so the selection does not change with the
    feature seed. Each subset keeps its first ``ceil(fraction * n)`` videos plus, for
    every label of the subset that those miss, its first video with that label: every
    class stays in every subset (per-class AP needs it, and a class index by
    ``label_id`` needs all ids). A smaller fraction is a subset of a larger one.
    """
    shares = {None: fraction, **(subset_fractions or {})}
    for name, share in shares.items():
        if not 0.0 < share <= 1.0:
            which = "fraction" if name is None else f"the fraction of subset {name!r}"
            raise ValueError(f"{which} must be in (0, 1], found {share}")
    by_subset: dict[str, list[str]] = {}
    for vid, video in database.items():
        by_subset.setdefault(str(video.get("subset")), []).append(vid)
    keep: set[str] = set()
    for subset, vids in by_subset.items():
        share = shares.get(subset, fraction)
        ranked = sorted(vids, key=lambda v: hashlib.sha1(v.encode()).hexdigest())
        kept = ranked[: max(1, math.ceil(share * len(vids) - 1e-9))]
        seen = {a["label"] for v in kept for a in database[v].get("annotations", [])}
        for vid in ranked[len(kept) :]:
            labels = {a["label"] for a in database[vid].get("annotations", [])}
            if labels - seen:
                kept.append(vid)
                seen |= labels
        keep.update(kept)
    return [vid for vid in database if vid in keep]


def _grouped_segments(annotations: list[dict], index: dict[str, int]):
    """Segments with all their labels: identical segments carry one blended pattern."""
    groups: dict[tuple[float, float], list[int]] = {}
    for a in annotations:
        key = (float(a["segment"][0]), float(a["segment"][1]))
        k = index[a["label"]]
        if k not in groups.setdefault(key, []):
            groups[key].append(k)
    return np.array(list(groups), dtype=np.float64).reshape(-1, 2), list(groups.values())


def make_thumos_like(
    annotations: str | os.PathLike,
    out: str | os.PathLike,
    *,
    fraction: float = 1.0,
    test_fraction: float | None = None,
    seed: int = 0,
    feature_dim: int = 2048,
    dtype: str = "float32",
    stride: int = 4,
    window: int = 16,
    default_fps: float = 30.0,
    model: FeatureModel | None = None,
) -> Path:
    """Write the benchmark into ``out`` (skipped when it is there with the same parameters).

    ``fraction`` of each subset's videos (:func:`select_videos`); ``test_fraction``, when
    given, the share of the ``Test`` subset instead.
    """
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be float32 or float16, found {dtype!r}")
    raw = Path(annotations).read_bytes()
    if str(annotations).endswith(".gz"):
        raw = gzip.decompress(raw)
    doc = json.loads(raw)
    if "database" not in doc:
        raise ValueError(f"{annotations}: expected an ActivityNet-style file with a 'database' key")
    database = doc["database"]
    model = model or FeatureModel()
    params = {
        "annotations_sha256": hashlib.sha256(raw).hexdigest(),
        "fraction": float(fraction),
        "seed": int(seed),
        "feature_dim": int(feature_dim),
        "dtype": dtype,
        "stride": int(stride),
        "window": int(window),
        "default_fps": float(default_fps),
        "feature_model": asdict(model),
    }
    subset_fractions = None
    if test_fraction is not None:  # only then in params: older folders stay valid
        params["test_fraction"] = float(test_fraction)
        subset_fractions = {"Test": float(test_fraction)}
    kept = select_videos(database, fraction, subset_fractions=subset_fractions)
    index = class_index_from_file(annotations, doc)[0].name_to_id

    def build(tmp: Path) -> None:
        patterns = class_patterns(max(index.values()) + 1, feature_dim, seed)  # by label_id
        (tmp / FEATURE_DIR).mkdir()
        for vid in kept:
            video = database[vid]
            segments, labels = _grouped_segments(video.get("annotations", []), index)
            feats = synthesize_features(
                segments=segments,
                labels=labels,
                duration=float(video["duration"]),
                fps=float(video.get("fps") or default_fps),
                stride=stride,
                window=window,
                patterns=patterns,
                model=model,
                rng=np.random.default_rng([seed, 2, *vid.encode()]),
            )
            np.save(tmp / FEATURE_DIR / f"{vid}.npy", feats.astype(dtype))
        subset_doc = {**doc, "database": {vid: database[vid] for vid in kept}}
        (tmp / ANNOTATION_PATH).parent.mkdir()
        (tmp / ANNOTATION_PATH).write_text(json.dumps(subset_doc))

    return build_folder_atomically(out, {"generator_version": GENERATOR_VERSION, **params}, build)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m salad_lightning.data.thumos_like", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--annotations",
        default=str(REPO_ANNOTATIONS),
        help="THUMOS14 annotation JSON, gzipped or not (default: the copy in data/thumos14/)",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--fraction", type=float, default=1.0, help="share of each subset's videos to keep"
    )
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=None,
        help="share of the Test subset's videos to keep (default: --fraction)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--feature-dim", type=int, default=2048)
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    parser.add_argument(
        "--amplitude", type=float, default=None, help="action pattern strength (FeatureModel)"
    )
    parser.add_argument("--noise", type=float, default=None, help="per-step noise (FeatureModel)")
    args = parser.parse_args(argv)
    changes = {k: getattr(args, k) for k in ("amplitude", "noise") if getattr(args, k) is not None}
    out = make_thumos_like(
        args.annotations,
        args.out,
        fraction=args.fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
        feature_dim=args.feature_dim,
        dtype=args.dtype,
        model=FeatureModel(**changes),
    )
    database = json.loads((out / ANNOTATION_PATH).read_text())["database"]
    subsets: dict[str, int] = {}
    for video in database.values():
        subsets[video["subset"]] = subsets.get(video["subset"], 0) + 1
    files = list((out / FEATURE_DIR).glob("*.npy"))
    size = sum(f.stat().st_size for f in files)
    print(f"{out}: {len(files)} videos {subsets}, features {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
