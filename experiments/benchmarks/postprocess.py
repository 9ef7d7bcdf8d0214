"""Time soft-NMS per video against ActionFormer's compiled soft-NMS and the literal loop.

    python experiments/benchmarks/postprocess.py [--repeats 21] [--peer-dir /tmp/peer_nms]
        [--no-peer] [--device cuda] [--threads 1]

Cases (``thumos_like_proposals`` of ``tests/_literal_nms.py``, float32 as a network gives
them): a THUMOS14-sized video, 2,300 proposals, 20 classes, 200 kept, with the classes
alike, one class holding 90% of the proposals, two classes; a short THUMOS14 video (400
proposals, two classes, where most proposals overlap and most are kept: the case our
rounds suit least); an ActivityNet-sized one, 100 proposals, 200 classes (90% one), 20
kept. Gaussian, sigma 0.5, min_score 0.001.

Per case, on one thread (``--threads``), each timed ``--repeats`` times in turn (median):

- ``ours``: ``batched_soft_nms`` on CPU tensors, i.e. ``soft_nms_numpy``, the path
  ``postprocess_batch`` takes on the CPU;
- ``peer``: ActionFormer's ``batched_nms`` (``actionformer/utils/nms.py`` in the sdist,
  ``libs/utils/nms.py`` on GitHub; multiclass soft-NMS: the compiled
  ``nms_1d_cpu.softnms`` per class, then one sort and cut), given the proposals with a
  score >= min_score (ActionFormer filters before its NMS; ours filters inside, in the
  time);
- ``literal``: the plain-Python loop of ``tests/_literal_nms.py`` (3 runs);
- ``torch loop``: ``batched_soft_nms(..., backend="torch")`` on the CPU, the loop a GPU runs (3 runs).

and whether the kept proposals agree: with the literal loop, the same positions in the
same order; with the peer, the same set (its float32 arithmetic and its ties differ).

The peer comes from PyPI when it can (``pip download --no-deps --no-binary :all:
--no-build-isolation actionformer==1.5.0``, then its own ``setup.py build_ext --inplace``
in ``--peer-dir``, about a minute, reused by later runs); it is never installed. Without
it the literal loop is the baseline. ``--device cuda`` also times ``postprocess_batch`` on
a batch of videos there and checks it against the CPU. The figures are in
``experiments/benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import torch

from salad_lightning.models.nms import batched_soft_nms
from salad_lightning.models.postprocess import offsets_to_segments, postprocess_batch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from _literal_nms import literal_soft_nms, thumos_like_proposals  # noqa: E402

PEER = "actionformer==1.5.0"
MIN_SCORE, SIGMA = 0.001, 0.5
CASES = [  # name, proposals, classes, label mode, kept
    ("THUMOS14, 20 classes alike", 2300, 20, "even", 200),
    ("THUMOS14, one class 90%", 2300, 20, "dominant", 200),
    ("THUMOS14, two classes", 2300, 20, "two", 200),
    ("THUMOS14, a short video: 400 proposals, two classes", 400, 20, "two", 200),
    ("ActivityNet, 100 proposals", 100, 200, "dominant", 20),
]


def build_peer(folder: Path):
    """ActionFormer's ``libs/utils/nms.py`` as a module, its extension built in ``folder``.

    Returns ``(module, source folder)``, or ``(None, reason)``.
    """
    py = sys.executable
    folder.mkdir(parents=True, exist_ok=True)
    try:
        src = next(folder.glob("actionformer-*/"), None)
        if src is None:
            subprocess.run(
                [py, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
                + ["--no-build-isolation", PEER, "-d", str(folder)]
                + ["--retries", "1", "--timeout", "15"],  # offline: give up quickly
                check=True,
                capture_output=True,
                timeout=300,
            )
            with tarfile.open(next(folder.glob("actionformer-*.tar.gz"))) as tar:
                if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: no paths outside
                    tar.extractall(folder, filter="data")
                else:
                    tar.extractall(folder)
            src = next(folder.glob("actionformer-*/"))
        if not list(src.glob("nms_1d_cpu*.so")):
            print(f"building ActionFormer's nms_1d_cpu in {src} (about a minute)", flush=True)
            subprocess.run(
                [py, "setup.py", "build_ext", "--inplace"],
                cwd=src,
                check=True,
                capture_output=True,
                timeout=900,
            )
        sys.path.insert(0, str(src))
        spec = importlib.util.spec_from_file_location(
            "actionformer_nms", src / "actionformer" / "utils" / "nms.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except (OSError, StopIteration, subprocess.SubprocessError, ImportError) as err:
        detail = getattr(err, "stderr", b"") or b""
        return None, f"{type(err).__name__}: {err} {detail.decode(errors='replace')[-500:]}"
    if not getattr(module, "HAS_CPP_NMS", False):  # its fallback is Python, not the peer
        return None, f"nms_1d_cpu did not import from {src}"
    return module, src


def peer_indices(out_seg, out_label, seg, label):
    """Positions in the video of the peer's kept (segment, label) rows."""
    where = {(*s, int(c)): i for i, (s, c) in enumerate(zip(seg.tolist(), label.tolist()))}
    return [where[(*s, int(c))] for s, c in zip(out_seg.tolist(), out_label.tolist())]


def median_ms(times):
    return 1e3 * statistics.median(times)


def run_case(name, n, classes, mode, kept, *, peer, repeats, seed=0):
    segments, scores, labels = thumos_like_proposals(n, classes, mode, seed)
    seg = torch.tensor(segments, dtype=torch.float32)
    score = torch.tensor(scores, dtype=torch.float32)
    label = torch.tensor(labels)
    keep = score >= MIN_SCORE
    filtered = (seg[keep], score[keep], label[keep])
    batch = (seg[None], score[None], label[None])

    def ours():
        return batched_soft_nms(*batch, max_segments=kept, sigma=SIGMA, min_score=MIN_SCORE)

    def theirs():
        return peer.batched_nms(
            *filtered,
            iou_threshold=0.5,
            min_score=MIN_SCORE,
            max_seg_num=kept,
            use_soft_nms=True,
            multiclass=True,
            sigma=SIGMA,
        )

    fns = {"ours": ours} | ({"peer": theirs} if peer else {})
    times = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(repeats):  # in turn, so that a busy spell hits every variant
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    index, value, ok = ours()
    ours_index = index[0][ok[0]].tolist()

    times["literal"], times["torch loop"] = [], []
    s64, c64 = seg.double().tolist(), score.double().tolist()
    for _ in range(3):
        t0 = time.perf_counter()
        ref = literal_soft_nms(s64, c64, labels, sigma=SIGMA, max_segments=kept)
        times["literal"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        batched_soft_nms(
            *batch, max_segments=kept, sigma=SIGMA, min_score=MIN_SCORE, backend="torch"
        )
        times["torch loop"].append(time.perf_counter() - t0)
    row = {k: median_ms(t) for k, t in times.items()}
    row["same as literal"] = ours_index == [i for i, _ in ref]
    if peer:
        out_seg, _, out_label = theirs()
        peer_index = peer_indices(out_seg, out_label, seg, label)
        row["same as peer"] = sorted(ours_index) == sorted(peer_index)
    return row


def time_postprocess_batch(device, repeats, batch=4, steps=2300, classes=20):
    g = torch.Generator().manual_seed(1)
    offsets = torch.rand(batch, steps, 2, generator=g)
    score_logits = torch.randn(batch, steps, generator=g) * 2 - 2
    cls_logits = torch.randn(batch, steps, classes + 1, generator=g)
    lengths = torch.full((batch,), steps)
    lengths[-1] = steps // 2
    frame_mask = torch.arange(steps)[None] < lengths[:, None]
    mapping = dict(
        scale=torch.full((batch,), 16 / 30, dtype=torch.float64),
        offset=torch.full((batch,), 8 / 30, dtype=torch.float64),
        duration=torch.full((batch,), steps * 16 / 30, dtype=torch.float64),
    )

    def run(dev):
        out = postprocess_batch(
            segments=offsets_to_segments(offsets.to(dev), 64.0),
            score_logits=score_logits.to(dev),
            cls_logits=cls_logits.to(dev),
            frame_mask=frame_mask.to(dev),
            **{k: v.to(dev) for k, v in mapping.items()},
        )
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return out

    run(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = run(device)
        times.append(time.perf_counter() - t0)
    print(
        f"postprocess_batch on {device}, B={batch}, T={steps}, K={classes}: "
        f"{median_ms(times):.2f} ms (median of {repeats}), kept {[len(r.scores) for r in res]}"
    )
    if device.type != "cpu":
        ref = run(torch.device("cpu"))
        same = all(
            np.array_equal(a.labels, b.labels)
            and np.allclose(a.segments, b.segments, atol=1e-5)
            and np.allclose(a.scores, b.scores, atol=1e-6)
            for a, b in zip(res, ref)
        )
        print(f"{device} result equals the CPU result: {same}")


def machine() -> str:
    model = platform.processor() or "?"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True
    ).stdout.strip()
    return (
        f"{model}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; torch "
        f"{torch.__version__} ({torch.get_num_threads()} thread(s)), numpy {np.__version__}, "
        f"commit {commit or '?'}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--peer-dir", type=Path, default=Path("/tmp/peer_nms"))
    ap.add_argument("--no-peer", action="store_true", help="do not fetch or build the peer")
    ap.add_argument("--device", default="cpu", help="also time postprocess_batch there")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)

    peer = None
    if not args.no_peer:
        peer, where = build_peer(args.peer_dir)
        if peer:
            print(f"peer: {PEER}, nms_1d_cpu built in {where}")
            print(
                f"  its test: PYTHONPATH={where} pytest tests/test_postprocess.py -k actionformer"
            )
        else:
            print(f"peer not available ({where}); the literal loop is the baseline")
    print(machine())
    cols = ["ours", "peer", "literal", "torch loop"] if peer else ["ours", "literal", "torch loop"]
    head = " | ".join(f"{c} ms" for c in cols)
    ratios = (["ours/peer"] if peer else []) + ["ours/literal"]
    agree = (["same as peer"] if peer else []) + ["same as literal"]
    print(f"| case | {head} | {' | '.join(ratios)} | {' | '.join(agree)} |")
    print("|---" * (1 + len(cols) + len(ratios) + len(agree)) + "|")
    for name, n, classes, mode, kept in CASES:
        row = run_case(name, n, classes, mode, kept, peer=peer, repeats=args.repeats)
        cells = [f"{row[c]:.2f}" for c in cols]
        cells += [f"{row['ours'] / row[r.split('/')[1]]:.3f}" for r in ratios]
        cells += ["yes" if row[a] else "NO" for a in agree]
        print(f"| {name} | {' | '.join(cells)} |", flush=True)
    timed = "ours and peer" if peer else "ours"
    print(f"load average after: {os.getloadavg()[0]:.2f} ({timed}: median of {args.repeats})")
    time_postprocess_batch(torch.device("cpu"), args.repeats)
    if args.device != "cpu":
        time_postprocess_batch(torch.device(args.device), args.repeats, batch=16)


if __name__ == "__main__":
    main()
