"""``model.cuda_graph``: the graphed training step (training/graphs.py).

On the CPU: the ground-truth padding the graphs use leaves the loss and the gradients
unchanged, the captured body neither synchronises nor branches on tensor values, and
the manual optimisation the option switches to trains exactly like Lightning's
automatic loop. On a CUDA device (skipped elsewhere; run by
experiments/benchmarks/gpu_check.sh): replayed graphs train like the same steps run
eagerly.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import pytorch_lightning as pl
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from salad_lightning.data.batch import Batch
from salad_lightning.lit_module import SaladLitModule
from salad_lightning.losses.criterion import SaladCriterion
from salad_lightning.models.net import SaladNet
from salad_lightning.training.graphs import (
    GraphStep,
    StepGraphs,
    batch_key,
    fill_inputs,
    slots,
    static_inputs,
)
from salad_lightning.training.step import STAT_KEYS

K, C = 5, 8


def make_module(seed: int = 0, pruning: str = "salad", **kw) -> SaladLitModule:
    torch.manual_seed(seed)
    net = SaladNet(C, K, hidden_size=8, reg_dims=(16, 8, 8), sa_dims=(16, 8, 8), cls_dims=(16, 8))
    kw.setdefault("optimizer", lambda params: torch.optim.Adam(params, lr=1e-2))
    loss = SaladCriterion(lambda1=1.0, lambda2=0.1, mu=0.5, pruning=pruning)
    return SaladLitModule(net, loss, max_offset=12.0, **kw)


def graph_body(module: SaladLitModule):
    """The function a graph captures, whatever the module's own strategy."""
    body = GraphStep(module.net, module.criterion)
    return lambda inputs, cls_only: body.graph_forward(module, inputs, cls_only)


def make_batch(b: int, t: int, n: int, seed: int, *, padded: bool = False, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.full((b,), t)
    if padded:
        lengths[1:] = torch.randint(t // 2, t, (b - 1,), generator=g)
    gt = torch.sort(torch.rand(b, n, 2, generator=g) * t, dim=-1).values
    gt[..., 1] = torch.minimum(gt[..., 0] + 2 + torch.rand(b, n, generator=g) * 8, gt[..., 1])
    ones = torch.ones(b, dtype=torch.float64)
    batch = Batch(
        features=torch.randn(b, t, C, generator=g),
        lengths=lengths,
        frame_mask=torch.arange(t) < lengths[:, None],
        gt_segments=gt,
        gt_labels=torch.randint(0, K, (b, n), generator=g),
        gt_mask=torch.rand(b, n, generator=g) < 0.8,
        scale=ones,
        offset=ones,
        duration=ones * t,
        meta=[{"video_id": f"v{i}"} for i in range(b)],
        lengths_host=lengths.clone(),
    )
    return batch.to(device)


def test_slots_round_up_to_powers_of_two():
    assert [slots(n) for n in (0, 1, 7, 8, 9, 16, 17, 100)] == [8, 8, 8, 8, 16, 16, 32, 128]
    assert slots(3, minimum=1) == 4 and slots(1, minimum=1) == 1


def test_batch_key():
    full, padded = make_batch(2, 40, 5, seed=0), make_batch(2, 40, 9, seed=0, padded=True)
    assert batch_key(full, False, 16) == (2, 40, C, 8, False, False)  # unpadded: T kept
    assert batch_key(padded, True, 16) == (2, 48, C, 16, True, True)
    assert batch_key(padded, True, 40) == (2, 40, C, 16, True, True)
    assert padded.lengths_host.device.type == "cpu"  # the key never reads the device


def test_fill_inputs_pads_and_clears_old_values():
    big, small = make_batch(2, 12, 6, seed=0), make_batch(2, 10, 2, seed=1, padded=True)
    static = static_inputs(big, (2, 16, C, 8, True, False))
    assert static["gt_segments"].shape == (2, 8, 2) and static["gt_mask"].dtype == torch.bool
    fill_inputs(static, big)
    fill_inputs(static, small)  # the earlier batch's steps 10, 11 and slots 2..5 must not survive
    assert torch.equal(static["features"][:, :10], small.features)
    assert torch.equal(static["frame_mask"][:, :10], small.frame_mask)
    assert torch.equal(static["lengths"], small.lengths)
    assert not static["features"][:, 10:].any() and not static["frame_mask"][:, 10:].any()
    for k in ("gt_segments", "gt_labels", "gt_mask"):
        assert torch.equal(static[k][:, :2], getattr(small, k)), k
        assert not static[k][:, 2:].any(), k


def test_encode_padded_is_the_packed_encoder_at_valid_steps():
    """The unpacked bidirectional GRU (right-aligned copy for the backward direction)
    gives the packed GRU's state, and gradients, at every valid step, also with extra
    padded steps after the batch's longest video."""
    torch.manual_seed(0)
    net = SaladNet(C, K, hidden_size=8, reg_dims=(16, 8, 8), sa_dims=(16, 8, 8), cls_dims=(16, 8))
    lengths = torch.tensor([30, 7, 19, 1])
    x = torch.randn(4, 30, C) * (torch.arange(30) < lengths[:, None]).unsqueeze(-1)
    mask = torch.arange(30) < lengths[:, None]
    weight = torch.randn(4, 30, 16)
    packed = net.encode(x, lengths)
    (packed * weight * mask.unsqueeze(-1)).sum().backward()
    ref = [p.grad.clone() for p in net.encoder.parameters()]
    net.zero_grad()
    wide = torch.cat([x, torch.randn(4, 9, C)], dim=1)  # padding need not be zeros
    state = net.encode_padded(wide, lengths)[:, :30]
    (state * weight * mask.unsqueeze(-1)).sum().backward()
    torch.testing.assert_close(state[mask], packed[mask], rtol=1e-5, atol=1e-6)
    for g, r in zip((p.grad for p in net.encoder.parameters()), ref):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6)
    # the plain bidirectional call over the padded batch is what this avoids
    plain = net.encode(x, None)
    assert not torch.allclose(plain[mask], packed[mask], atol=1e-3)


def _graph_vs_eager(module, batch, cls_only, time_bucket=16):
    module.net.zero_grad(set_to_none=True)
    logs = module.training_step_strategy.eager_logs(module, batch, cls_only)
    logs["train/loss"].backward()
    ref_grads = [p.grad.clone() for p in module.parameters()]
    graphs = StepGraphs(list(module.parameters()), graph_body(module), time_bucket=time_bucket)
    key = batch_key(batch, cls_only, time_bucket)
    static = static_inputs(batch, key)
    fill_inputs(static, batch)
    out = graphs.forward_backward(static, cls_only)
    return key, logs, ref_grads, out, graphs.grads


@pytest.mark.parametrize("cls_only", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_graph_inputs_give_the_eager_step(cls_only, padded):
    """What a graph runs, on inputs padded to the graph's shape (ground truths 5 -> 8 and
    9 -> 16 slots; padded batches 40 -> 48 steps through the unpacked GRU), gives the
    eager step's loss terms, statistics and gradients."""
    module = make_module()
    for n, seed in ((5, 3), (9, 4)):
        batch = make_batch(4, 40, n, seed, padded=padded)
        key, logs, ref_grads, out, grads = _graph_vs_eager(module, batch, cls_only)
        assert key[1] == (48 if padded else 40) and key[3] == (8 if n == 5 else 16)
        assert set(out) == set(logs)
        for k in logs:
            torch.testing.assert_close(out[k], logs[k].detach(), rtol=1e-5, atol=1e-6, msg=k)
        for k in STAT_KEYS:
            assert torch.equal(out[f"train/{k}"], logs[f"train/{k}"]), k
        for g, r in zip(grads, ref_grads):
            torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)


SYNCING_OPS = {
    "aten::_local_scalar_dense",
    "aten::item",
    "aten::nonzero",
    "aten::nonzero_static",
    "aten::masked_select",
    "aten::unique",
    "aten::_unique",
    "aten::_unique2",
    "aten::unique_consecutive",
    "aten::unique_dim",
    "aten::equal",
    "aten::is_nonzero",
    "aten::lift_fresh",  # torch.tensor(<host data>) inside the step: a host-to-device copy
}


class SyncSpy(TorchDispatchMode):
    """Records the operators that need the host to see tensor values (or copy host data)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        if name in SYNCING_OPS:
            self.found.append(name)
        if name in ("aten::index", "aten::index_put", "aten::index_put_"):
            indices = args[1] if len(args) > 1 else []
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices):
                self.found.append(f"{name} with a boolean mask")
        if name == "aten::repeat_interleave" and (kwargs or {}).get("output_size") is None:
            self.found.append(name)
        return func(*args, **(kwargs or {}))


def test_sync_spy_sees_what_breaks_a_capture():
    x = torch.randn(5)
    with SyncSpy() as spy:
        x.sum().item()
        x[x > 0]
        torch.tensor([1.0, 2.0])
    assert spy.found == [
        "aten::_local_scalar_dense",
        "aten::index with a boolean mask",
        "aten::lift_fresh",
    ]


@pytest.mark.parametrize("pruning", ["salad", "random", "top1_iou"])
@pytest.mark.parametrize("cls_only", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_graph_step_never_needs_tensor_values_on_the_host(pruning, cls_only, padded):
    """A CUDA graph cannot capture a host read-back or a data-dependent shape: what it
    runs (GRU, heads, matching, loss, gradients) issues none of those operators."""
    module = make_module(pruning=pruning)
    batch = make_batch(3, 30, 4, seed=5, padded=padded)
    graphs = StepGraphs(list(module.parameters()), graph_body(module), time_bucket=16)
    static = static_inputs(batch, batch_key(batch, cls_only, 16))
    fill_inputs(static, batch)
    with SyncSpy() as spy:
        graphs.forward_backward(static, cls_only)
    assert spy.found == []


class FixedBatches(torch.utils.data.Dataset):
    def __init__(self, batches):
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, i):
        return self.batches[i]


def fit(module, batches, epochs, **kw):
    loader = torch.utils.data.DataLoader(
        FixedBatches(batches), batch_size=None, shuffle=False, num_workers=0
    )
    trainer = pl.Trainer(
        accelerator=kw.pop("accelerator", "cpu"),
        devices=1,
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        log_every_n_steps=1,
        **kw,
    )
    trainer.fit(module, train_dataloaders=loader)
    return trainer


def _batches():
    return [
        make_batch(3, 24, n, seed, padded=padded)
        for n, seed, padded in ((3, 10, False), (6, 11, True), (2, 12, False), (9, 13, False))
    ]


def test_manual_optimisation_trains_like_the_automatic_loop():
    """cuda_graph=true on the CPU runs every step eagerly under manual optimisation: the
    same parameters, optimiser steps and per-epoch learning rates as Lightning's
    automatic loop, through a classification pre-training epoch and a scheduler."""
    sched = lambda optimizer: torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.5)  # noqa: E731
    auto = make_module(scheduler=sched, cls_pretrain_epochs=1)
    manual = make_module(scheduler=sched, cls_pretrain_epochs=1, cuda_graph=True)
    assert auto.automatic_optimization and not manual.automatic_optimization
    t_auto = fit(auto, _batches(), epochs=3)
    with pytest.warns(UserWarning, match="cuda_graph=true: every training step runs eagerly"):
        t_manual = fit(manual, _batches(), epochs=3)
    assert manual.training_step_strategy.graphs is None
    assert t_manual.global_step == t_auto.global_step == 12
    lrs = [t.optimizers[0].param_groups[0]["lr"] for t in (t_auto, t_manual)]
    assert lrs[0] == lrs[1] == pytest.approx(1e-2 * 0.5**3)
    for (name, pa), pm in zip(auto.named_parameters(), manual.parameters()):
        assert torch.equal(pa, pm), name
    assert not torch.equal(auto.net.reg_head[0].weight, make_module().net.reg_head[0].weight)


def test_graphs_are_neither_copied_nor_pickled():
    """A copy of the module (weight averaging, pickling) gets no graphs: it steps eagerly."""
    import pickle

    module = make_module(cuda_graph=True)
    strategy = module.training_step_strategy
    strategy.graphs = StepGraphs(list(module.parameters()), graph_body(module))
    assert copy.deepcopy(module).training_step_strategy.graphs is None
    assert pickle.loads(pickle.dumps(strategy.graphs)) is None
    assert strategy.graphs is not None


def test_a_full_graph_cache_sends_new_shapes_to_eager_steps_with_one_warning():
    graphs = StepGraphs([], lambda inputs, cls_only: {}, max_graphs=1)
    kept, other = (2, 16, C, 8, False, False), (2, 32, C, 8, True, False)
    assert graphs.admit(kept) == kept
    graphs.graphs[kept] = None  # as if captured
    assert graphs.admit(kept) == kept  # a kept shape stays
    with pytest.warns(UserWarning, match=r"1 graphs kept .* first \(2, 32, 8, 8, True\)"):
        assert graphs.admit(other) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert graphs.admit(other) is None  # warned once


def test_cuda_graph_options_are_checked():
    with pytest.raises(ValueError, match="model.compile=true and model.cuda_graph=true"):
        make_module(compile=True, cuda_graph=True)
    with pytest.raises(ValueError, match="cuda_graph_warmup_steps must be >= 1, found 0"):
        make_module(cuda_graph=True, cuda_graph_warmup_steps=0)
    with pytest.raises(ValueError, match="cuda_graph_time_bucket must be >= 1, found -2"):
        make_module(cuda_graph=True, cuda_graph_time_bucket=-2)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_replayed_graphs_train_like_eager_steps_on_the_device():
    """Two identical modules over the same batches (3 x 24 steps; unpadded ones with 3, 2
    and 9 ground truths: 8- and 16-slot graphs; a padded one with 6: a 32-step graph; a
    classification pre-training epoch, then the full loss): one replays captured graphs,
    the other runs the same steps eagerly (its warm-up never ends). Same parameters."""
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        kw = dict(cls_pretrain_epochs=1, cuda_graph=True, cuda_graph_time_bucket=32)
        graphed = make_module(cuda_graph_warmup_steps=1, **kw)
        eager = make_module(cuda_graph_warmup_steps=10**6, **kw)
        before = copy.deepcopy(graphed.state_dict())
        fit(graphed, _batches(), epochs=3, accelerator="gpu")
        fit(eager, _batches(), epochs=3, accelerator="gpu")
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    sg = graphed.training_step_strategy.graphs
    # 12 steps: 1 warm-up, 11 replays over 6 graphs (3 shapes x cls_only)
    assert sg.replays == 11 and len(sg.graphs) == 6
    assert {k[1] for k in sg.graphs} == {24, 32}
    assert eager.training_step_strategy.graphs.replays == 0
    for (name, pg), pe in zip(graphed.named_parameters(), eager.parameters()):
        torch.testing.assert_close(pg, pe, rtol=1e-5, atol=1e-6, msg=name)
        assert not torch.equal(pg.cpu(), before[name].cpu()), name


def _all_reduce_worker(rank: int, world: int, init_file: str, out: str) -> None:
    import torch.distributed as dist

    from salad_lightning.training.graphs import all_reduce_gradients

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        g = torch.Generator().manual_seed(rank)
        grads = [torch.randn(s, generator=g) for s in ((3, 5), (7,), (2, 2, 2), (11,))]
        before = [x.clone() for x in grads]
        all_reduce_gradients(grads, bucket_bytes=40)  # 10 floats: four buckets
        torch.save({"before": before, "after": grads}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.ddp
def test_all_reduce_gradients_averages_in_buckets(tmp_path):
    """Under DDP the graph strategy averages the replayed gradients itself (DDP's reducer
    never sees a replay): bucketed, every rank ends with the mean of the ranks' values."""
    import torch.multiprocessing as mp

    out = str(tmp_path / "grads")
    mp.spawn(_all_reduce_worker, args=(2, str(tmp_path / "init"), out), nprocs=2, join=True)
    results = [torch.load(f"{out}.{r}") for r in range(2)]
    for i in range(4):
        mean = (results[0]["before"][i] + results[1]["before"][i]) / 2
        for r in range(2):
            assert torch.equal(results[r]["after"][i], mean), (i, r)


def _ddp_graph_worker(rank: int, world: int, init_file: str, out: str, graphed: bool) -> None:
    """One of two processes sharing one CUDA device (gloo): the graph strategy's steps
    (replays, then all_reduce_gradients) or eager steps with every gradient averaged
    across the processes, over the same batches."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        module = make_module(cls_pretrain_epochs=0).cuda()
        params = list(module.parameters())
        opt = torch.optim.Adam(params, lr=1e-2)
        batches = [b.to("cuda") for b in _batches()[rank::2] * 3]
        if graphed:
            from salad_lightning.training.graphs import all_reduce_gradients

            body = graph_body(module)
            graphs = StepGraphs(params, body, warmup_steps=1, time_bucket=32)
            for batch in batches:
                graphs.step(batch, graphs.key(batch, False))
                all_reduce_gradients(graphs.grads)
                opt.step()
            assert graphs.replays == len(batches) - 1
        else:  # eager steps, each gradient averaged on its own: the definition DDP follows
            for batch in batches:
                opt.zero_grad()
                logs = module.training_step_strategy.eager_logs(module, batch, False)
                logs["train/loss"].backward()
                for p in params:
                    dist.all_reduce(p.grad)
                    p.grad /= world
                opt.step()
        torch.save({k: v.cpu() for k, v in module.state_dict().items()}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@cuda
@pytest.mark.ddp
def test_graphs_under_ddp_train_like_eager_ddp_on_the_device(tmp_path):
    """Two gloo processes on one CUDA device: replayed graphs plus the bucketed average end
    with the weights of eager steps whose gradients are averaged one by one."""
    import torch.multiprocessing as mp

    states = {}
    for graphed in (True, False):
        out = str(tmp_path / f"w{graphed}")
        init = str(tmp_path / f"init{graphed}")
        mp.spawn(_ddp_graph_worker, args=(2, init, out, graphed), nprocs=2, join=True)
        states[graphed] = [torch.load(f"{out}.{r}") for r in range(2)]
    for name, ref in states[False][0].items():
        for r in range(2):
            torch.testing.assert_close(states[True][r][name], ref, rtol=1e-5, atol=1e-6, msg=name)
            assert torch.equal(states[False][r][name], ref), name  # ranks agree


@pytest.mark.parametrize(
    ("device", "precision", "pruning", "sync"),
    [
        ("cpu", "32-true", "salad", True),  # the graph's body, eagerly: what the CPU tests check
        ("cuda", "16-mixed", "salad", False),  # Lightning's backward: the loss is scaled
        ("cuda", "32-true", "frozen", False),  # no graphs: DDP's own reducer
    ],
)
def test_under_ddp_the_strategy_averages_gradients_only_in_the_graphs_place(
    device, precision, pruning, sync
):
    from types import SimpleNamespace

    module = make_module(pruning=pruning, cuda_graph=True)
    trainer = SimpleNamespace(world_size=2, precision=precision)
    fake = SimpleNamespace(trainer=trainer, device=torch.device(device))
    step = module.training_step_strategy
    if pruning == "frozen":
        step.frozen = object()  # only its presence matters before training
    with pytest.warns(UserWarning, match="every training step runs eagerly"):
        step.on_train_start(fake)
    assert step.graphs is None
    assert step.sync_gradients is sync
