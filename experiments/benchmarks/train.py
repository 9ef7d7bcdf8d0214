"""Training and validation speed of the real SaladLitModule + SaladDataModule, against the
bare bidirectional GRU measured in the same run (issue 7).

Every figure is measured in this process and printed next to its baseline:

- step: one optimisation step of the real module through a Lightning ``Trainer``
  (data loading, matching, loss, Adam, logging on) on fixed-shape batches, against
  the bare ``nn.GRU`` forward+backward on the same shapes (THUMOS14-like B=4, T=2304;
  ActivityNet-like B=16, T=100);
- epoch: one THUMOS14-shaped training epoch (the real training-video lengths of the
  annotation file, stride 4, crops of 2304, batch 4, validation excluded) against the
  bare GRU over the same lengths, length-bucketed with packed sequences;
- validation: inference + soft-NMS + mAP over the THUMOS14 test videos (whole).

    python experiments/benchmarks/train.py                     # GPU if present, paper sizes
    python experiments/benchmarks/train.py --small --videos 24 # a CPU-sized run

Features are random (speed does not depend on their values) and written once under
``--workdir``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from salad_lightning.data import SaladDataModule
from salad_lightning.lit_module import SaladLitModule
from salad_lightning.losses.criterion import SaladCriterion
from salad_lightning.models.net import SaladNet

REPO = Path(__file__).resolve().parents[2]
FPS, STRIDE, WINDOW = 30.0, 4, 16


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def duration_for(steps: int) -> float:
    """The duration whose clip count (stride 4, window 16, 30 fps) is ``steps``."""
    return ((steps - 1) * STRIDE + WINDOW) / FPS


def write_dataset(root: Path, lengths: dict[str, tuple[str, int]], dim: int, seed: int = 0) -> Path:
    """Annotation JSON (one action per 40 s, at least one) + one random .npy per video."""
    ann = root / "annotations.json"
    if ann.is_file():
        return ann
    feats = root / "features"
    feats.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    block = rng.standard_normal((4096, dim), dtype=np.float32)
    db = {}
    for vid, (subset, t) in lengths.items():
        offset = int(rng.integers(0, 4096 - min(t, 4096) + 1))
        reps = -(-t // 4096)
        x = np.concatenate([np.roll(block, offset, axis=0)] * reps)[:t]
        np.save(feats / f"{vid}.npy", x)
        dur = duration_for(t)
        n_act = max(1, int(dur // 40))
        starts = np.sort(rng.uniform(0, dur * 0.9, n_act))
        db[vid] = {
            "subset": subset,
            "duration": round(dur, 3),
            "fps": FPS,
            "annotations": [
                {
                    "label": f"class{int(rng.integers(0, 20)):02d}",
                    "segment": [round(s, 2), round(min(s + rng.uniform(1, 8), dur), 2)],
                }
                for s in starts
            ],
        }
    train = [v for v, (s, _) in lengths.items() if s == "train"]
    for k in range(20):  # every class present in training, on as many videos as there are
        vid = train[k % len(train)]
        db[vid]["annotations"].append(
            {"label": f"class{k:02d}", "segment": [1.0 + k * 0.1, 2.0 + k * 0.1]}
        )
    ann.write_text(json.dumps({"version": "bench", "database": db}))
    return ann


def real_lengths(annotation_file: Path, subset: str) -> list[int]:
    raw = annotation_file.read_bytes()
    if annotation_file.suffix == ".gz":
        raw = gzip.decompress(raw)
    db = json.loads(raw)["database"]
    return [
        max(1, (int(v["duration"] * v["fps"]) - WINDOW) // STRIDE + 1)
        for v in db.values()
        if v["subset"] == subset
    ]


MODES = ("eager", "compile", "graph")


def make_module(args, feature_dim: int, mode: str = "eager") -> SaladLitModule:
    """The module as configured by ``mode``: eager, ``compile=True`` or ``cuda_graph=True``."""
    h = args.hidden
    net = SaladNet(
        input_dim=feature_dim,
        num_classes=20,
        hidden_size=h,
        reg_dims=(2 * h, h, h),
        sa_dims=(2 * h, h, h),
        cls_dims=(2 * h, h),
    )
    opt = lambda params: torch.optim.Adam(params, lr=1e-4, fused=args.device.type == "cuda")  # noqa: E731
    return SaladLitModule(
        net,
        SaladCriterion(),
        opt,
        max_offset=64.0,
        postprocess={
            "fusion": "regression",
            "nms": "soft",
            "nms_method": "gaussian",
            "sigma": 0.5,
            "min_score": 0.001,
            "max_segments": 200,
        },
        tiou_thresholds=(0.3, 0.4, 0.5, 0.6, 0.7),
        class_names=[f"class{k:02d}" for k in range(20)],
        compile=mode == "compile",
        cuda_graph=mode == "graph",
    )


def make_dm(
    args, ann: Path, batch: int, *, max_seq_len: int | None, resize_to=None, test_subset="test"
) -> SaladDataModule:
    return SaladDataModule(
        annotation_file=str(ann),
        feature_dir=str(ann.parent / "features"),
        feature_dim=args.feature_dim,
        train_subset="train",
        val_subset=None,
        val_holdout=0.0,
        test_subset=test_subset,
        stride=STRIDE,
        window=WINDOW,
        default_fps=FPS,
        resize_to=resize_to,
        max_seq_len=max_seq_len,
        batch_size=batch,
        eval_batch_size=args.eval_batch,
        num_workers=args.workers,
        pin_memory=args.device.type == "cuda",
        persistent_workers=args.workers > 0,
    )


class StepTimer(pl.Callback):
    """Throughput of training steps ``warm..`` (synchronised only at the two ends, so the
    host runs ahead of the device as in a real run) and wall time of every epoch."""

    def __init__(self, device: torch.device, warm: int = 5) -> None:
        self.device, self.warm = device, warm
        self.window: tuple[float, int] | None = None
        self.epoch_times: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == 0 and batch_idx == self.warm - 1:
            sync(self.device)
            self._t0, self._n0 = time.perf_counter(), batch_idx

    def on_train_epoch_start(self, *a, **k) -> None:
        sync(self.device)
        self._epoch_t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, *a, **k) -> None:
        sync(self.device)
        now = time.perf_counter()
        self.steps_per_epoch = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        self.epoch_times.append(now - self._epoch_t0)
        if trainer.current_epoch == 0 and hasattr(self, "_t0"):
            last = self.steps_per_epoch - 1
            self.window = (now - self._t0, last - self._n0)

    def step_ms(self) -> float:
        elapsed, steps = self.window
        return 1000 * elapsed / steps


def trainer(args, callbacks, **kw) -> pl.Trainer:
    return pl.Trainer(
        accelerator=args.device.type if args.device.type == "cuda" else "cpu",
        devices=1,
        logger=pl.loggers.CSVLogger(args.workdir / "logs"),
        log_every_n_steps=10,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        callbacks=callbacks,
        **kw,
    )


def bare_gru_ms(args, batch: int, t: int, repeats: int, graphed: bool = False) -> float:
    """Median fwd+bwd of the bare BiGRU on (batch, t, C) (the baseline; one launch
    sequence per step, so a per-step synchronisation costs it nothing). ``graphed``:
    the same captured once as a CUDA graph and replayed (a reference for
    ``model.cuda_graph``, which also removes the GRU's own launch overhead)."""
    gru = torch.nn.GRU(args.feature_dim, args.hidden, batch_first=True, bidirectional=True).to(
        args.device
    )
    x = torch.randn(batch, t, args.feature_dim, device=args.device)

    def fwd_bwd():
        out, _ = gru(x)
        out.sum().backward()

    run = fwd_bwd
    if graphed:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                fwd_bwd()
        torch.cuda.current_stream().wait_stream(stream)
        gru.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fwd_bwd()
        run = graph.replay
    times = []
    for i in range(repeats + 3):
        sync(args.device)
        t0 = time.perf_counter()
        run()
        sync(args.device)
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def bare_gru_epoch_s(args, lengths: list[int], batch: int) -> float:
    """The bare BiGRU over the given lengths, bucketed (sorted) and packed."""
    from torch.nn.utils.rnn import pack_padded_sequence

    gru = torch.nn.GRU(args.feature_dim, args.hidden, batch_first=True, bidirectional=True).to(
        args.device
    )
    order = sorted(lengths, reverse=True)
    batches = [order[i : i + batch] for i in range(0, len(order), batch)]
    xs = [torch.randn(len(b), b[0], args.feature_dim, device=args.device) for b in batches]
    for _ in range(2):  # warm-up, then the timed epoch
        sync(args.device)
        t0 = time.perf_counter()
        for b, x in zip(batches, xs):
            lens = torch.tensor(b)
            packed = pack_padded_sequence(x, lens, batch_first=True, enforce_sorted=True)
            out, _ = gru(packed)
            out.data.sum().backward()
        sync(args.device)
        elapsed = time.perf_counter() - t0
    return elapsed


def module_step_ms(
    args, name: str, batch: int, t: int, repeats: int, mode: str = "eager"
) -> tuple[float, float]:
    """Mean training-step time of the real module through Lightning (steps after a
    warm-up, host and device overlapping as in a real run), and videos/s. With
    ``compile`` the warm-up steps include the compilation, with ``graph`` the captures."""
    warm = 5
    n_videos = batch * (repeats + warm)
    lengths = {f"{name}_{i:04d}": ("train", t) for i in range(n_videos)}
    lengths.update({f"{name}_test_{i}": ("test", t) for i in range(2)})
    ann = write_dataset(
        args.workdir / f"fixed_{name}_{t}_{args.feature_dim}_{n_videos}", lengths, args.feature_dim
    )
    dm = make_dm(args, ann, batch, max_seq_len=t)
    timer = StepTimer(args.device, warm=warm)
    module = make_module(args, args.feature_dim, mode)
    trainer(args, [timer], max_epochs=1).fit(module, datamodule=dm)
    ms = timer.step_ms()
    return ms, batch / (ms / 1000)


class Profiled(pl.Callback):
    """torch.profiler over training steps 5..14 (profile first, change what it shows)."""

    def __init__(self, out: Path) -> None:
        self.out, self.prof = out, None

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if batch_idx == 5:
            acts = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                acts.append(torch.profiler.ProfilerActivity.CUDA)
            self.prof = torch.profiler.profile(activities=acts)
            self.prof.__enter__()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if batch_idx == 14 and self.prof is not None:
            self.prof.__exit__(None, None, None)
            ka = self.prof.key_averages()
            key = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
            text = (
                ka.table(sort_by=key, row_limit=30)
                + "\n"
                + ka.table(sort_by="self_cpu_time_total", row_limit=30)
            )
            self.out.write_text(text)
            self.prof = None


def profile_steps(args, out: Path) -> None:
    lengths = {f"prof_{i:04d}": ("train", 100) for i in range(16 * 16)}
    lengths.update({f"prof_test_{i}": ("test", 100) for i in range(2)})
    ann = write_dataset(args.workdir / f"profile_{args.feature_dim}", lengths, args.feature_dim)
    trainer(args, [Profiled(out)], max_epochs=1).fit(
        make_module(args, args.feature_dim), datamodule=make_dm(args, ann, 16, max_seq_len=100)
    )
    print(f"profile of ActivityNet-shaped steps 5..14 written to {out}")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--annotations",
        type=Path,
        default=REPO / "data/thumos14/thumos14.json.gz",
        help="THUMOS14 annotation file whose video lengths shape the epoch",
    )
    p.add_argument("--workdir", type=Path, default=Path("/tmp/salad_bench_train"))
    p.add_argument("--small", action="store_true", help="CPU sizes: C=64, H=64, crops of 256")
    p.add_argument(
        "--videos", type=int, default=None, help="training videos of the epoch (default: all 200)"
    )
    p.add_argument(
        "--test-videos", type=int, default=None, help="validation videos (default: all 212)"
    )
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--eval-batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--parts", nargs="+", default=["step", "epoch", "validation"])
    p.add_argument(
        "--modes",
        nargs="+",
        choices=MODES,
        default=list(MODES),
        help="module settings to time in the step and epoch parts: eager, model.compile=true, "
        "model.cuda_graph=true",
    )
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="write a torch.profiler table of ActivityNet-shaped steps here",
    )
    args = p.parse_args()
    args.device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.feature_dim, args.hidden, crop = (64, 64, 256) if args.small else (2048, 1024, 2304)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = False
    torch.set_float32_matmul_precision("high")
    name = torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else "cpu"
    print(
        f"device: {name} | torch {torch.__version__} | lightning {pl.__version__} | C={args.feature_dim} H={args.hidden} crop={crop}"
    )

    if "step" in args.parts:
        # ActivityNet-shaped steps are short: 4x as many of them for a steadier mean
        for label, b, t, n in (
            ("anet", 16, 100, 4 * args.repeats),
            ("thumos", 4, crop, args.repeats),
        ):
            base = bare_gru_ms(args, b, t, n)
            if "graph" in args.modes and args.device.type == "cuda":
                ref = bare_gru_ms(args, b, t, n, graphed=True)
                print(
                    f"step {label:6s} B={b:2d} T={t:4d}: bare BiGRU fwd+bwd {base:8.2f} ms | the same as one CUDA graph {ref:8.2f} ms | ratio {ref / base:.3f}"
                )
            for mode in args.modes:
                ms, vps = module_step_ms(args, label, b, t, n, mode)
                print(
                    f"step {label:6s} B={b:2d} T={t:4d}: bare BiGRU fwd+bwd {base:8.2f} ms | SaladLitModule ({mode:7s}) step {ms:8.2f} ms ({vps:7.1f} videos/s, {1000 / ms:6.2f} steps/s) | ratio {ms / base:.3f}"
                )

    if args.profile is not None:
        profile_steps(args, args.profile)

    train_lengths = real_lengths(args.annotations, "Validation")[: args.videos]
    test_lengths = real_lengths(args.annotations, "Test")[: args.test_videos]
    lengths = {f"v{i:04d}": ("train", t) for i, t in enumerate(train_lengths)}
    lengths.update({f"t{i:04d}": ("test", t) for i, t in enumerate(test_lengths)})
    ann = write_dataset(
        args.workdir / f"thumos_shaped_{args.feature_dim}_{len(train_lengths)}_{len(test_lengths)}",
        lengths,
        args.feature_dim,
    )

    if "epoch" in args.parts:
        cropped = [min(t, crop) for t in train_lengths]
        base = bare_gru_epoch_s(args, cropped, 4)
        for mode in args.modes:
            timer = StepTimer(args.device)
            module = make_module(args, args.feature_dim, mode)
            trainer(args, [timer], max_epochs=2).fit(
                module, datamodule=make_dm(args, ann, 4, max_seq_len=crop)
            )
            ep = timer.epoch_times[-1]
            sg = getattr(module.training_step_strategy, "graphs", None)
            if sg is not None:
                steps = 2 * timer.steps_per_epoch
                print(
                    f"epoch graphs: {len(sg.graphs)} shapes, {sg.replays} of {steps} steps replayed (2 epochs)"
                )
            print(
                f"epoch thumos-shaped ({len(cropped)} videos, crops of {crop}, batch 4): bare BiGRU bucketed+packed {base:7.2f} s | SaladLitModule ({mode:7s}) epoch {ep:7.2f} s (first epoch {timer.epoch_times[0]:.2f} s) | ratio {ep / base:.3f}"
            )

    if "validation" in args.parts:
        module = make_module(args, args.feature_dim)
        dm = make_dm(args, ann, 4, max_seq_len=crop)
        tr = trainer(args, [])
        tr.test(module, datamodule=dm, verbose=False)  # warm-up (page cache, kernels)
        sync(args.device)
        t0 = time.perf_counter()
        tr.test(module, datamodule=dm, verbose=False)
        sync(args.device)
        el = time.perf_counter() - t0
        print(
            f"validation thumos-test-shaped ({len(test_lengths)} whole videos, inference + soft-NMS + mAP): {el:.2f} s ({len(test_lengths) / el:.1f} videos/s)"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
