"""The real data path over ActivityNet-scale features on disk: pre-flight and one epoch.

    python experiments/benchmarks/data.py [--videos 20000] [--workers 2] [--keep]
        [--parts preflight epoch] [--threads 2]

Writes ``--videos`` feature files ``v_{id}.npy`` of about ``--steps`` x ``--dim``
float32 (lengths uniform in [steps/2, 3 steps/2]; 20,000 x 100 x 2048 is ~16 GB) and
an ActivityNet 1.3-style annotation file into a fresh folder under ``--cache-dir``,
then iterates one training epoch through :class:`SaladDataModule` (``resize_to``
100, batch 16, length bucketing, ``--workers`` loader processes) and prints the
throughput (videos/s) and the peak resident memory:

- ``ru_maxrss`` of this process and of the largest loader worker (getrusage), and
- the largest sum of VmRSS over this process and its workers, sampled every 50 ms
  (it counts the pages the processes share, torch's libraries, once per process).

``--parts preflight`` times the pre-flight that runs before training
(``SaladDataModule.preflight_report``: every header, every value finite, ``--threads``
threads) against a baseline measured in the same run: one thread loading each file
and calling ``np.isfinite(x).all()``. Both read every byte; the ratio is printed.

``--cold`` (default) evicts the files from the page cache before each part
(``posix_fadvise(DONTNEED)``), so they are read from disk; ``--warm`` reads them
right after writing. The folder is deleted afterwards unless ``--keep``; pass
``--dir`` to reuse a kept one.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

GiB = 1024**3


def generate(folder: Path, videos: int, steps: int, dim: int, seed: int) -> None:
    feats = folder / "features"
    feats.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    db = {}
    t0 = time.perf_counter()
    for i in range(videos):
        vid = f"{i:011d}"
        t = int(rng.integers(steps // 2, steps + steps // 2 + 1))
        np.save(feats / f"v_{vid}.npy", rng.random((t, dim), dtype=np.float32))
        duration = float(np.round(rng.uniform(30, 240), 2))
        s = float(np.round(rng.uniform(0, duration / 2), 2))
        db[vid] = {
            "subset": "training",
            "duration": duration,
            "annotations": [{"label": f"class{i % 200:03d}", "segment": [s, s + duration / 4]}],
        }
        if (i + 1) % 2000 == 0:
            print(f"  wrote {i + 1} videos ({time.perf_counter() - t0:.0f} s)", flush=True)
    (folder / "annotations.json").write_text(json.dumps({"version": "VERSION 1.3", "database": db}))


def evict(folder: Path) -> None:
    """Drop the files' pages from the page cache (written back first)."""
    os.sync()
    for path in (folder / "features").iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


class TreeRSS(threading.Thread):
    """Samples the summed VmRSS of this process and its children."""

    def __init__(self, every: float = 0.05):
        super().__init__(daemon=True)
        self.every, self.peak, self.stop = every, 0, threading.Event()

    def run(self) -> None:
        me = os.getpid()
        while not self.stop.is_set():
            self.peak = max(self.peak, sum(_rss_bytes(p) for p in [me, *_children(me)]))
            time.sleep(self.every)


def one_epoch(folder: Path, args: argparse.Namespace) -> dict:
    dm = _datamodule(folder, args)
    t0 = time.perf_counter()
    dm.setup("fit")
    setup_s = time.perf_counter() - t0
    sampler = TreeRSS()
    sampler.start()
    n = 0
    t0 = time.perf_counter()
    loader = iter(dm.train_dataloader())
    for batch in loader:
        n += batch.size
    del loader  # joins the workers, so RUSAGE_CHILDREN covers them
    epoch_s = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    kib = 1024
    return {
        "videos": n,
        "setup_s": setup_s,
        "epoch_s": epoch_s,
        "videos_per_s": n / epoch_s,
        "maxrss_self_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kib / GiB,
        "maxrss_worker_gib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * kib / GiB,
        "tree_rss_peak_gib": sampler.peak / GiB,
    }


def _datamodule(folder: Path, args: argparse.Namespace):
    from salad_lightning.data import SaladDataModule

    return SaladDataModule(
        annotation_file=str(folder / "annotations.json"),
        feature_dir=str(folder / "features"),
        prefix="v_",
        feature_dim=args.dim,
        train_subset="training",
        val_holdout=0.0,
        test_subset=None,
        resize_to=args.resize_to,
        max_seq_len=args.resize_to,
        batch_size=args.batch_size,
        num_workers=args.workers,
        seed=0,
    )


def preflight(folder: Path, args: argparse.Namespace) -> dict:
    """Seconds of the pre-flight and of the one-thread baseline, each from a cold cache
    with ``--cold``."""
    files = sorted((folder / "features").iterdir())
    if args.cold:
        evict(folder)
    t0 = time.perf_counter()
    bad = sum(not np.isfinite(np.load(f)).all() for f in files)
    baseline_s = time.perf_counter() - t0
    if args.cold:
        evict(folder)
    dm = _datamodule(folder, args)
    t0 = time.perf_counter()
    _, problems = dm.preflight_report(["fit"], workers=args.threads, log_summary=False)
    total_s = time.perf_counter() - t0
    assert bad == len(problems) == 0, (bad, problems[:3])
    return {"baseline_s": baseline_s, "preflight_s": total_s, "videos": len(files)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--videos", type=int, default=20000)
    p.add_argument("--steps", type=int, default=100, help="mean feature length per video")
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--resize-to", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cache-dir", default=tempfile.gettempdir())
    p.add_argument("--dir", default=None, help="reuse (or create and keep) this folder")
    p.add_argument("--keep", action="store_true", help="do not delete the generated folder")
    cache = p.add_mutually_exclusive_group()
    cache.add_argument("--cold", dest="cold", action="store_true", default=True)
    cache.add_argument("--warm", dest="cold", action="store_false")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--parts", nargs="+", choices=("preflight", "epoch"), default=["epoch"])
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="pre-flight reader threads (default: the library's)",
    )
    args = p.parse_args(argv)

    folder = (
        Path(args.dir)
        if args.dir
        else Path(tempfile.mkdtemp(prefix="salad_bench_data_", dir=args.cache_dir))
    )
    keep = args.keep or args.dir is not None
    try:
        if not (folder / "annotations.json").is_file():
            gb = args.videos * args.steps * args.dim * 4 / 1e9
            print(f"writing {args.videos} videos (~{gb:.1f} GB) into {folder}", flush=True)
            t0 = time.perf_counter()
            generate(folder, args.videos, args.steps, args.dim, args.seed)
            print(f"  generated in {time.perf_counter() - t0:.0f} s", flush=True)
        size = sum(f.stat().st_size for f in (folder / "features").iterdir()) / 1e9
        cache = "cold" if args.cold else "warm"
        print(f"load average {os.getloadavg()[0]:.2f}", flush=True)
        if "preflight" in args.parts:
            pf = preflight(folder, args)
            print(
                f"pre-flight of {pf['videos']} videos ({size:.1f} GB, {cache} cache): "
                f"{pf['preflight_s']:.1f} s ({size * 1e3 / pf['preflight_s']:.0f} MB/s, "
                f"{args.threads or 'default'} threads); baseline np.load + isfinite, one thread: "
                f"{pf['baseline_s']:.1f} s; ratio {pf['preflight_s'] / pf['baseline_s']:.2f}",
                flush=True,
            )
        if "epoch" not in args.parts:
            return 0
        if args.cold:
            evict(folder)
        res = one_epoch(folder, args)
        print(
            f"videos {res['videos']} ({size:.1f} GB on disk, {cache} cache), "
            f"batch {args.batch_size}, resize_to {args.resize_to}, workers {args.workers}\n"
            f"  setup (annotations, file checks, .npy headers): {res['setup_s']:.1f} s\n"
            f"  epoch: {res['epoch_s']:.1f} s = {res['videos_per_s']:.0f} videos/s "
            f"({size * 1e3 / res['epoch_s']:.0f} MB/s)\n"
            f"  peak RSS: main process {res['maxrss_self_gib']:.2f} GiB, largest worker "
            f"{res['maxrss_worker_gib']:.2f} GiB, main + workers (sampled sum) "
            f"{res['tree_rss_peak_gib']:.2f} GiB",
            flush=True,
        )
        return 0 if max(res["maxrss_self_gib"], res["maxrss_worker_gib"]) < 2.0 else 1
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
