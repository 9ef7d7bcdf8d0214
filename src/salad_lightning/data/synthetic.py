"""A synthetic temporal-action-detection dataset in the real on-disk format.

``ensure_synthetic_dataset(root, **params)`` writes ``{root}/annotations.json``
(ActivityNet style, THUMOS14 subsets ``Validation`` for training and ``Test``) and
``{root}/features/{video_id}.npy`` (T, C) float32 clip features: feature ``i``
covers frames ``[i*stride, i*stride + window)`` (docs/method.md §1). Timing follows
THUMOS14's statistics; the features need temporal context (docs/synthetic.md).

``python -m salad_lightning.data.synthetic --root DIR [--seed S] [--set KEY=VALUE]
--stats`` generates (when missing or when its parameters differ: defaults plus the
ones given) and prints the statistics (:mod:`salad_lightning.data.statistics`, which
also reads any ActivityNet-style file, e.g. the real THUMOS14 one).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from salad_lightning.utils.io import build_folder_atomically

GENERATOR_VERSION = 1  # bump when the same parameters would give different bytes


@dataclass(frozen=True)
class FeatureModel:
    """How features are synthesised from segments (shared with ``thumos_like``).

    Amplitudes are in projection units: a class pattern direction has unit norm,
    ``noise`` is the per-dimension standard deviation of one clip feature.
    """

    amplitude: float = 1.0  # strength of an action's pattern at full envelope
    amplitude_jitter: float = 0.3  # per-instance amplitude ~ U(1-j, 1+j) * amplitude
    ramp_seconds: float = 1.0  # envelope ramps over min(ramp, length/3) at each end
    noise: float = 0.5
    drift: float = 0.3  # amplitude of each slow background component
    drift_components: int = 4  # sinusoids, plus one constant per-video offset
    drift_period_min: float = 20.0  # seconds
    drift_period_max: float = 200.0
    decoy_rate: float = 0.3  # decoys per action instance, placed in background
    decoy_strength: float = 0.5  # relative to amplitude; static pattern, no phase


def class_patterns(num_classes: int, feature_dim: int, seed: int) -> np.ndarray:
    """(K, 2, C) unit directions ``u_k, v_k``; orthonormal when ``2K <= C``."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    g = rng.standard_normal((feature_dim, 2 * num_classes))
    if 2 * num_classes <= feature_dim:
        q, r = np.linalg.qr(g)
        g = q * np.sign(np.diag(r))  # fix the sign convention of QR
    g = g / np.linalg.norm(g, axis=0, keepdims=True)
    return g.T.reshape(num_classes, 2, feature_dim)


def num_clips(duration: float, fps: float, stride: int, window: int) -> int:
    """Clips of ``window`` frames every ``stride`` frames that fit in the video.

    ``(frames - window) // stride + 1``, the count of the THUMOS14 I3D features that
    ActionFormer uses (e.g. 1269 steps for a 169.8 s, 30 fps video: maintainers in
    happyharrycn/actionformer_release#5); at least one.
    """
    frames = int(np.floor(duration * fps + 1e-6))
    return max(1, (frames - window) // stride + 1)


def _envelope(t: np.ndarray, start: float, end: float, ramp: float) -> np.ndarray:
    r = max(min(ramp, (end - start) / 3.0), 1e-6)
    return np.clip(np.minimum(t - start, end - t) / r, 0.0, 1.0)


def synthesize_features(
    *,
    segments: np.ndarray,
    labels: Sequence[Sequence[int]],
    duration: float,
    fps: float,
    stride: int,
    window: int,
    patterns: np.ndarray,
    model: FeatureModel,
    rng: np.random.Generator,
    length_median: float = 3.0,
    length_sigma: float = 0.84,
) -> np.ndarray:
    """Features (T, C) float32 of one video whose actions are ``segments`` (N, 2) seconds.

    ``labels[n]`` lists the class indices of segment n (several = co-labelled). The
    signal is evaluated on blocks of ``stride`` frames and each clip averages the
    ``window / stride`` blocks it spans, so overlapping clips share signal and noise
    as real clip features do.
    """
    num_classes, _, dim = patterns.shape
    steps = num_clips(duration, fps, stride, window)
    m = max(1, round(window / stride))
    nb = steps + m - 1
    t = (np.arange(nb) * stride + 0.5 * (window - (m - 1) * stride)) / fps
    x = rng.standard_normal((nb, dim), dtype=np.float32) * np.float32(model.noise * np.sqrt(m))

    # slow background drift: a per-video offset and a few low-frequency sinusoids
    dirs = rng.standard_normal((model.drift_components + 1, dim))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    periods = rng.uniform(model.drift_period_min, model.drift_period_max, model.drift_components)
    phases = rng.uniform(0.0, 2 * np.pi, model.drift_components)
    waves = np.sin(2 * np.pi * t[:, None] / periods + phases)
    x += (model.drift * (waves @ dirs[1:] + dirs[0])).astype(np.float32)

    # actions: identical segments with several labels carry one blended pattern
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    for (s, e), labs in zip(segments, labels):
        if e <= s:
            continue
        uv = patterns[list(labs)].sum(axis=0)
        uv /= np.linalg.norm(uv, axis=1, keepdims=True)
        amp = model.amplitude * rng.uniform(1 - model.amplitude_jitter, 1 + model.amplitude_jitter)
        lo, hi = np.searchsorted(t, [s, e])
        if hi <= lo:
            continue
        tt = t[lo:hi]
        env = amp * _envelope(tt, s, e, model.ramp_seconds)
        phase = np.pi * (tt - s) / (e - s)
        sig = np.outer(env * np.cos(phase), uv[0]) + np.outer(env * np.sin(phase), uv[1])
        x[lo:hi] += sig.astype(np.float32)

    # decoys: background stretches with a weak, static (phase-free) class pattern
    n_decoys = rng.poisson(model.decoy_rate * len(segments))
    busy = np.zeros(nb, dtype=bool)
    for s, e in segments:
        busy[np.searchsorted(t, s) : np.searchsorted(t, e)] = True
    for _ in range(n_decoys):
        k = rng.integers(num_classes)
        length = min(rng.lognormal(np.log(length_median), length_sigma), 0.5 * duration)
        s = rng.uniform(0.0, max(duration - length, 1e-6))
        lo, hi = np.searchsorted(t, [s, s + length])
        if hi <= lo or busy[lo:hi].any():
            continue  # only in background; a rejected try is simply dropped
        direction = (patterns[k, 0] + patterns[k, 1]) / np.sqrt(2.0)
        env = (
            model.decoy_strength
            * model.amplitude
            * _envelope(t[lo:hi], s, s + length, model.ramp_seconds)
        )
        x[lo:hi] += np.outer(env, direction).astype(np.float32)

    if m > 1:  # clip i averages blocks i .. i+m-1
        x = sum(x[j : j + steps] for j in range(m)) / np.float32(m)
    return np.ascontiguousarray(x[:steps], dtype=np.float32)


@dataclass(frozen=True)
class SyntheticConfig(FeatureModel):
    """Sizes and timing of the synthetic dataset, plus its feature model (docs/synthetic.md)."""

    num_train_videos: int = 60
    num_test_videos: int = 30
    num_classes: int = 20
    feature_dim: int = 64
    fps: float = 30.0
    stride: int = 16
    window: int = 16
    # timing (THUMOS14: 15 instances/video, median 8; length median 3.0 s, mean 4.3 s)
    instances_per_video: float = 15.0  # mean of a lognormal count
    count_sigma: float = 1.1  # heavy tail: median = mean * exp(-sigma^2 / 2)
    max_instances: int = 60
    length_median: float = 3.0  # seconds, lognormal
    length_sigma: float = 0.84
    min_length: float = 0.5
    max_length: float = 60.0
    coverage: float = 0.29  # mean share of a video covered by actions, Beta distributed
    coverage_concentration: float = 6.0
    min_duration: float = 10.0
    max_duration: float = 600.0
    second_class_prob: float = 0.1  # a video shows one class, sometimes two
    # class pairs as in THUMOS14 (label ids of CliffDiving/Diving, CricketBowling/CricketShot);
    # ignored when an index is >= num_classes
    colabel_pair: tuple[int, int] = (4, 7)  # (child, parent): a child is always also a parent
    colabel_prob: float = 0.5  # share of the pair's instances that carry both labels
    chain_pair: tuple[int, int] = (5, 6)  # (a, b): b often starts before a ends
    chain_prob: float = 0.3
    seed: int = 0

    def feature_model(self) -> FeatureModel:
        return FeatureModel(**{f.name: getattr(self, f.name) for f in fields(FeatureModel)})


def class_names(num_classes: int) -> list[str]:
    return [f"class_{k:02d}" for k in range(num_classes)]


def _sample_video(rng: np.random.Generator, cfg: SyntheticConfig, classes: list[int]):
    """One video's duration (s) and segments [(start, end, labels)], THUMOS14-like.

    ``classes[0]`` is the main class; each class in ``classes`` gets at least one instance.
    """
    mu = np.log(cfg.instances_per_video) - 0.5 * cfg.count_sigma**2
    n = int(np.clip(round(rng.lognormal(mu, cfg.count_sigma)), 1, cfg.max_instances))
    if len(classes) == 1 and cfg.num_classes > 1 and rng.random() < cfg.second_class_prob:
        classes = classes + [
            int((classes[0] + 1 + rng.integers(cfg.num_classes - 1)) % cfg.num_classes)
        ]
    n = max(n, len(classes))

    def length() -> float:
        val = rng.lognormal(np.log(cfg.length_median), cfg.length_sigma)
        return float(np.clip(val, cfg.min_length, cfg.max_length))

    child, parent = cfg.colabel_pair if max(cfg.colabel_pair) < cfg.num_classes else (-1, -1)
    first, second = cfg.chain_pair if max(cfg.chain_pair) < cfg.num_classes else (-1, -1)
    units = []  # each unit: list of (offset, length, labels), laid out without gaps
    for j in range(n):
        if j < len(classes):
            k = classes[j]
        elif len(classes) == 1 or rng.random() < 0.8:
            k = classes[0]
        else:
            k = classes[1 + rng.integers(len(classes) - 1)]
        a = length()
        if k == child and j < len(classes):  # the child class must occur
            units.append([(0.0, a, (child, parent))])
        elif k in (child, parent):  # a video of the pair: some instances co-labelled
            labs = (child, parent) if rng.random() < cfg.colabel_prob else (parent,)
            units.append([(0.0, a, labs)])
        elif k == first and rng.random() < cfg.chain_prob:
            units.append([(0.0, a, (first,)), (a * rng.uniform(0.6, 1.0), length(), (second,))])
        else:
            units.append([(0.0, a, (k,))])
    spans = np.array([max(o + ln for o, ln, _ in u) for u in units])
    conc = cfg.coverage_concentration
    cov = np.clip(rng.beta(cfg.coverage * conc, (1 - cfg.coverage) * conc), 0.05, 0.9)
    duration = float(np.clip(spans.sum() / cov, cfg.min_duration, cfg.max_duration))
    while len(units) > len(classes) and spans.sum() > 0.9 * duration:
        units, spans = units[:-1], spans[:-1]
    duration = max(duration, spans.sum() / 0.9)  # the video's classes must fit
    order = rng.permutation(len(units))
    gaps = rng.dirichlet(np.ones(len(units) + 1)) * max(duration - spans.sum(), 0.0)
    segs, pos = [], gaps[0]
    for u, gap in zip(order, gaps[1:]):
        segs += [(pos + o, min(pos + o + ln, duration), labs) for o, ln, labs in units[u]]
        pos += spans[u] + gap
    return round(duration, 2), [(round(s, 2), round(e, 2), labs) for s, e, labs in segs]


def _write_dataset(tmp: Path, cfg: SyntheticConfig) -> None:
    names = class_names(cfg.num_classes)
    patterns = class_patterns(cfg.num_classes, cfg.feature_dim, cfg.seed)
    model = cfg.feature_model()
    (tmp / "features").mkdir()
    database = {}
    for split, subset, count in (
        (1, "Validation", cfg.num_train_videos),
        (2, "Test", cfg.num_test_videos),
    ):
        # main classes cycle through a shuffled list; a split with fewer videos than
        # classes hands the remaining classes out as extra classes: every class
        # occurs in every split (the data layer indexes classes by label_id 0..K-1)
        order = [
            int(k) for k in np.random.default_rng([cfg.seed, 3, split]).permutation(cfg.num_classes)
        ]
        for i in range(count):
            vid = f"synth_{subset.lower()}_{i:05d}"
            classes = [order[i % cfg.num_classes]] + order[count + i :: count]
            rng = np.random.default_rng([cfg.seed, 1, split, i])
            duration, segs = _sample_video(rng, cfg, classes)
            ann = [
                {"label": names[k], "segment": [s, e], "label_id": k}
                for s, e, labs in segs
                for k in labs
            ]
            ann.sort(key=lambda a: (a["label_id"], a["segment"][0]))
            database[vid] = {
                "subset": subset,
                "duration": duration,
                "fps": cfg.fps,
                "annotations": ann,
            }
            feats = synthesize_features(
                segments=np.array([(s, e) for s, e, _ in segs]),
                labels=[labs for *_, labs in segs],
                duration=duration,
                fps=cfg.fps,
                stride=cfg.stride,
                window=cfg.window,
                patterns=patterns,
                model=model,
                rng=np.random.default_rng([cfg.seed, 2, split, i]),
                length_median=cfg.length_median,
                length_sigma=cfg.length_sigma,
            )
            np.save(tmp / "features" / f"{vid}.npy", feats)
    doc = {"version": f"salad-synthetic-v{GENERATOR_VERSION}", "database": database}
    (tmp / "annotations.json").write_text(json.dumps(doc, indent=1))


def ensure_synthetic_dataset(
    root: str | os.PathLike, config: SyntheticConfig | None = None, **params
) -> Path:
    """Generate the dataset into ``root`` when missing or when its parameters changed."""
    known = {f.name for f in fields(SyntheticConfig)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise TypeError(f"unknown synthetic dataset parameter(s) {unknown}; known: {sorted(known)}")
    base = asdict(config or SyntheticConfig())
    # coerce to the field types (Hydra passes 90 for 90.0 and lists for tuples), so
    # that equal values always write equal bytes and compare equal in params.json
    for key, value in params.items():
        default = base[key]
        if isinstance(default, tuple):
            params[key] = tuple(int(v) for v in value)
        elif isinstance(default, int) and float(value) != int(value):
            raise ValueError(
                f"synthetic dataset parameter {key} must be an integer, found {value!r}"
            )
        elif isinstance(default, (int, float)):
            params[key] = type(default)(value)
    cfg = SyntheticConfig(**{**base, **params})
    params = {"generator_version": GENERATOR_VERSION, **asdict(cfg)}
    return build_folder_atomically(root, params, lambda tmp: _write_dataset(tmp, cfg))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m salad_lightning.data.synthetic", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--root", help="dataset folder (generated when missing or stale)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any SyntheticConfig field, e.g. --set num_train_videos=20 (repeatable)",
    )
    parser.add_argument("--stats", action="store_true", help="print the dataset's statistics")
    parser.add_argument("--subset", help="restrict the statistics to one subset")
    args = parser.parse_args(argv)
    if not args.root:
        parser.error(
            "give --root DIR (python -m salad_lightning.data.statistics FILE reads any file)"
        )
    params = dict(item.split("=", 1) for item in args.set)
    params = {k: json.loads(v) if v[:1] in "[0123456789-." else v for k, v in params.items()}
    root = ensure_synthetic_dataset(args.root, seed=args.seed, **params)
    print(f"synthetic dataset ready: {root}")
    if args.stats:
        from salad_lightning.data.statistics import dataset_statistics, format_statistics

        print(format_statistics(dataset_statistics(root / "annotations.json", args.subset)))


if __name__ == "__main__":
    main()
