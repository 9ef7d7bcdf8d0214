"""Time greedy_match (vectorised Algorithm 1) against the literal loop, THUMOS-sized batch.

    python experiments/benchmarks/matching.py [--device cuda|cpu] [--repeats 20]

B=4 videos of T=2304 steps, N=30 ground truths of 2-50 steps scattered over the
video, proposals ``[t - a W, t + b W]`` around each step (W = 50). The literal
loop (tests/_literal_algorithm1.py) always runs on CPU tensors; it is timed
``--literal-repeats`` times (default 1: it takes seconds). Both outputs are
compared before timing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from _literal_algorithm1 import literal_algorithm1  # noqa: E402
from salad_lightning.losses.matching import greedy_match  # noqa: E402


def make_batch(B: int, T: int, N: int, device: str, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 51, (B, N), generator=g).double()
    starts = torch.rand(B, N, generator=g, dtype=torch.float64) * (T - lengths)
    gt_segments = torch.stack([starts, starts + lengths], -1).floor()
    steps = torch.arange(T, dtype=torch.float64).view(1, T)
    W = 50.0
    a = torch.rand(B, T, generator=g, dtype=torch.float64)
    b = torch.rand(B, T, generator=g, dtype=torch.float64)
    segments = torch.stack([steps - a * W, steps + b * W], -1)
    frame_mask = steps < torch.tensor([[T], [T - 100], [T - 500], [T]])[:B]  # some padding
    gt_mask = torch.ones(B, N, dtype=torch.bool)
    gt_mask[1, N - 5 :] = False
    batch = dict(
        segments=segments.float(),
        scores=torch.rand(B, T, generator=g),
        gt_segments=gt_segments.float(),
        gt_mask=gt_mask,
        frame_mask=frame_mask,
        mu=0.5,
    )
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}


def timed(fn, device: str, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--literal-repeats", type=int, default=1)
    parser.add_argument("-B", type=int, default=4)
    parser.add_argument("-T", type=int, default=2304)
    parser.add_argument("-N", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        # On a busy machine the default thread pool can spin-wait and slow every op 10x.
        torch.set_num_threads(args.threads)

    batch = make_batch(args.B, args.T, args.N, args.device)
    cpu_batch = {k: (v.cpu() if torch.is_tensor(v) else v) for k, v in batch.items()}

    result = greedy_match(**batch)  # warm-up (kernels, allocator) and the check below
    alpha, y = literal_algorithm1(**cpu_batch)
    same = result.alpha.cpu().tolist() == alpha and result.y.cpu().tolist() == y

    vec = statistics.median(timed(lambda: greedy_match(**batch), args.device, args.repeats))
    lit = statistics.median(
        timed(lambda: literal_algorithm1(**cpu_batch), "cpu", args.literal_repeats)
    )
    threads = torch.get_num_threads()
    print(f"device: {args.device}  B={args.B} T={args.T} N={args.N}  CPU threads: {threads}")
    print(
        f"outputs identical: {same}  (positives: {int(result.y.sum())}, alpha ones: {int(result.alpha.sum())})"
    )
    print(f"greedy_match (vectorised): {vec * 1e3:.2f} ms  (median of {args.repeats})")
    print(f"literal loop: {lit * 1e3:.2f} ms  (median of {args.literal_repeats}, CPU)")
    print(f"ratio literal/vectorised: {lit / vec:.1f}")


if __name__ == "__main__":
    main()
