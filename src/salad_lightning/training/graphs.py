"""``model.cuda_graph``: the training step's forward and backward as CUDA graphs.

A SALAD step launches thousands of small kernels: the BiGRU's per-timestep kernels
(~4 per step and direction, forward and backward) and ~700 for the heads, the matching
and the loss. On an H100 the host cannot issue them as fast as the device runs them
(experiments/benchmarks/README.md). A CUDA graph replays them with one launch. A graph
has fixed shapes and fixed addresses, so

- a batch with no padding in time keeps its shape and runs the network as usual; a
  padded batch is padded further, to a multiple of ``time_bucket`` steps, and runs
  the GRU without packing (:meth:`SaladNet.encode_padded`, the packed result at
  valid steps);
- its ground truths are copied into ``slots(N)`` slots (N rounded up to a power of
  two, at least 8), the rest masked out; extra padded steps and slots leave the loss
  unchanged (tested);
- one graph is kept per (batch, steps, channels, slots, padded, classification-only),
  up to ``max_graphs``; further shapes run eagerly;
- every graph writes its gradients into the same tensors, which become ``p.grad``
  before each replay; the optimiser step stays outside the graph (a fused launch
  through Lightning, so step counting and hooks are Lightning's; the per-epoch
  scheduler step, which manual optimisation leaves to the module, is this strategy's).

Under DDP the replayed gradients are averaged across processes by this module, in
buckets (:func:`all_reduce_gradients`): DDP's own reducer hooks the autograd engine's
gradient accumulation, which a replay never runs. On the CPU (no graphs) the same
path runs the graph's body eagerly, which is how CI tests it against eager DDP.

All graphs share one memory pool. That is safe because a replay's outputs (the
gradients and the logged values) are used before the next replay starts.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn

from salad_lightning.data.batch import Batch
from salad_lightning.training.step import TrainingStep

if TYPE_CHECKING:
    import pytorch_lightning as pl

GT_KEYS = ("gt_segments", "gt_labels", "gt_mask")
# (batch, steps, channels, slots, padded, cls_only)
Key = tuple[int, int, int, int, bool, bool]
Forward = Callable[[dict[str, Tensor], bool], dict[str, Tensor]]


def slots(n: int, minimum: int = 8) -> int:
    """The ground-truth slots of a graph for a batch with ``n`` (padded) ground truths."""
    return max(minimum, 1 << max(n - 1, 0).bit_length())


def batch_key(batch: Batch, cls_only: bool, time_bucket: int) -> Key:
    """The graph shape of ``batch`` (read from its host lengths: no device sync)."""
    b, t, c = batch.features.shape
    padded = not bool((batch.lengths_host == t).all())
    if padded:
        t = -(-t // time_bucket) * time_bucket
    return (b, t, c, slots(batch.gt_segments.shape[1]), padded, bool(cls_only))


def static_inputs(batch: Batch, key: Key) -> dict[str, Tensor]:
    """Input tensors of the graph ``key`` (zeros)."""
    b, t, c, n_slots, padded, _ = key
    f = batch.features
    out = {
        "features": f.new_zeros((b, t, c)),
        "frame_mask": torch.zeros((b, t), dtype=torch.bool, device=f.device),
    }
    if padded:
        out["lengths"] = torch.zeros(b, dtype=torch.int64, device=f.device)
    for k in GT_KEYS:
        v = getattr(batch, k)
        out[k] = v.new_zeros((b, n_slots, *v.shape[2:]))
    return out


def fill_inputs(static: dict[str, Tensor], batch: Batch) -> None:
    """Copy ``batch`` into a graph's input tensors. Extra steps are zeros and masked out
    (``frame_mask`` False); extra ground-truth slots are zeros with ``gt_mask`` False
    (never inside, never matched)."""
    t = batch.features.shape[1]
    for k in ("features", "frame_mask"):
        static[k][:, :t].copy_(getattr(batch, k), non_blocking=True)
        static[k][:, t:].zero_()
    if "lengths" in static:
        static["lengths"].copy_(batch.lengths, non_blocking=True)
    n = batch.gt_segments.shape[1]
    for k in GT_KEYS:
        static[k][:, :n].copy_(getattr(batch, k), non_blocking=True)
        static[k][:, n:].zero_()


def all_reduce_gradients(grads: Sequence[Tensor], bucket_bytes: int = 25 * 2**20) -> None:
    """Average ``grads`` over the processes of the default group, in place.

    Tensors are flattened into buckets of about ``bucket_bytes`` (DDP's default size);
    every bucket's all-reduce is started before the first is waited for, so that the
    transfers overlap each other and the copies. The division by the process count
    follows the sum, as in DDP.
    """
    world = torch.distributed.get_world_size()
    buckets: list[list[Tensor]] = [[]]
    size = 0
    for g in grads:
        if size and size + g.numel() * g.element_size() > bucket_bytes:
            buckets.append([])
            size = 0
        buckets[-1].append(g)
        size += g.numel() * g.element_size()
    flat = [torch.cat([g.reshape(-1) for g in bucket]) for bucket in buckets if bucket]
    works = [torch.distributed.all_reduce(f, async_op=True) for f in flat]
    for work, f, bucket in zip(works, flat, buckets):
        work.wait()
        f.div_(world)
        offset = 0
        for g in bucket:
            g.copy_(f[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


def _no_graphs() -> None:
    return None


class _Graph:
    def __init__(self, inputs: dict[str, Tensor]) -> None:
        self.inputs = inputs
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logs: dict[str, Tensor] = {}


class StepGraphs:
    """Forward + backward of the training step, captured per batch shape and replayed.

    Args:
        params: the parameters the optimiser steps; their ``.grad`` is what a step writes.
        forward: ``forward(inputs, cls_only)`` runs the network and the loss on a graph's
            input tensors (``inputs["lengths"]`` present for padded batches) and returns
            the logged values (0-d tensors), ``"train/loss"`` among them. It must neither
            synchronise with the host nor branch on tensor values.
        warmup_steps: graph-eligible steps run eagerly (on the capture stream) before the
            first capture, so that lazily created handles and the optimiser state exist.
        max_graphs: the most graphs kept; further shapes run eagerly.
        time_bucket: a padded batch's steps are rounded up to a multiple of this.
    """

    def __init__(
        self,
        params: Sequence[nn.Parameter],
        forward: Forward,
        *,
        warmup_steps: int = 3,
        max_graphs: int = 64,
        time_bucket: int = 256,
    ) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.forward = forward
        self.warmup_steps = int(warmup_steps)
        self.max_graphs = int(max_graphs)
        self.time_bucket = int(time_bucket)
        self.graphs: dict[Key, _Graph] = {}
        self.grads = [torch.zeros_like(p) for p in self.params]
        self.warmed = 0
        self.replays = 0
        self._stream: torch.cuda.Stream | None = None
        self._pool = None
        self._full_warned = False

    def __reduce__(self):
        # Captured graphs cannot be copied or pickled: a copy of the module (e.g. by a
        # weight-averaging callback) gets none and runs its steps eagerly.
        return (_no_graphs, ())

    def key(self, batch: Batch, cls_only: bool) -> Key | None:
        """The graph this batch takes, or None when it must run eagerly."""
        if batch.features.device.type != "cuda":
            return None
        return self.admit(batch_key(batch, cls_only, self.time_bucket))

    def admit(self, key: Key | None) -> Key | None:
        """``key``, unless it would be a new graph beyond ``max_graphs`` (warned once)."""
        if key is None or key in self.graphs or len(self.graphs) < self.max_graphs:
            return key
        if not self._full_warned:
            self._full_warned = True
            warnings.warn(
                f"model.cuda_graph: {len(self.graphs)} graphs kept (model.cuda_graph_max_graphs);"
                f" batches of other shapes, first {key[:5]}, run eagerly",
                stacklevel=3,
            )
        return None

    def step(self, batch: Batch, key: Key) -> dict[str, Tensor]:
        """Forward and backward of ``batch``; afterwards ``p.grad`` holds its gradients."""
        entry = self.graphs.get(key)
        if entry is None:
            entry = self.graphs[key] = _Graph(static_inputs(batch, key))
        fill_inputs(entry.inputs, batch)
        for p, g in zip(self.params, self.grads):
            p.grad = g
        if self.warmed < self.warmup_steps:
            self.warmed += 1
            return self._on_side_stream(lambda: self.forward_backward(entry.inputs, key[-1]))
        if entry.graph is None:
            self._capture(entry, key)
        entry.graph.replay()
        self.replays += 1
        return entry.logs

    def forward_backward(self, inputs: dict[str, Tensor], cls_only: bool) -> dict[str, Tensor]:
        """What a graph captures (and a warm-up step runs): the forward, the gradients
        into ``self.grads``, the logged values detached."""
        logs = self.forward(inputs, cls_only)
        grads = torch.autograd.grad(logs["train/loss"], self.params, allow_unused=True)
        for dst, g in zip(self.grads, grads):
            if g is None:
                dst.zero_()
            else:
                dst.copy_(g)
        return {k: v.detach() for k, v in logs.items()}

    def _side_stream(self) -> torch.cuda.Stream:
        if self._stream is None:
            self._stream = torch.cuda.Stream()
        return self._stream

    def _on_side_stream(self, fn: Callable[[], Any]) -> Any:
        stream, current = self._side_stream(), torch.cuda.current_stream()
        stream.wait_stream(current)
        with torch.cuda.stream(stream):
            out = fn()
        current.wait_stream(stream)
        return out

    def _capture(self, entry: _Graph, key: Key) -> None:
        graph = torch.cuda.CUDAGraph()
        stream = self._side_stream()
        stream.wait_stream(torch.cuda.current_stream())
        try:
            # thread_local: the DataLoader's pin-memory thread may call CUDA meanwhile
            with torch.cuda.graph(
                graph, pool=self._pool, stream=stream, capture_error_mode="thread_local"
            ):
                logs = self.forward_backward(entry.inputs, key[-1])
        except Exception as err:
            b, t, c, n_slots, padded, cls_only = key
            raise RuntimeError(
                f"model.cuda_graph=true: capturing the training step for a batch of "
                f"{b} x {t} steps x {c} channels ({n_slots} ground-truth slots, "
                f"padded={padded}, cls_only={cls_only}) failed: {err}. "
                "Set model.cuda_graph=false to train without CUDA graphs."
            ) from err
        if self._pool is None:
            self._pool = graph.pool()
        entry.graph, entry.logs = graph, logs


def _refuse(key: str, value: Any, off: str) -> None:
    raise ValueError(
        f"model.cuda_graph=true trains with manual optimisation, which does not support "
        f"{key} (found {value}); set {key}={off} or model.cuda_graph=false"
    )


class GraphStep(TrainingStep):
    """Forward and backward from CUDA graphs, the optimiser step eager, under Lightning's
    manual optimisation (same optimiser, per-epoch scheduler steps by this strategy).

    Graphs are used on CUDA devices in 32-bit precision, one process or several; with
    ``pruning=frozen`` (per-video alpha read on the host) or on the CPU in one process,
    every step runs eagerly, with a warning. Under DDP with graphs every step that is not
    a replay runs the network eagerly and takes its gradients with ``torch.autograd.grad``,
    as a graph does; the gradients are then averaged by :func:`all_reduce_gradients`. So
    it is on the CPU, where the graph's body runs eagerly in the graphs' place (what the
    CPU tests check). On CUDA without graphs the steps are Lightning's own
    (``manual_backward``): its DDP reducer averages, its precision plugin scales the loss.
    """

    automatic_optimization = False

    def __init__(
        self,
        *args: Any,
        warmup_steps: int = 3,
        max_graphs: int = 64,
        time_bucket: int = 256,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        for name, value in (
            ("cuda_graph_warmup_steps", warmup_steps),
            ("cuda_graph_max_graphs", max_graphs),
            ("cuda_graph_time_bucket", time_bucket),
        ):
            if int(value) < 1:
                raise ValueError(f"model.{name} must be >= 1, found {value}")
        self.options = {
            "warmup_steps": int(warmup_steps),
            "max_graphs": int(max_graphs),
            "time_bucket": int(time_bucket),
        }
        self.graphs: StepGraphs | None = None
        self.sync_gradients = False  # True under DDP: this strategy averages the gradients

    def check(self, trainer: pl.Trainer) -> None:
        if trainer.gradient_clip_val:  # None and 0 mean off
            _refuse("trainer.gradient_clip_val", trainer.gradient_clip_val, "null")
        if trainer.accumulate_grad_batches != 1:
            _refuse("trainer.accumulate_grad_batches", trainer.accumulate_grad_batches, "1")

    def on_train_start(self, module: pl.LightningModule) -> None:
        trainer = module.trainer
        self.graphs = None
        why = None
        if self.frozen is not None:
            why = "pruning=frozen reads each video's alpha on the host"
        elif module.device.type != "cuda":
            why = f"the module is on {module.device.type}, not CUDA"
        elif str(trainer.precision) not in ("32-true", "32"):
            why = f"trainer.precision={trainer.precision} (graphs need 32-true)"
        # not on CUDA without graphs: autograd.grad outside manual_backward would skip the
        # loss scaling of 16-mixed precision, and DDP's own reducer overlaps better
        self.sync_gradients = trainer.world_size > 1 and (
            why is None or module.device.type != "cuda"
        )
        if why is not None:
            rank_zero_warn(f"model.cuda_graph=true: every training step runs eagerly: {why}")
            return
        self.graphs = StepGraphs(
            list(module.parameters()),
            lambda inputs, cls_only: self.graph_forward(module, inputs, cls_only),
            **self.options,
        )

    def graph_forward(
        self, module: pl.LightningModule, inputs: dict[str, Tensor], cls_only: bool
    ) -> dict[str, Tensor]:
        """What a CUDA graph captures (with its backward): the step on fixed-shape inputs."""
        net = self.head_loss.net
        if "lengths" in inputs:  # padded in time: the GRU without packing
            state = net.encode_padded(inputs["features"], inputs["lengths"])
        else:
            state = net.encode(inputs["features"], None)
        return self.head_loss(
            state,
            module.max_offset,
            inputs["gt_segments"],
            inputs["gt_labels"],
            inputs["gt_mask"],
            inputs["frame_mask"],
            None,
            cls_only=cls_only,
        )

    def step(self, module: pl.LightningModule, batch: Batch, cls_only: bool) -> dict[str, Tensor]:
        opt = module.optimizers()
        key = self.graphs.key(batch, cls_only) if self.graphs is not None else None
        if key is not None:
            logs = self.graphs.step(batch, key)
            if self.sync_gradients:
                all_reduce_gradients(self.graphs.grads)
        elif self.sync_gradients:
            logs = self._eager_gradients(module, batch, cls_only)
        else:
            opt.zero_grad()
            logs = self.eager_logs(module, batch, cls_only)
            module.manual_backward(logs["train/loss"])
            logs = {k: v.detach() for k, v in logs.items()}
        opt.step()
        # a copy: a graph's outputs are overwritten by its next replay, and callbacks may
        # keep the step's outputs
        return {k: v.clone() for k, v in logs.items()}

    def _eager_gradients(
        self, module: pl.LightningModule, batch: Batch, cls_only: bool
    ) -> dict[str, Tensor]:
        """A step that is not a replay, under DDP: the gradients as a graph takes them
        (``autograd.grad``, outside DDP's reducer), then averaged across processes."""
        logs = self.eager_logs(module, batch, cls_only)
        params = [p for p in module.parameters() if p.requires_grad]
        grads = torch.autograd.grad(logs["train/loss"], params, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
        all_reduce_gradients(grads)
        for p, g in zip(params, grads):
            p.grad = g
        return {k: v.detach() for k, v in logs.items()}

    def on_train_epoch_end(self, module: pl.LightningModule) -> None:
        # manual optimisation: Lightning leaves the per-epoch scheduler step to the module
        schedulers = module.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            if scheduler is not None:
                scheduler.step()
