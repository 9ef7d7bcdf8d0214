"""Speed of the evaluator and of DETAD's diagnosis: numpy vs the loop transcriptions.

    python experiments/benchmarks/evaluate.py [--scale anet thumos] [--repeat 3] [--no-reference]
        [--parts evaluate diagnosis]

Two synthetic data sets (fixed seeds), the sizes of the real evaluation splits:

- ``anet``: ActivityNet 1.3 validation, 4,926 videos, 200 classes, ~1.5 ground
  truths and 100 predictions per video, thresholds 0.5:0.05:0.95;
- ``thumos``: THUMOS14 test, 212 videos, 20 classes, ~16 ground truths and 2,000
  predictions per video, thresholds 0.3:0.1:0.7.

60% of the predictions are jittered copies of a ground truth (80% with its label),
the rest random segments; scores are uniform (distinct). For each scale it prints

- the core (`evaluate_detections`, after parsing): best of ``--repeat`` runs, wall
  and CPU time (user + system, children included for the commands below);
- the transcription in ``tests/_reference_eval.py`` (per-class, per-prediction
  Python loops), timed once, on all thresholds, and the largest AP difference;
- the whole command, ``python -m salad_lightning.evaluate --json`` in a fresh
  interpreter on JSON files written to a temporary folder (best of ``--repeat``),
  and for scale a fresh interpreter that only runs ``json.load`` on the prediction
  file.

And for the diagnosis (``--parts diagnosis``), with DETAD's preset of the data set
(``anet``: ActivityNet, 0.5:0.05:0.95; ``thumos``: THUMOS14, 0.5):

- `diagnose` on the flat arrays (videos indexed in generation order): the median and
  the best of ``--repeat`` runs, wall and CPU time;
- the transcription in ``tests/_literal_diagnosis.py`` (one prediction at a time),
  timed once, the ratio of its wall time to the median, and the largest difference
  between the two over every number of the JSON (plus the per-prediction types).

The load average is printed first: on a shared machine every wall time grows with it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from _literal_diagnosis import literal_diagnose  # noqa: E402
from _reference_eval import as_instances, reference_evaluate  # noqa: E402
from salad_lightning.metrics.diagnosis import CHARACTERISTICS, PRESETS, diagnose  # noqa: E402
from salad_lightning.metrics.functional import evaluate_detections  # noqa: E402

SCALES = {
    "anet": dict(
        videos=4926, classes=200, preds=100, gts=1.5, gt_len=(0.05, 0.6), relative=True,
        duration=(30, 240), thresholds=[round(0.5 + 0.05 * i, 2) for i in range(10)],
        subset="validation", seed=0, preset="activitynet",
    ),
    "thumos": dict(
        videos=212, classes=20, preds=2000, gts=16, gt_len=(1, 20), relative=False,
        duration=(60, 900), thresholds=[0.3, 0.4, 0.5, 0.6, 0.7], subset="test", seed=1,
        preset="thumos14",
    ),
}  # fmt: skip


def synthesize(videos, classes, preds, gts, gt_len, relative, duration, seed, **_):
    """Flat arrays (pv, ps, scores, pl, gv, gs, gl) and the two JSON objects."""
    rng = np.random.default_rng(seed)
    names = [f"class_{c:03d}" for c in range(classes)]
    database, results, flat = {}, {}, [[] for _ in range(7)]
    for v in range(videos):
        vid = f"v_{v:011d}"
        d = float(rng.uniform(*duration))
        n = max(1, int(rng.poisson(gts)))
        own = rng.choice(classes, size=int(rng.integers(1, 3)), replace=False)
        gl = rng.choice(own, n)
        length = np.minimum(rng.uniform(*gt_len, n) * (d if relative else 1.0), d)
        start = rng.uniform(0, d - length)
        gs = np.stack([start, start + length], axis=1)
        near = rng.random(preds) < 0.6
        base = rng.integers(0, n, preds)
        centre = np.where(
            near,
            gs[base].mean(1) + rng.normal(0, 0.3, preds) * length[base],
            rng.uniform(0, d, preds),
        )
        width = np.where(
            near,
            length[base] * np.exp(rng.normal(0, 0.4, preds)),
            rng.uniform(0.02, 0.5, preds) * d,
        )
        ps = np.clip(np.stack([centre - width / 2, centre + width / 2], axis=1), 0, d)
        pl = np.where(rng.random(preds) < 0.8, gl[base], rng.integers(0, classes, preds))
        scores = rng.random(preds)
        for store, value in zip(flat, [np.full(preds, v), ps, scores, pl, np.full(n, v), gs, gl]):
            store.append(value)
        database[vid] = {
            "subset": "validation" if relative else "test",
            "duration": d,
            "annotations": [{"label": names[c], "segment": s.tolist()} for c, s in zip(gl, gs)],
        }
        results[vid] = [
            {"label": names[c], "score": float(x), "segment": s.tolist()}
            for c, x, s in zip(pl, scores, ps)
        ]
    gt_json = {"version": "synthetic", "database": database, "taxonomy": []}
    pred_json = {"version": "synthetic", "results": results, "external_data": {}}
    return [np.concatenate(x) for x in flat], gt_json, pred_json


def _cpu() -> float:
    """CPU seconds (user + system) of this process and its finished children."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _timed(repeat, fn):
    """Wall and CPU seconds of ``repeat`` calls, and the last output."""
    walls, cpus, out = [], [], None
    for _ in range(repeat):
        w, c = time.perf_counter(), _cpu()
        out = fn()
        walls.append(time.perf_counter() - w)
        cpus.append(_cpu() - c)
    return walls, cpus, out


def best_of(repeat, fn):
    """(best wall, best CPU) seconds over ``repeat`` calls, and the last output."""
    walls, cpus, out = _timed(repeat, fn)
    return min(walls), min(cpus), out


def median_of(repeat, fn):
    """(median wall, best wall, median CPU) seconds over ``repeat`` calls, and the last output."""
    walls, cpus, out = _timed(repeat, fn)
    return float(np.median(walls)), min(walls), float(np.median(cpus)), out


def numbers(tree) -> list:
    """Every leaf of a JSON tree, in order."""
    if isinstance(tree, dict):
        return [x for v in tree.values() for x in numbers(v)]
    if isinstance(tree, list):
        return [x for v in tree for x in numbers(v)]
    return [tree]


def run_diagnosis(name: str, arrays, gt_json, repeat: int, reference: bool) -> None:
    preset = SCALES[name]["preset"]
    settings = PRESETS[preset]
    duration = np.array([v["duration"] for v in gt_json["database"].values()])
    pred, gt = as_instances(*arrays)
    wall, best, cpu, result = median_of(repeat, lambda: diagnose(pred, gt, duration, **settings))
    print(
        f"diagnose ({preset})   wall {wall:7.3f} s   cpu {cpu:7.3f} s   "
        f"(median of {repeat}; best {best:.3f} s)"
    )
    out = result.to_json()
    gains = ", ".join(f"{k} {100 * v:.2f}" for k, v in out["removed_error_gain"].items())
    print(
        f"average-mAP_N {100 * out['average_mAP_N']:.2f}, top-10G "
        f"{100 * result.average_mAP_N_top:.2f}; gains (points): {gains}"
    )
    if not reference:
        return
    bins = {
        name: (list(settings[key].edges), list(settings[key].names))
        for name, key in zip(CHARACTERISTICS, ["length_bins", "coverage_bins", "instance_bins"])
    }
    ref_wall, _, ref_cpu, ref = median_of(
        1, lambda: literal_diagnose(*arrays, duration, settings["tiou_thresholds"], bins)
    )
    types_differ = int((result.prediction_type != np.array(ref.pop("prediction_type"))).sum())
    theirs = [ref.pop("average_mAP_N_top"), *numbers(ref)]
    mine = [result.average_mAP_N_top, *numbers(out)]
    assert len(mine) == len(theirs), (len(mine), len(theirs))
    nulls_differ = sum((a is None) != (b is None) for a, b in zip(mine, theirs))
    diff = max(abs(a - b) for a, b in zip(mine, theirs) if a is not None and b is not None)
    print(f"loop transcription          wall {ref_wall:7.3f} s   cpu {ref_cpu:7.3f} s   (once)")
    print(
        f"ratio transcription / numpy wall {ref_wall / wall:7.0f} x   cpu {ref_cpu / cpu:7.0f} x   "
        f"max |difference| {diff:.1e} over {len(mine)} numbers ({nulls_differ} nulls and "
        f"{types_differ} prediction types differ)"
    )


def run_scale(name: str, repeat: int, reference: bool, folder: Path, parts: list[str]) -> None:
    cfg = SCALES[name]
    t = time.perf_counter()
    arrays, gt_json, pred_json = synthesize(**cfg)
    thr = cfg["thresholds"]
    print(
        f"== {name}: {cfg['videos']} videos, {cfg['classes']} classes, {len(arrays[0])} predictions, "
        f"{len(arrays[4])} ground truths, {len(thr)} thresholds (generated in {time.perf_counter() - t:.1f} s)"
    )
    if "diagnosis" in parts:
        run_diagnosis(name, arrays, gt_json, repeat, reference)
    if "evaluate" not in parts:
        return
    pred, gt = as_instances(*arrays)
    wall, cpu, result = best_of(repeat, lambda: evaluate_detections(pred, gt, tiou_thresholds=thr))
    print(
        f"core evaluate_detections      wall {wall:7.3f} s   cpu {cpu:7.3f} s   (best of {repeat})"
    )
    if reference:
        ref_wall, ref_cpu, ref = best_of(1, lambda: reference_evaluate(*arrays, thr))
        diff = np.abs(result.ap - np.array(ref[1])).max()
        print(
            f"reference transcription       wall {ref_wall:7.3f} s   cpu {ref_cpu:7.3f} s   (once, all thresholds)"
        )
        print(
            f"ratio reference / core        wall {ref_wall / wall:7.0f} x   cpu {ref_cpu / cpu:7.0f} x   "
            f"max |AP difference| {diff:.1e}"
        )

    gt_path, pred_path = folder / f"{name}_gt.json", folder / f"{name}_pred.json"
    gt_path.write_text(json.dumps(gt_json))
    pred_path.write_text(json.dumps(pred_json))
    plain = [sys.executable, "-c", f"import json; json.load(open({str(pred_path)!r}))"]
    load_wall, load_cpu, _ = best_of(repeat, lambda: subprocess.run(plain, check=True))
    cmd = [sys.executable, "-m", "salad_lightning.evaluate", "--ground-truth", str(gt_path)]
    cmd += [
        "--predictions",
        str(pred_path),
        "--subset",
        cfg["subset"],
        "--json",
        "--tiou",
        *map(str, thr),
    ]

    def command():
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout

    cmd_wall, cmd_cpu, out = best_of(repeat, command)
    same = json.loads(out)["mAP"] == result.mAP.tolist()
    size = pred_path.stat().st_size / 2**20
    print(
        f"plain json.load, fresh python wall {load_wall:7.3f} s   cpu {load_cpu:7.3f} s   ({size:.0f} MiB file)"
    )
    print(
        f"whole command (subprocess)    wall {cmd_wall:7.3f} s   cpu {cmd_cpu:7.3f} s   (mAP equal to core: {same})"
    )
    print(f"mAP {np.round(100 * result.mAP, 2).tolist()} average {100 * result.average_mAP:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", nargs="+", choices=sorted(SCALES), default=["anet", "thumos"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-reference", action="store_true", help="skip the slow transcriptions")
    parser.add_argument(
        "--parts", nargs="+", choices=["evaluate", "diagnosis"], default=["evaluate", "diagnosis"]
    )
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.scale:
            run_scale(name, args.repeat, not args.no_reference, Path(tmp), args.parts)


if __name__ == "__main__":
    main()
