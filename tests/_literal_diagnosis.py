"""A plain-Python transcription of DETAD's diagnosis, one prediction at a time.

Written from the definitions (Alwassel et al., ECCV 2018, and the loops of their
``action_detector_diagnosis.py`` and ``*_analysis.py``), not from the vectorised
module: the test reference for `salad_lightning.metrics.diagnosis`. Deliberately slow
and simple. Orders left open by DETAD's sorts follow the module's docstring:
predictions by score descending, then video, then row; in the matching, equal tIoUs
try the later ground truth first; in the typing, equal tIoUs take the first.
"""

from __future__ import annotations

import math

from _reference_eval import interpolated_prec_rec, official_tiou

TYPES = ["true_positive", "double_detection", "wrong_label", "localization", "confusion"]
TYPES.append("background")


def in_bin(value: float, edges: list[float], b: int) -> bool:
    """pandas.cut(include_lowest=True): (lo, hi], the first bin [lo, hi]."""
    lo, hi = edges[b], edges[b + 1]
    return lo < value <= hi or (b == 0 and value == lo)


def ap_n(flags: list[bool], npos: int, n_avg: float) -> float:
    """Interpolated AP with DETAD's normalized precision, R * N / (R * N + FP)."""
    tp = fp = 0
    prec, rec = [], []
    for hit in flags:
        if hit:
            tp += 1
        else:
            fp += 1
        r = tp / npos
        rec.append(r)
        prec.append(r * n_avg / (r * n_avg + fp))
    return interpolated_prec_rec(prec, rec)


def precisions(flags: list[bool], npos: int, n_avg: float) -> list[float]:
    tp = fp = 0
    out = []
    for hit in flags:
        tp, fp = tp + hit, fp + (not hit)
        out.append((tp / npos) * n_avg / ((tp / npos) * n_avg + fp))
    return out


def literal_diagnose(
    pred_video,
    pred_segments,
    pred_scores,
    pred_labels,
    gt_video,
    gt_segments,
    gt_labels,
    video_duration,
    tiou_thresholds,
    bins: dict[str, tuple[list[float], list[str]]],
    limit_factor: int = 10,
    min_tiou: float = 0.1,
    fn_min_precision: float = 0.05,
) -> dict:
    """The JSON of `Diagnosis.to_json`, plus ``average_mAP_N_top`` and ``prediction_type``."""
    thr = [float(t) for t in tiou_thresholds]
    n_thr = len(thr)
    per_video: dict[int, int] = {}
    for v in gt_video:
        per_video[int(v)] = per_video.get(int(v), 0) + 1
    gts = []
    for v, (s, e), lab in zip(gt_video, gt_segments, gt_labels):
        v, s, e = int(v), float(s), float(e)
        length = e - s
        coverage = length / float(video_duration[v])
        if length > 0 and coverage <= 1:
            gts.append(
                {"video": v, "start": s, "end": e, "label": int(lab), "length": length}
                | {"coverage": coverage, "num_instances": per_video[v]}
            )
    classes = sorted({g["label"] for g in gts})
    n_avg = len(gts) / len(classes)
    count = {c: sum(g["label"] == c for g in gts) for c in classes}
    preds = []
    for row, (v, (s, e), score, lab) in enumerate(
        zip(pred_video, pred_segments, pred_scores, pred_labels)
    ):
        if int(lab) in count:
            preds.append(
                {"row": row, "video": int(v), "start": float(s), "end": float(e)}
                | {"score": float(score), "label": int(lab)}
            )
    ranked = sorted(preds, key=lambda p: (-p["score"], p["video"], p["row"]))
    by_class: dict[int, list[dict]] = {c: [] for c in classes}
    for p in ranked:
        by_class[p["label"]].append(p)

    # Ground truths of each video, and of each (video, class), by index in gts.
    of_video: dict[int, list[int]] = {}
    of_video_class: dict[tuple[int, int], list[int]] = {}
    for j, g in enumerate(gts):
        of_video.setdefault(g["video"], []).append(j)
        of_video_class.setdefault((g["video"], g["label"]), []).append(j)

    def tiou(p: dict, j: int) -> float:
        return official_tiou((p["start"], p["end"]), (gts[j]["start"], gts[j]["end"]))

    # Official greedy matching: matched[t][row] = index in gts, or None.
    matched = [dict() for _ in thr]
    for c in classes:
        for t, th in enumerate(thr):
            locked = set()
            for p in by_class[c]:
                matched[t][p["row"]] = None
                mine = of_video_class.get((p["video"], c), [])
                overlap = {j: tiou(p, j) for j in mine}
                tried = sorted(
                    mine,
                    key=lambda j: (-math.inf if math.isnan(overlap[j]) else -overlap[j], -j),
                )
                for j in tried:
                    if overlap[j] < th:  # False for NaN, as in the official code
                        break
                    if j in locked:
                        continue
                    locked.add(j)
                    matched[t][p["row"]] = j
                    break

    def class_ap(c: int, rows: list[dict], t: int, npos: int) -> float:
        return ap_n([matched[t][p["row"]] is not None for p in rows], npos, n_avg)

    # False-positive analysis on the top limit_factor * G_j of each class.
    top = {c: by_class[c][: limit_factor * count[c]] for c in classes}
    kind: list[dict[int, int]] = [dict() for _ in thr]
    for c in classes:
        for p in top[c]:
            video_gts = of_video.get(p["video"], [])
            tious = [tiou(p, j) for j in video_gts]
            for t, th in enumerate(thr):
                if matched[t][p["row"]] is not None:
                    kind[t][p["row"]] = 0
                    continue
                if not video_gts:
                    kind[t][p["row"]] = 5
                    continue
                best = max(tious)
                same = gts[video_gts[tious.index(best)]]["label"] == c
                if best >= th:
                    kind[t][p["row"]] = 1 if same else 2
                elif best >= min_tiou:
                    kind[t][p["row"]] = 3 if same else 4
                else:
                    kind[t][p["row"]] = 5
    counts = [[0.0] * 6 for _ in range(limit_factor)]
    sizes = [0] * limit_factor
    for c in classes:
        for i, p in enumerate(top[c]):
            g = i // count[c]
            sizes[g] += 1
            for t in range(n_thr):
                counts[g][kind[t][p["row"]]] += 1 / n_thr
    profile = {
        f"{g + 1}G": {
            name: (counts[g][k] / sizes[g] if sizes[g] else None) for k, name in enumerate(TYPES)
        }
        for g in range(limit_factor)
    }
    ap_top = [class_ap(c, top[c], t, count[c]) for c in classes for t in range(n_thr)]
    base_top = sum(ap_top) / len(ap_top)
    gain = {}
    for k in range(1, 6):
        aps = []
        for c in classes:
            for t in range(n_thr):
                rows = [p for p in top[c] if kind[t][p["row"]] != k]
                aps.append(class_ap(c, rows, t, count[c]))
        gain[TYPES[k]] = sum(aps) / len(aps) - base_top

    ap_all = [class_ap(c, by_class[c], t, count[c]) for c in classes for t in range(n_thr)]

    # Sensitivity: DETAD keeps, threshold after threshold, the rows whose matched
    # ground truth is in the bin or is none.
    sensitivity, fn_rate = {}, {}
    for name, (edges, names) in bins.items():
        sensitivity[name], fn_rate[name] = {}, {}
        for b, bin_name in enumerate(names):
            ids = {j for j, g in enumerate(gts) if in_bin(g[name], edges, b)}
            allowed = ids | {None}
            values = []
            in_bin_of_class = {c: 0 for c in classes}
            for j in ids:
                in_bin_of_class[gts[j]["label"]] += 1
            for c in classes:
                npos = in_bin_of_class[c]
                if npos == 0:
                    continue
                rows = by_class[c]
                for t in range(n_thr):
                    rows = [p for p in rows if matched[t][p["row"]] in allowed]
                values.append(sum(class_ap(c, rows, t, npos) for t in range(n_thr)) / n_thr)
            sensitivity[name][bin_name] = sum(values) / len(values) if values else None

    # False negatives: a match counts when its normalized precision is above the floor.
    found = [set() for _ in thr]
    for c in classes:
        for t in range(n_thr):
            flags = [matched[t][p["row"]] is not None for p in by_class[c]]
            for p, prec in zip(by_class[c], precisions(flags, count[c], n_avg)):
                if matched[t][p["row"]] is not None and prec > fn_min_precision:
                    found[t].add(matched[t][p["row"]])
    for name, (edges, names) in bins.items():
        for b, bin_name in enumerate(names):
            ids = [j for j, g in enumerate(gts) if in_bin(g[name], edges, b)]
            rates = (
                [sum(j not in found[t] for j in ids) / len(ids) for t in range(n_thr)]
                if ids
                else []
            )
            fn_rate[name][bin_name] = sum(rates) / n_thr if ids else None

    prediction_type = [
        [kind[t].get(row, -1) for row in range(len(pred_scores))] for t in range(n_thr)
    ]
    return {
        "tiou_thresholds": thr,
        "average_mAP_N": sum(ap_all) / len(ap_all),
        "false_positive_profile": profile,
        "removed_error_gain": gain,
        "sensitivity": sensitivity,
        "false_negative_rate": fn_rate,
        "average_mAP_N_top": base_top,
        "prediction_type": prediction_type,
    }
