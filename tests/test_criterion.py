"""SaladCriterion: values against plain-loop computations, gradients, edge cases."""

from __future__ import annotations

import math

import pytest
import torch

from _literal_algorithm1 import literal_match, literal_tiou
from salad_lightning.losses import SaladCriterion
from salad_lightning.losses.criterion import log_one_minus_softmax

K = 3  # classes; the network has K + 1 columns


def small_batch(seed: int = 0, dtype: torch.dtype = torch.float64) -> dict:
    """B = 3: a normal video, one with overlapping and identical gts, one with no gt and padding."""
    g = torch.Generator().manual_seed(seed)
    B, T = 3, 10
    steps = torch.arange(T, dtype=dtype).view(1, T)
    a = torch.rand(B, T, generator=g, dtype=dtype) * 3
    b = torch.rand(B, T, generator=g, dtype=dtype) * 3
    segments = torch.stack([steps - a, steps + b], dim=-1)
    gt_segments = torch.tensor(
        [
            [[1.0, 4.0], [6.0, 8.5], [0.0, 0.0]],
            [[2.0, 7.0], [2.0, 7.0], [5.0, 9.0]],  # identical segment, two labels; overlap
            [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]],
        ],
        dtype=dtype,
    )
    return dict(
        segments=segments,
        score_logits=torch.randn(B, T, generator=g, dtype=dtype) * 2,
        cls_logits=torch.randn(B, T, K + 1, generator=g, dtype=dtype) * 2,
        gt_segments=gt_segments,
        gt_labels=torch.tensor([[0, 2, 0], [1, 2, 0], [0, 0, 0]]),
        gt_mask=torch.tensor([[True, True, False], [True, True, True], [False, False, False]]),
        frame_mask=torch.tensor([[True] * 10, [True] * 10, [True] * 6 + [False] * 4]),
    )


def literal_loss(batch: dict, *, lambda1=1.0, lambda2=0.1, mu=0.5, cls_loss="bce") -> dict:
    """Eq. (2)-(4) with plain loops and math.* per step, summed per video, averaged over B."""
    seg, sl, cl = (
        batch["segments"].tolist(),
        batch["score_logits"].tolist(),
        batch["cls_logits"].tolist(),
    )
    gts, labels = batch["gt_segments"].tolist(), batch["gt_labels"].tolist()
    gm, fm = batch["gt_mask"].tolist(), batch["frame_mask"].tolist()
    scores = torch.sigmoid(batch["score_logits"])
    alpha, y = literal_match(
        batch["segments"], scores, batch["gt_segments"], batch["gt_mask"], batch["frame_mask"], mu
    )
    B, T, N = len(seg), len(seg[0]), len(gts[0])
    sa = reg = cls = 0.0
    n_valid = n_alpha = n_cls = 0
    for b in range(B):
        for t in range(T):
            if not fm[b][t]:
                continue
            n_valid += 1
            p = 1 / (1 + math.exp(-sl[b][t]))
            sa += -(math.log(p) if y[b][t] else math.log(1 - p))
            for n in range(N):
                if alpha[b][t][n]:
                    n_alpha += 1
                    reg += 1 - literal_tiou(tuple(seg[b][t]), tuple(gts[b][n]))
            cols = {
                labels[b][n] + 1 for n in range(N) if gm[b][n] and gts[b][n][0] <= t <= gts[b][n][1]
            }
            z = cl[b][t]
            denom = sum(math.exp(v) for v in z)
            probs = [math.exp(v) / denom for v in z]
            if cls_loss == "bce":
                if cols:
                    n_cls += 1
                    for k in range(K + 1):
                        cls += -(math.log(probs[k]) if k in cols else math.log(1 - probs[k]))
            else:
                n_cls += 1
                target = {k: 1 / len(cols) for k in cols} if cols else {0: 1.0}
                cls += -sum(w * math.log(probs[k]) for k, w in target.items())
    return dict(
        sa=sa,
        reg=lambda1 * reg,
        cls=cls,
        n_valid=n_valid,
        n_alpha=n_alpha,
        n_cls=n_cls,
        B=B,
        y=y,
        alpha=alpha,
    )


@pytest.mark.parametrize("cls_loss", ["bce", "ce"])
def test_values_equal_plain_loop_computation(cls_loss):
    batch = small_batch(1)
    ref = literal_loss(batch, lambda1=2.0, lambda2=0.3, mu=0.4, cls_loss=cls_loss)
    assert ref["n_alpha"] > 0 and ref["n_cls"] > 0 and any(map(any, ref["y"]))  # non-trivial case
    out = SaladCriterion(lambda1=2.0, lambda2=0.3, mu=0.4, cls_loss=cls_loss)(**batch)
    B = ref["B"]
    assert out.loss_sa.item() == pytest.approx(ref["sa"] / B, rel=1e-12)
    assert out.loss_reg.item() == pytest.approx(ref["reg"] / B, rel=1e-12)
    assert out.loss_cls.item() == pytest.approx(ref["cls"] / B, rel=1e-12)
    expected_total = (ref["sa"] + ref["reg"] + 0.3 * ref["cls"]) / B
    assert out.total.item() == pytest.approx(expected_total, rel=1e-12)
    assert out.match.y.tolist() == ref["y"] and out.match.alpha.tolist() == ref["alpha"]

    mean = SaladCriterion(lambda1=2.0, lambda2=0.3, mu=0.4, cls_loss=cls_loss, reduction="mean")(
        **batch
    )
    assert mean.loss_sa.item() == pytest.approx(ref["sa"] / ref["n_valid"], rel=1e-12)
    assert mean.loss_reg.item() == pytest.approx(ref["reg"] / ref["n_alpha"], rel=1e-12)
    assert mean.loss_cls.item() == pytest.approx(ref["cls"] / ref["n_cls"], rel=1e-12)
    # mean * count == sum * B, term by term
    assert mean.loss_sa.item() * ref["n_valid"] == pytest.approx(out.loss_sa.item() * B, rel=1e-12)
    assert mean.loss_reg.item() * ref["n_alpha"] == pytest.approx(
        out.loss_reg.item() * B, rel=1e-12
    )


def test_stats_values():
    # One video, T = 8, gt [2, 6]; same hand case as test_matching: step 3 wins, 4 competes,
    # steps 2, 5, 6 are pruned. Second gt [10, 11] holds no step.
    segs = torch.tensor([[[0, 1], [0, 2], [2, 3], [2, 5.5], [3.5, 5.5], [2, 6], [5, 7], [6, 8]]])
    p = torch.tensor([[0.99, 0.1, 0.2, 0.8, 0.9, 0.7, 0.3, 0.95]])
    out = SaladCriterion()(
        segs.double(),
        torch.logit(p.double()),
        torch.zeros(1, 8, K + 1, dtype=torch.float64),
        torch.tensor([[[2.0, 6.0], [10.0, 11.0]]], dtype=torch.float64),
        torch.tensor([[1, 0]]),
        torch.ones(1, 2, dtype=torch.bool),
        torch.ones(1, 8, dtype=torch.bool),
    )
    s = out.stats
    assert all(torch.is_tensor(v) and v.dim() == 0 for v in s.values())
    assert s["pruned_share"].item() == pytest.approx(3 / 5)
    assert s["gt_matched_share"].item() == pytest.approx(1 / 2)
    assert s["positives_per_video"].item() == pytest.approx(1.0)
    assert s["competitors_per_gt"].item() == pytest.approx(2 / 2)
    # L_r: steps 3 and 4 regress, 1 - 0.875 + 1 - 0.5
    assert out.loss_reg.item() == pytest.approx(0.625)
    # L_cls with uniform logits (p = 1/4 per column) on the 5 action steps:
    # one positive column -log(1/4), three negatives -log(3/4)
    assert out.loss_cls.item() == pytest.approx(5 * (math.log(4) + 3 * math.log(4 / 3)))


def test_cls_only():
    batch = small_batch(2)
    crit = SaladCriterion(lambda2=0.25)
    full, pre = crit(**batch), crit(**batch, cls_only=True)
    assert pre.loss_sa.item() == 0.0 and pre.loss_reg.item() == 0.0
    assert (
        pre.loss_cls.item() == pytest.approx(full.loss_cls.item(), rel=1e-12)
        and pre.loss_cls.item() > 0
    )
    assert pre.total.item() == pytest.approx(0.25 * full.loss_cls.item(), rel=1e-12)
    assert full.total.item() > pre.total.item()


class TinyNet(torch.nn.Module):
    """BiGRU + three linear heads, the shape of SaladNet (docs/method.md §2), tiny."""

    def __init__(self, c=6, h=5, k=K, max_offset=3.0):
        super().__init__()
        self.gru = torch.nn.GRU(c, h, batch_first=True, bidirectional=True)
        self.reg = torch.nn.Linear(2 * h, 2)
        self.sa = torch.nn.Linear(2 * h, 1)
        self.cls = torch.nn.Linear(2 * h, k + 1)
        self.max_offset = max_offset

    def forward(self, x):
        h, _ = self.gru(x)
        ab = torch.sigmoid(self.reg(h))
        t = torch.arange(x.shape[1], dtype=x.dtype).view(1, -1)
        segs = torch.stack([t - ab[..., 0] * self.max_offset, t + ab[..., 1] * self.max_offset], -1)
        return segs, self.sa(h).squeeze(-1), self.cls(h)


def _grads(net, loss):
    net.zero_grad()
    loss.backward(retain_graph=True)
    return {
        name: p.grad.abs().sum().item() for name, p in net.named_parameters() if p.grad is not None
    }


def test_backpropagates_into_every_head_and_the_gru():
    torch.manual_seed(0)
    batch = small_batch(3, torch.float32)
    net = TinyNet()
    x = torch.randn(3, 10, 6)
    segs, sl, cl = net(x)
    out = SaladCriterion()(
        segs, sl, cl, *(batch[k] for k in ("gt_segments", "gt_labels", "gt_mask", "frame_mask"))
    )
    assert out.match.alpha.any() and out.match.inside.any()
    g = _grads(net, out.total)
    for name in (
        "gru.weight_ih_l0",
        "gru.weight_ih_l0_reverse",
        "reg.weight",
        "sa.weight",
        "cls.weight",
    ):
        assert g[name] > 0, name
    # each term reaches its own head and not the others
    g_reg = _grads(net, out.loss_reg)
    assert (
        g_reg["reg.weight"] > 0
        and g_reg.get("sa.weight", 0) == 0
        and g_reg.get("cls.weight", 0) == 0
    )
    g_sa = _grads(net, out.loss_sa)
    assert g_sa["sa.weight"] > 0 and g_sa.get("reg.weight", 0) == 0
    g_cls = _grads(net, out.loss_cls)
    assert g_cls["cls.weight"] > 0 and g_cls.get("reg.weight", 0) == 0
    # the matching is constant
    assert not any(t.requires_grad for t in out.match)
    assert not any(v.requires_grad for v in out.stats.values())


def test_regression_gradient_matches_finite_differences():
    batch = small_batch(4)
    segs = batch.pop("segments").requires_grad_(True)
    crit = SaladCriterion(lambda1=1.5)
    out = crit(segs, **batch)
    (grad,) = torch.autograd.grad(out.loss_reg, segs)
    alpha = out.match.alpha
    eps = 1e-6
    checked = 0
    for b, t, i in [(0, 2, 0), (0, 3, 1), (1, 4, 0), (1, 6, 1)]:
        if not alpha[b, t].any():
            continue
        plus, minus = segs.detach().clone(), segs.detach().clone()
        plus[b, t, i] += eps
        minus[b, t, i] -= eps
        # alpha held fixed: recompute only the regression term with the same alpha
        gts = batch["gt_segments"][b].tolist()
        tiou_p = [literal_tiou(tuple(plus[b, t].tolist()), tuple(g)) for g in gts]
        tiou_m = [literal_tiou(tuple(minus[b, t].tolist()), tuple(g)) for g in gts]
        diff = sum(m - p for a, p, m in zip(alpha[b, t].tolist(), tiou_p, tiou_m) if a)
        fd = 1.5 * diff / (2 * eps) / 3  # lambda1 * d(sum alpha (1 - tIoU)) / B
        checked += 1
        assert grad[b, t, i].item() == pytest.approx(fd, rel=1e-6, abs=1e-9)
    assert checked >= 2


@pytest.mark.parametrize("cls_loss", ["bce", "ce"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_finite_on_edge_cases(cls_loss, reduction):
    crit = SaladCriterion(cls_loss=cls_loss, reduction=reduction)
    base = small_batch(5, torch.float32)
    cases = {"normal": base}
    cases["no_gt"] = {
        **base,
        "gt_segments": torch.zeros(3, 0, 2),
        "gt_labels": torch.zeros(3, 0, dtype=torch.long),
        "gt_mask": torch.zeros(3, 0, dtype=torch.bool),
    }
    cases["all_padding_gt"] = {**base, "gt_mask": torch.zeros(3, 3, dtype=torch.bool)}
    cases["padding_row"] = {
        **base,
        "frame_mask": base["frame_mask"] & torch.tensor([[True], [True], [False]]),
    }
    sat = torch.where(torch.rand(3, 10, K + 1) < 0.5, 1e4, -1e4)
    sat[..., 1] = 1e4  # ties at the top too
    cases["saturated"] = {
        **base,
        "score_logits": torch.where(torch.rand(3, 10) < 0.5, 1e4, -1e4),
        "cls_logits": sat,
    }
    for name, case in cases.items():
        case = {
            k: (
                v.clone().requires_grad_(True)
                if v.is_floating_point() and k != "gt_segments"
                else v
            )
            for k, v in case.items()
        }
        out = crit(**case)
        for term in (out.total, out.loss_sa, out.loss_reg, out.loss_cls, *out.stats.values()):
            assert torch.isfinite(term).all(), name
        out.total.backward()
        for k in ("segments", "score_logits", "cls_logits"):
            assert torch.isfinite(case[k].grad).all(), (name, k)
    # without any ground truth, nothing regresses and every step is a negative
    out = crit(**cases["no_gt"])
    assert out.loss_reg.item() == 0.0 and not out.match.y.any()
    assert out.loss_sa.item() > 0


def test_log_one_minus_softmax_is_exact():
    z = torch.randn(50, 5, dtype=torch.float64) * 3
    expected = torch.log(1 - torch.softmax(z, -1))
    assert torch.allclose(log_one_minus_softmax(z), expected, rtol=1e-10, atol=1e-12)
    # saturated: 1 - p_top = 2 e^0 / (e^1e4 + 2) -> log 2 - 1e4 (float32)
    z = torch.tensor([[1e4, 0.0, 0.0]])
    got = log_one_minus_softmax(z)[0, 0].item()
    assert got == pytest.approx(math.log(2) - 1e4, rel=1e-6)
    z.requires_grad_(True)
    log_one_minus_softmax(z).sum().backward()
    assert torch.isfinite(z.grad).all()


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="'sum', 'mean'"):
        SaladCriterion(reduction="avg")
    with pytest.raises(ValueError, match="'bce', 'ce'"):
        SaladCriterion(cls_loss="focal")
    with pytest.raises(ValueError, match="pruning"):
        SaladCriterion(pruning="all")
    batch = small_batch()
    batch["cls_logits"] = batch["cls_logits"][..., :1]
    with pytest.raises(ValueError, match="K >= 1"):
        SaladCriterion()(**batch)
