"""The training-step strategies (training/step.py): the split network (``encode`` then
``heads``) and the compiled heads + loss give what the plain composition gives."""

from __future__ import annotations

import pytest
import torch

from salad_lightning.data.batch import Batch
from salad_lightning.lit_module import SaladLitModule
from salad_lightning.losses.criterion import SaladCriterion
from salad_lightning.models.net import SaladNet
from salad_lightning.models.postprocess import offsets_to_segments
from salad_lightning.training.step import STAT_KEYS, CompiledStep, EagerStep

K, C = 5, 8


def make_module(compile: bool = False, seed: int = 0, **loss) -> SaladLitModule:
    torch.manual_seed(seed)
    net = SaladNet(C, K, hidden_size=8, reg_dims=(16, 8, 8), sa_dims=(16, 8, 8), cls_dims=(16, 8))
    return SaladLitModule(
        net,
        SaladCriterion(lambda1=1.0, lambda2=0.1, mu=0.5, **loss),
        lambda params: torch.optim.Adam(params),
        max_offset=12.0,
        compile=compile,
    )


def make_batch(b: int, t: int, n: int, seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(t // 2, t + 1, (b,), generator=g)
    lengths[0] = t
    ones = torch.ones(b, dtype=torch.float64)
    return Batch(
        features=torch.randn(b, t, C, generator=g),
        lengths=lengths,
        frame_mask=torch.arange(t) < lengths[:, None],
        gt_segments=torch.sort(torch.rand(b, n, 2, generator=g) * t, dim=-1).values,
        gt_labels=torch.randint(0, K, (b, n), generator=g),
        gt_mask=torch.rand(b, n, generator=g) < 0.8,
        scale=ones,
        offset=ones,
        duration=ones * t,
        meta=[{"video_id": f"v{i}"} for i in range(b)],
        lengths_host=lengths.clone(),
    )


def step_loss(module: SaladLitModule, batch: Batch, *, cls_only: bool = False):
    """The module's training-step strategy: logged values and every parameter's gradient."""
    module.net.zero_grad()
    logs = module.training_step_strategy.step(module, batch, cls_only)
    logs["train/loss"].backward()
    grads = [None if p.grad is None else p.grad.clone() for p in module.net.parameters()]
    return {k: v.detach() for k, v in logs.items()}, grads


def test_split_step_equals_network_then_criterion():
    """encode + heads + loss (the step's path) == forward + offsets_to_segments + criterion."""
    module = make_module()
    assert isinstance(module.training_step_strategy, EagerStep) and module.automatic_optimization
    batch = make_batch(3, 40, 4, seed=1)
    logs, grads = step_loss(module, batch)

    module.net.zero_grad()
    out = module.net(batch.features, batch.lengths)
    ref = module.criterion(
        offsets_to_segments(out.offsets, 12.0),
        out.score_logits,
        out.cls_logits,
        batch.gt_segments,
        batch.gt_labels,
        batch.gt_mask,
        batch.frame_mask,
    )
    ref.total.backward()
    assert set(logs) == {"train/loss", "train/loss_sa", "train/loss_reg", "train/loss_cls"} | {
        f"train/{k}" for k in STAT_KEYS
    }
    assert torch.equal(logs["train/loss"], ref.total.detach())
    assert torch.equal(logs["train/loss_reg"], ref.loss_reg.detach())
    for k in STAT_KEYS:
        assert torch.equal(logs[f"train/{k}"], ref.stats[k])
    for g, p in zip(grads, module.net.parameters()):
        assert torch.equal(g, p.grad)


def test_cls_pretraining_keeps_every_parameter_in_the_graph():
    module = make_module()
    logs, grads = step_loss(module, make_batch(2, 30, 3, seed=2), cls_only=True)
    assert float(logs["train/loss_sa"]) == 0.0 and float(logs["train/loss_reg"]) == 0.0
    assert torch.allclose(logs["train/loss"], 0.1 * logs["train/loss_cls"])
    # every parameter got a gradient (zero for the heads that sit out)
    assert all(g is not None for g in grads)
    reg_grads = [p.grad for p in module.net.reg_head.parameters()]
    assert all(torch.count_nonzero(g) == 0 for g in reg_grads)
    assert any(torch.count_nonzero(p.grad) > 0 for p in module.net.cls_head.parameters())


@pytest.mark.slow
def test_compiled_heads_and_loss_equal_eager():
    """`compile=True` (torch.compile of heads + matching + loss, dynamic shapes) gives the
    eager loss, logged values and gradients to float tolerance, on two batch shapes."""
    eager, compiled = make_module(), make_module(compile=True)
    assert isinstance(compiled.training_step_strategy, CompiledStep)
    for b, t, n, seed in ((4, 50, 3, 3), (3, 37, 5, 4)):
        batch = make_batch(b, t, n, seed)
        logs_e, grads_e = step_loss(eager, batch)
        logs_c, grads_c = step_loss(compiled, batch)
        for k in logs_e:
            torch.testing.assert_close(logs_c[k], logs_e[k], rtol=1e-5, atol=1e-5, msg=k)
        for ge, gc in zip(grads_e, grads_c):
            torch.testing.assert_close(gc, ge, rtol=1e-4, atol=1e-5)
    assert compiled.training_step_strategy.compiled is not None
    assert set(compiled.state_dict()) == set(eager.state_dict())  # checkpoints keep `net.*`
    copy = __import__("copy").deepcopy(compiled)  # a copy compiles its own
    assert copy.training_step_strategy.compiled is None


@pytest.mark.slow
def test_compiled_random_pruning_runs():
    """`pruning=random` under compile (dynamic shapes): the draw traces, and about half
    of the inside pairs regress. The compiled graph draws with Inductor's generator, so
    the values differ from eager's (docs/design.md)."""
    module = make_module(compile=True, pruning="random")
    torch.manual_seed(0)
    logs, grads = step_loss(module, make_batch(4, 80, 6, seed=5))
    assert torch.isfinite(logs["train/loss"])
    share = float(logs["train/pruned_share"])
    assert 0.15 < share < 0.65  # a step inside k gts is pruned with probability 2**-k
    assert all(torch.isfinite(g).all() for g in grads)
