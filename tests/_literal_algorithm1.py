"""Literal transcriptions of docs/method.md §3 (Algorithm 1) and the docs/method.md §7 ablations, loops and all.

Independent of ``salad_lightning.losses.matching``: plain Python floats, one
batch row at a time, the pseudocode's loops kept as written. The tests compare
the vectorised ``greedy_match`` with these; the benchmark times them.

Shared rules (the module docstring of ``losses/matching.py`` states the same):
order by score descending, ties lower t first; step t at position float(t);
inside is ``s <= t <= e``; tIoU is Eq. (1) unclamped and 0 when the hull length
is <= 0; ``tIoU > mu`` strict.
"""

from __future__ import annotations

import torch


def literal_tiou(seg: tuple[float, float], gt: tuple[float, float]) -> float:
    s_hat, e_hat = seg
    s, e = gt
    hull = max(e, e_hat) - min(s, s_hat)
    if hull <= 0:
        return 0.0
    return (min(e, e_hat) - max(s, s_hat)) / hull


def _row_alg1(segs, p, gts, valid_steps, mu):
    """Algorithm 1 on one row, as docs/method.md §3 writes it. Returns alpha (T x N), y (T), beta (N)."""
    T, N = len(segs), len(gts)
    order = sorted(valid_steps, key=lambda t: (-p[t], t))
    alpha = [[False] * N for _ in range(T)]
    y = [False] * T
    beta = [False] * N
    for t in order:
        for n in range(N):
            s_n, e_n = gts[n]
            if not beta[n] and s_n <= float(t) <= e_n:
                alpha[t][n] = True
                if literal_tiou(segs[t], gts[n]) > mu:
                    beta[n] = True
                    y[t] = True
    return alpha, y, beta


def literal_match(
    segments,
    scores,
    gt_segments,
    gt_mask,
    frame_mask,
    mu,
    *,
    pruning="salad",
    target="salad",
    generator=None,
    frozen_alpha=None,
):
    """Same arguments as ``greedy_match``; returns python lists ``alpha`` [B][T][N], ``y`` [B][T]."""
    B, T = scores.shape[0], scores.shape[1]
    N = gt_segments.shape[1]
    if pruning == "random":
        draw = torch.rand(
            (B, T, N), generator=generator, device=segments.device, dtype=torch.float32
        ).tolist()
    all_alpha, all_y = [], []
    for b in range(B):
        segs = [tuple(s) for s in segments[b].tolist()]
        p = scores[b].tolist()
        fmask = frame_mask[b].tolist()
        gmask = gt_mask[b].tolist()
        # Padded ground truths are dropped; keep their original column index.
        cols = [n for n in range(N) if gmask[n]]
        gts = [tuple(gt_segments[b, n].tolist()) for n in cols]
        valid_steps = [t for t in range(T) if fmask[t]]
        alpha_c, y_alg1, _ = _row_alg1(segs, p, gts, valid_steps, mu)

        def inside(t, k, gts=gts, fmask=fmask):
            return fmask[t] and gts[k][0] <= float(t) <= gts[k][1]

        alpha = [[False] * N for _ in range(T)]
        for k, n in enumerate(cols):
            if pruning == "salad":
                for t in range(T):
                    alpha[t][n] = alpha_c[t][k]
            elif pruning == "none":
                for t in range(T):
                    alpha[t][n] = inside(t, k)
            elif pruning == "top1_iou":
                best_t, best_iou = None, None
                for t in range(T):
                    if inside(t, k):
                        iou = literal_tiou(segs[t], gts[k])
                        if best_t is None or iou > best_iou:
                            best_t, best_iou = t, iou
                if best_t is not None:
                    alpha[best_t][n] = True
            elif pruning == "random":
                for t in range(T):
                    alpha[t][n] = inside(t, k) and draw[b][t][n] < 0.5
            elif pruning == "frozen":
                for t in range(T):
                    alpha[t][n] = bool(frozen_alpha[b, t, n]) and fmask[t]
            else:
                raise ValueError(pruning)

        if target == "salad":
            y = y_alg1
        elif target == "max_score":
            y = [False] * T
            order = sorted(valid_steps, key=lambda t: (-p[t], t))
            for k in range(len(gts)):
                for t in order:
                    if inside(t, k):
                        y[t] = True
                        break
        elif target == "score_gt_half":
            y = [bool(fmask[t] and p[t] > 0.5) for t in range(T)]
        elif target == "iou_gt_mu":
            y = [False] * T
            for t in range(T):
                for k in range(len(gts)):
                    if inside(t, k) and literal_tiou(segs[t], gts[k]) > mu:
                        y[t] = True
        else:
            raise ValueError(target)
        all_alpha.append(alpha)
        all_y.append(y)
    return all_alpha, all_y


def literal_algorithm1(segments, scores, gt_segments, gt_mask, frame_mask, mu):
    """Algorithm 1 only (the benchmark's reference): alpha [B][T][N], y [B][T]."""
    return literal_match(segments, scores, gt_segments, gt_mask, frame_mask, mu)
