"""PGCNNet (batched, centre rows only) against P-GCN's block-diagonal forward on the same weights."""

from __future__ import annotations

import math

import pytest
import torch

from _literal_pgcn import literal_forward
from salad_lightning.pgcn.net import PGCNNet


def _inputs(n: int, da: int, dc: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    act = torch.randn(n, 21, da, generator=g, dtype=torch.float64)
    comp = torch.randn(n, 21, dc, generator=g, dtype=torch.float64)
    act[0, 5] = act[0, 0]  # repeated nodes, as sampling gives them
    comp[1, 2] = -comp[1, 0]  # a negative similarity, clipped
    return act, comp


def _net(da: int, dc: int, k: int, seed: int = 1) -> PGCNNet:
    torch.manual_seed(seed)
    net = PGCNNet(da, dc, k, hidden=7).double()
    # heads at P-GCN's std 0.001 make every output tiny; larger weights test the sums
    for fc in (net.activity_fc, net.completeness_fc, net.regressor_fc):
        torch.nn.init.normal_(fc.weight, 0.0, 0.3)
        torch.nn.init.normal_(fc.bias, 0.0, 0.3)
    return net.eval()


def test_batched_forward_equals_the_block_diagonal_transcription():
    act, comp = _inputs(4, 6, 18)
    net = _net(6, 18, 3)
    with torch.no_grad():
        ours = net(act, comp)
        lit_act, lit_comp, lit_reg = literal_forward(net, act, comp)
    assert ours.activity_logits.shape == (4, 4)
    assert ours.completeness_logits.shape == (4, 3)
    assert ours.regression.shape == (4, 3, 2)
    torch.testing.assert_close(ours.activity_logits, lit_act, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours.completeness_logits, lit_comp, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours.regression, lit_reg, rtol=1e-10, atol=1e-12)


def test_the_leaves_reach_the_centre_only_through_their_parents():
    # a leaf (node 20, a child of node 4) reaches the centre through node 4's row of the
    # first convolution, which the batched forward keeps: moving it changes the output,
    # and the transcription still agrees
    act, comp = _inputs(2, 5, 9, seed=3)
    act = act.abs() + 0.1  # positive similarities: no edge is clipped away
    net = _net(5, 9, 2)
    with torch.no_grad():
        base = net(act, comp).activity_logits
        moved = act.clone()
        moved[:, 20] = 2 * act[:, 4]  # similarity 1 with its parent, node 4
        assert not torch.allclose(net(moved, comp).activity_logits, base)
        torch.testing.assert_close(
            net(moved, comp).activity_logits, literal_forward(net, moved, comp)[0]
        )


def test_initialisation_is_p_gcn_s():
    torch.manual_seed(0)
    net = PGCNNet(256, 768, 20)
    for fc in (net.activity_fc, net.completeness_fc, net.regressor_fc):
        assert fc.bias.abs().max() == 0
        assert 0.0008 < fc.weight.std().item() < 0.0012  # normal(0, 0.001)
    for gcn in (net.activity_gcn, net.completeness_gcn):
        for gc in (gcn.gc1, gcn.gc2):
            bound = 1 / math.sqrt(gc.weight.shape[1])
            assert gc.weight.abs().max() <= bound and gc.bias.abs().max() <= bound
            assert gc.weight.abs().max() > 0.9 * bound  # uniform over the whole range
    assert net.activity_fc.in_features == 512 and net.completeness_fc.in_features == 1536
    assert net.activity_gcn.gc1.weight.shape == (256, 512)
    assert net.activity_gcn.gc2.weight.shape == (512, 256)


def test_param_groups_double_the_biases_learning_rate_without_decay():
    net = PGCNNet(4, 12, 2)
    groups = net.param_groups(lr=0.01, weight_decay=5e-4)
    weights, biases = groups
    assert (weights["lr"], weights["weight_decay"]) == (0.01, 5e-4)
    assert (biases["lr"], biases["weight_decay"]) == (0.02, 0.0)
    assert all(p.dim() == 1 for p in biases["params"]) and len(biases["params"]) == 7
    assert all(p.dim() == 2 for p in weights["params"]) and len(weights["params"]) == 7
    assert len(weights["params"]) + len(biases["params"]) == len(list(net.parameters()))
    torch.optim.SGD(groups, lr=0.01, momentum=0.9)  # accepted as they are


def test_dropout_only_in_training_and_shapes_checked():
    act, comp = (x.float() for x in _inputs(3, 4, 12))
    net = PGCNNet(4, 12, 2)
    net.eval()
    with torch.no_grad():
        first = net(act, comp)
        assert torch.equal(first.activity_logits, net(act, comp).activity_logits)
        net.train()
        torch.manual_seed(0)
        dropped = net(act, comp)
    assert not torch.equal(first.completeness_logits, dropped.completeness_logits)
    with pytest.raises(ValueError, match=r"\(N, 21, Da\)"):
        net(act[:, :20], comp[:, :20])
