"""pgcn/loss.py: hand-computed values on tiny tensors, and P-GCN's loops on random ones."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from _literal_pgcn import literal_completeness_loss, literal_regression_loss
from salad_lightning.pgcn.loss import (
    activity_loss,
    completeness_loss,
    pgcn_loss,
    regression_loss,
)

FG, INC, BG = 0, 1, 2


def test_activity_loss_by_hand():
    # K = 2. A foreground sample of class 1 with logits (0, 0, 0): -log(1/3) = log 3.
    # An incomplete sample: left out. A background sample with logits (log 2, 0, 0):
    # softmax column 0 = 2 / 4, -log(1/2) = log 2. Mean over 2: log(6) / 2.
    logits = torch.tensor([[0.0, 0.0, 0.0], [5.0, -5.0, 9.0], [math.log(2.0), 0.0, 0.0]])
    loss = activity_loss(logits, torch.tensor([1, 2, 0]), torch.tensor([FG, INC, BG]))
    assert loss.item() == pytest.approx(math.log(6.0) / 2, rel=1e-6)


def _completeness_case():
    # B = 2 videos x 8 slots, K = 2; every sample's label is 1 (class column 0) except
    # where noted; the logit at the label is what matters.
    z = torch.zeros(2, 8, 2)
    labels = torch.ones(2, 8, dtype=torch.long)
    # video 0: positive z = 0.25 -> hinge 1 - 0.25 = 0.75
    #          negatives z = -2, 0.5, -1, 0, 1.5, -0.5 -> 1 + z clipped: 0, 1.5, 0, 1, 2.5, 0.5
    #          kept: max(int(6 x 0.17), 1) = 1, the largest: 2.5
    z[0, 0, 0] = 0.25
    z[0, 1:7, 0] = torch.tensor([-2.0, 0.5, -1.0, 0.0, 1.5, -0.5])
    # video 1: positive of class 2 with z = 2 -> 0; negatives 0.2, 0.1, -3 x 4 -> kept 1.2
    labels[1, 0] = 2
    z[1, 0, 1] = 2.0
    z[1, 0, 0] = -9.0  # another class's logit: not read
    z[1, 1:7, 0] = torch.tensor([0.2, 0.1, -3.0, -3.0, -3.0, -3.0])
    z[:, 7] = 50.0  # the background slot: not read
    # sum 0.75 + 2.5 + 0 + 1.2 = 4.45; count 2 x 1 + max(int(2 x 6 x 0.17), 1) = 2 + 2 = 4
    return z.requires_grad_(), labels, 4.45 / 4


def test_completeness_loss_and_gradient_by_hand():
    z, labels, expected = _completeness_case()
    loss = completeness_loss(z, labels)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    # d/dz of the kept hinges over the count 4: -1/4 at video 0's positive, +1/4 at its
    # hardest negative (slot 5) and at video 1's (slot 1); 0 elsewhere (video 1's
    # positive has a zero hinge)
    expected_grad = torch.zeros(2, 8, 2)
    expected_grad[0, 0, 0] = -0.25
    expected_grad[0, 5, 0] = 0.25
    expected_grad[1, 1, 0] = 0.25
    torch.testing.assert_close(z.grad, expected_grad)


def test_regression_loss_by_hand():
    # foreground a: class 2 -> values (0.5, -2) against (0, 0): smooth L1 0.5 x 0.25 = 0.125
    #   and |-2| - 0.5 = 1.5; foreground b: class 1 -> (1, 0.2) against (0.5, 0.2):
    #   0.125 and 0. Sum 1.75 over 4 values = 0.4375, x 2 = 0.875. The incomplete sample
    #   (huge values) is left out.
    reg = torch.zeros(3, 2, 2)
    reg[0, 1] = torch.tensor([0.5, -2.0])
    reg[0, 0] = torch.tensor([40.0, 40.0])  # another class: not read
    reg[1, 0] = torch.tensor([1.0, 0.2])
    reg[2] = 100.0
    targets = torch.tensor([[0.0, 0.0], [0.5, 0.2], [0.0, 0.0]])
    loss = regression_loss(reg, torch.tensor([2, 1, 1]), targets, torch.tensor([FG, FG, INC]))
    assert loss.item() == pytest.approx(0.875, rel=1e-6)


def test_total_weights_the_terms():
    z, labels, comp = _completeness_case()
    kinds = torch.tensor([[FG] + [INC] * 6 + [BG]] * 2)
    act = torch.zeros(2, 8, 3)  # every used sample: log 3
    labels = labels.clone()
    labels[:, 7] = 0
    reg = torch.zeros(2, 8, 2, 2)
    targets = torch.zeros(2, 8, 2)
    targets[:, 0] = torch.tensor([0.5, 0.0])  # 0.125 per foreground: 2 x 0.25 / 4 = 0.125
    out = pgcn_loss(act, z, reg, labels, kinds, targets)
    assert out.activity.item() == pytest.approx(math.log(3.0), rel=1e-6)
    assert out.completeness.item() == pytest.approx(comp, rel=1e-6)
    assert out.regression.item() == pytest.approx(0.125, rel=1e-6)
    expected = math.log(3.0) + 0.5 * comp + 0.5 * 0.125
    assert out.total.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("b", [1, 3, 32, 50])
def test_against_p_gcn_s_loops(b):
    # B = 50: P-GCN's count max(int(50 x 6 x 0.17), 1) = 51 differs from the 50 kept
    g = torch.Generator().manual_seed(b)
    k = 4
    comp = torch.randn(b, 8, k, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(1, k + 1, (b, 8), generator=g)
    ours = completeness_loss(comp, labels)
    flat = comp[:, :7].reshape(-1, k)
    assert ours.item() == pytest.approx(
        literal_completeness_loss(flat, labels[:, :7].reshape(-1)), rel=1e-12
    )

    reg = torch.randn(b, 8, k, 2, generator=g, dtype=torch.float64) * 2
    targets = torch.randn(b, 8, 2, generator=g, dtype=torch.float64)
    kinds = torch.randint(0, 3, (b, 8), generator=g)
    kinds[:, 0] = FG
    fg = kinds.flatten() == FG
    expected = literal_regression_loss(
        reg.reshape(-1, k, 2)[fg], labels.flatten()[fg], targets.reshape(-1, 2)[fg]
    )
    torch.testing.assert_close(regression_loss(reg, labels, targets, kinds), expected)

    act = torch.randn(b, 8, k + 1, generator=g, dtype=torch.float64)
    used = (kinds.flatten() == FG) | (kinds.flatten() == BG)
    act_labels = torch.where(kinds == BG, 0, labels)
    expected = F.cross_entropy(act.reshape(-1, k + 1)[used], act_labels.flatten()[used])
    torch.testing.assert_close(activity_loss(act, act_labels, kinds), expected)
