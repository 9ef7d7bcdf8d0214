"""The steps of experiments/peer/actionformer.sh that need Python (the script documents them).

    python experiments/peer/actionformer_peer.py split --experiment E --holdout F --out DIR
        [--data-root R]
    python experiments/peer/actionformer_peer.py config --split DIR/split.json --out C.yaml
        --output-folder DIR --seed S --width W --epochs E --warmup-epochs W0 ...
    python experiments/peer/actionformer_peer.py train --config C.yaml --name N
        [--ckpt-freq 5] [--resume CKPT]
    python experiments/peer/actionformer_peer.py infer --config C.yaml --ckpt CKPT
        --weights raw|ema --out results.json
    python experiments/peer/actionformer_peer.py metrics EVAL.json --out metrics.json

ActionFormer (its PyPI sdist, built by the shell script) must be importable
(PYTHONPATH); nothing of it is copied here. ``split`` uses this project's own data module
(the experiment's composed config), so that the peer trains on exactly SALAD's training
videos; ``train`` and ``infer`` run ActionFormer's own code (``actionformer.train``,
``actionformer.utils.valid_one_epoch``) unchanged. On a machine without CUDA they
only stand in for the three CUDA calls it makes regardless of its ``devices`` (a
``torch.cuda.synchronize`` when it prints, ``storage.cuda`` when it loads a
checkpoint): synchronize does nothing and checkpoints load on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def split(args):
    """The experiment's train (SALAD's, after its holdout) and test videos, and an
    annotation file holding only them, in the layout ActionFormer's THUMOS14 reader
    takes (it selects videos by ``subset``)."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    overrides = [f"experiment={args.experiment}"]
    overrides += [f"dataset.datamodule.val_holdout={args.holdout}"]
    if args.data_root:
        overrides += [f"dataset.root={Path(args.data_root).resolve()}"]
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose("config", overrides=overrides)
    dm = instantiate(cfg.dataset.datamodule)
    dm.setup("fit")
    dm.setup("test")
    h = dm.hparams
    if h.feature_dir is None or h.prefix:
        sys.exit("split: the experiment's data must be one feature folder without a file prefix")
    train = sorted(dm.datasets["train"].video_ids)
    held = sorted(dm.datasets["val"].video_ids) if "val" in dm.datasets else []
    test = sorted(dm.datasets["test"].video_ids)
    annotation_file = Path(h.annotation_file).resolve()
    db = json.loads(annotation_file.read_text())["database"]
    subsets = {v: "Validation" for v in train} | {v: "Test" for v in test}
    if len(subsets) != len(train) + len(test):
        sys.exit("split: a video is both a training and a test video")
    kept = {}
    for vid in sorted(subsets):
        entry = dict(db[vid])
        entry["subset"] = subsets[vid]  # ActionFormer's train_split / val_split
        kept[vid] = entry
    labels = {}
    for entry in db.values():
        for a in entry.get("annotations", []):
            if labels.setdefault(a["label"], a["label_id"]) != a["label_id"]:
                sys.exit(f"split: class {a['label']} has two label_id")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "annotations.json").write_text(json.dumps({"version": "thumos14", "database": kept}))
    record = {
        "experiment": args.experiment,
        "val_holdout": args.holdout,
        "split_seed": h.split_seed,
        "ground_truth": str(annotation_file),
        "feature_dir": str(Path(h.feature_dir).resolve()),
        "ext": h.ext,
        "stride": h.stride,
        "window": h.window,
        "feature_dim": int(dm.feature_dim),
        "num_classes": int(h.num_classes),
        "test_subset": h.test_subset,
        "classes": dict(sorted(labels.items(), key=lambda kv: kv[1])),
        "train": train,
        "holdout": held,
        "test": test,
    }
    (out / "split.json").write_text(json.dumps(record, indent=1))
    print(
        f"split: {len(train)} training videos (holdout of {len(held)} left out), "
        f"{len(test)} test videos, from {annotation_file}"
    )
    print(record["ground_truth"])


def config(args):
    """ActionFormer's THUMOS14 I3D config (configs/thumos_i3d.yaml of its release) on
    this data: the feature dimension, width, epochs and optimiser settings given."""
    import yaml

    s = json.loads(Path(args.split).read_text())
    cfg = {
        "dataset_name": "thumos",
        "init_rand_seed": args.seed,
        "devices": [args.device],
        "train_split": ["validation"],
        "val_split": ["test"],
        "model_name": "LocPointTransformer",
        "dataset": {
            "json_file": str(Path(args.split).resolve().parent / "annotations.json"),
            "feat_folder": s["feature_dir"],
            "file_prefix": None,
            "file_ext": s["ext"],
            "num_classes": s["num_classes"],
            "input_dim": s["feature_dim"],
            "feat_stride": s["stride"],
            "num_frames": s["window"],
            "default_fps": None,  # each video's fps from the annotation file
            "downsample_rate": 1,
            "trunc_thresh": 0.5,
            "crop_ratio": [0.9, 1.0],
            "max_seq_len": args.max_seq_len,
            "force_upsampling": False,
        },
        "model": {
            "fpn_type": "identity",
            "max_buffer_len_factor": 6.0,
            "n_mha_win_size": 19,
            "embd_dim": args.width,
            "fpn_dim": args.width,
            "head_dim": args.width,
        },
        "opt": {
            "type": "AdamW",
            "learning_rate": args.lr,
            "weight_decay": args.weight_decay,
            "epochs": args.epochs,
            "warmup": True,
            "warmup_epochs": args.warmup_epochs,
            "schedule_type": "cosine",
        },
        "loader": {"batch_size": args.batch_size, "num_workers": args.workers},
        "train_cfg": {
            "init_loss_norm": 100,
            "clip_grad_l2norm": 1.0,
            "cls_prior_prob": 0.01,
            "center_sample": "radius",
            "center_sample_radius": 1.5,
        },
        "test_cfg": {
            "voting_thresh": 0.7,
            "pre_nms_topk": 2000,
            "max_seg_num": 200,
            "min_score": 0.001,
            "multiclass_nms": True,
        },
        "output_folder": str(Path(args.output_folder).resolve()),
    }
    Path(args.out).write_text(yaml.safe_dump(cfg, sort_keys=False))


def _cpu_stand_ins():
    """Where CUDA is missing: ActionFormer's unconditional CUDA calls made harmless."""
    import torch

    if torch.cuda.is_available():
        return
    torch.cuda.synchronize = lambda *a, **k: None
    load = torch.load

    def load_on_cpu(*a, **k):
        k["map_location"] = "cpu"
        k.setdefault("weights_only", False)  # its checkpoints hold optimiser state
        return load(*a, **k)

    torch.load = load_on_cpu


def train(args):
    """ActionFormer's own train.py (``actionformer.train.main``) on the config, each
    epoch's wall and CPU time printed."""
    import torch

    _cpu_stand_ins()
    import actionformer.train as af_train
    from actionformer.utils import HAS_CPP_NMS

    if not HAS_CPP_NMS:
        sys.exit("train: ActionFormer's compiled nms_1d_cpu does not import")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    one_epoch = af_train.train_one_epoch

    import yaml

    cfg = yaml.safe_load(Path(args.config).read_text())
    ckpt_dir = Path(cfg["output_folder"]) / (
        Path(args.config).name.replace(".yaml", "") + "_" + args.name
    )

    def timed_epoch(*a, **k):
        # its checkpoints (every --ckpt-freq epochs) hold the optimiser's state and the
        # EMA too: only the newest is kept, to resume from
        for old in sorted(ckpt_dir.glob("epoch_*.pth.tar"))[:-1]:
            old.unlink()
        wall, cpu = time.perf_counter(), time.process_time()
        out = one_epoch(*a, **k)
        epoch = k.get("curr_epoch", a[4] if len(a) > 4 else -1)
        print(
            f"[peer] epoch {epoch}: {time.perf_counter() - wall:.1f} s wall, "
            f"{time.process_time() - cpu:.1f} s CPU",
            flush=True,
        )
        return out

    af_train.train_one_epoch = timed_epoch  # the name its run() calls
    argv = [args.config, "--output", args.name, "--ckpt-freq", str(args.ckpt_freq)]
    argv += ["--print-freq", str(args.print_freq)]
    if args.resume:
        argv += ["--resume", args.resume]
    sys.argv = ["actionformer-train"] + argv
    af_train.main()


def infer(args):
    """Detections of the test videos by ActionFormer's own inference
    (``valid_one_epoch`` as its eval.py calls it), with the raw or EMA weights of the
    checkpoint, as an ActivityNet results JSON (class names from the annotation file)."""
    import numpy as np
    import torch
    import torch.nn as nn

    _cpu_stand_ins()
    from actionformer.core import load_config
    from actionformer.datasets import make_data_loader, make_dataset
    from actionformer.modeling import make_meta_arch
    from actionformer.utils import HAS_CPP_NMS, fix_random_seed, valid_one_epoch

    if not HAS_CPP_NMS:
        sys.exit("infer: ActionFormer's compiled nms_1d_cpu does not import")
    cfg = load_config(args.config)
    _ = fix_random_seed(0, include_cuda=True)  # as its eval.py
    dataset = make_dataset(cfg["dataset_name"], False, cfg["val_split"], **cfg["dataset"])
    loader = make_data_loader(dataset, False, None, 1, cfg["loader"]["num_workers"])
    model = nn.DataParallel(
        make_meta_arch(cfg["model_name"], **cfg["model"]), device_ids=cfg["devices"]
    )
    checkpoint = torch.load(args.ckpt, map_location="cpu", weights_only=False)
    key = {"raw": "state_dict", "ema": "state_dict_ema"}[args.weights]
    model.load_state_dict(checkpoint[key])
    print(
        f"infer: {args.ckpt} ({key}, epoch {checkpoint['epoch']}), {len(dataset)} test videos",
        flush=True,
    )
    del checkpoint
    out = Path(args.out)
    pkl = out.with_suffix(".pkl")
    start = time.perf_counter()
    valid_one_epoch(loader, model, -1, evaluator=None, output_file=str(pkl), print_freq=10)
    print(f"infer: {time.perf_counter() - start:.1f} s", flush=True)
    with open(pkl, "rb") as f:
        det = pickle.load(f)
    names = {i: name for name, i in dataset.label_dict.items()}
    results = {item["id"]: [] for item in dataset.data_list}
    for vid, t0, t1, label, score in zip(
        det["video-id"], det["t-start"], det["t-end"], np.asarray(det["label"]), det["score"]
    ):
        results[vid].append(
            {"label": names[int(label)], "score": float(score), "segment": [float(t0), float(t1)]}
        )
    for dets in results.values():
        dets.sort(key=lambda d: -d["score"])
    tmp = out.with_suffix(".tmp")
    tmp.write_text(
        json.dumps(
            {"version": "actionformer", "results": results, "external_data": {"used": False}}
        )
    )
    os.replace(tmp, out)
    n = sum(map(len, results.values()))
    print(f"infer: {n} detections in {len(results)} videos -> {out}")


def metrics(args):
    """metrics.json in this project's keys from ``salad_lightning.evaluate --json``."""
    ev = json.loads(Path(args.eval_json).read_text())
    thr = ev["tiou_thresholds"]
    m = {"split": "test", "tiou_thresholds": thr}
    m |= {f"test/mAP@{t:g}": ap for t, ap in zip(thr, ev["mAP"])}
    m["test/mAP"] = ev["average_mAP"]
    m["per_class_ap"] = ev.get("per_class", {})
    Path(args.out).write_text(json.dumps(m, indent=2))
    print(
        "test mAP (%): "
        + " / ".join(f"{100 * ap:.2f}" for ap in ev["mAP"])
        + f" at tIoU {', '.join(f'{t:g}' for t in thr)}; average {100 * ev['average_mAP']:.2f}"
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="step", required=True)
    s = sub.add_parser("split")
    s.add_argument("--experiment", required=True)
    s.add_argument("--holdout", type=float, required=True)
    s.add_argument("--data-root")
    s.add_argument("--out", required=True)
    s = sub.add_parser("config")
    s.add_argument("--split", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--output-folder", required=True)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--device", default="cpu")
    s.add_argument("--width", type=int, default=256)
    s.add_argument("--epochs", type=int, default=45)
    s.add_argument("--warmup-epochs", type=int, default=5)
    s.add_argument("--batch-size", type=int, default=2)
    s.add_argument("--lr", type=float, default=1e-4)
    s.add_argument("--weight-decay", type=float, default=0.05)
    s.add_argument("--max-seq-len", type=int, default=2304)
    s.add_argument("--workers", type=int, default=1)
    s = sub.add_parser("train")
    s.add_argument("--config", required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--ckpt-freq", type=int, default=5)
    s.add_argument("--print-freq", type=int, default=10)
    s.add_argument("--resume", default="")
    s = sub.add_parser("infer")
    s.add_argument("--config", required=True)
    s.add_argument("--ckpt", required=True)
    s.add_argument("--weights", choices=("raw", "ema"), default="raw")
    s.add_argument("--out", required=True)
    s = sub.add_parser("metrics")
    s.add_argument("eval_json")
    s.add_argument("--out", required=True)
    args = p.parse_args()
    {"split": split, "config": config, "train": train, "infer": infer, "metrics": metrics}[
        args.step
    ](args)


if __name__ == "__main__":
    main()
