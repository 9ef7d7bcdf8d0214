"""SaladNet: architecture sizes (paper Table 1), padding isolation, context, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from salad_lightning.models.net import SaladNet, SaladOutput


def _linear_shapes(seq: nn.Sequential) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in seq if isinstance(m, nn.Linear)]


def _activations(seq: nn.Sequential) -> list[str]:
    return [type(m).__name__ for m in seq]


def test_default_architecture_matches_table1():
    net = SaladNet(input_dim=2048, num_classes=20)
    gru = net.encoder
    assert isinstance(gru, nn.GRU)
    assert gru.bidirectional and gru.num_layers == 1 and gru.batch_first
    assert gru.input_size == 2048 and gru.hidden_size == 1024
    assert _linear_shapes(net.reg_head) == [(2048, 2048), (2048, 1024), (1024, 1024), (1024, 2)]
    assert _linear_shapes(net.sa_head) == [(2048, 2048), (2048, 1024), (1024, 1024), (1024, 1)]
    assert _linear_shapes(net.cls_head) == [(2048, 2048), (2048, 1024), (1024, 21)]
    assert _activations(net.cls_head) == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert _activations(net.reg_head) == ["Linear", "ReLU"] * 3 + ["Linear"]


def test_parameter_count_by_formula():
    C, K, H = 16, 5, 1024
    net = SaladNet(input_dim=C, num_classes=K)
    # BiGRU: per direction 3 gates x (W_ih (H x C) + W_hh (H x H) + two biases of H).
    gru = 2 * 3 * (H * C + H * H + 2 * H)

    def lin(i, o):
        return i * o + o

    reg = lin(2 * H, 2048) + lin(2048, 1024) + lin(1024, 1024) + lin(1024, 2)
    sa = lin(2 * H, 2048) + lin(2048, 1024) + lin(1024, 1024) + lin(1024, 1)
    cls = lin(2 * H, 2048) + lin(2048, 1024) + lin(1024, K + 1)
    assert sum(p.numel() for p in net.parameters()) == gru + reg + sa + cls


def _small_net(encoder="gru", dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    net = SaladNet(
        input_dim=6,
        num_classes=3,
        hidden_size=5,
        reg_dims=(7, 4),
        sa_dims=(7,),
        cls_dims=(8,),
        temporal_encoder=encoder,
    )
    return net.to(dtype)


def test_output_shapes_and_ranges():
    net = _small_net()
    out = net(torch.randn(2, 9, 6, dtype=torch.float64))
    assert isinstance(out, SaladOutput)
    assert out.offsets.shape == (2, 9, 2)
    assert out.score_logits.shape == (2, 9)
    assert out.cls_logits.shape == (2, 9, 4)
    assert bool((out.offsets >= 0).all()) and bool((out.offsets <= 1).all())


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("encoder", ["gru", "none"])
def test_padding_does_not_leak(encoder, device):
    # float64 on the CPU for a tight tolerance; float32 (cuDNN) on the GPU.
    dtype = torch.float64 if device == "cpu" else torch.float32
    tol = dict(rtol=1e-10, atol=1e-12) if device == "cpu" else dict(rtol=1e-4, atol=1e-5)
    net = _small_net(encoder, dtype=dtype).to(device)
    lengths = [7, 3, 11, 5]
    T = max(lengths)
    videos = [torch.randn(n, 6, dtype=dtype, device=device) for n in lengths]
    batch = torch.full((len(videos), T, 6), 123.0, dtype=dtype, device=device)  # loud padding
    for b, v in enumerate(videos):
        batch[b, : len(v)] = v
    # Lengths on the device work too (moved to the CPU for packing).
    out = net(batch, torch.tensor(lengths, device=device))
    for b, v in enumerate(videos):
        alone = net(v[None])
        n = len(v)
        for got, ref in zip(out, alone):
            torch.testing.assert_close(got[b, :n], ref[0], **tol)
        for got in out:
            assert bool(torch.isfinite(got[b]).all())


def test_unpacked_path_equals_lengths_all_full():
    net = _small_net()
    x = torch.randn(3, 6, 6, dtype=torch.float64)
    a = net(x)
    b = net(x, torch.tensor([6, 6, 6]))
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, rtol=0, atol=0)


def test_gru_without_lengths_sees_padding():
    # Sanity check of the padding test itself: without packing, the backward
    # direction reads the padding and the outputs change.
    net = _small_net()
    v = torch.randn(4, 6, dtype=torch.float64)
    padded = torch.cat([v, torch.full((3, 6), 123.0, dtype=torch.float64)])[None]
    diff = (net(padded).cls_logits[0, :4] - net(v[None]).cls_logits[0]).abs().max()
    assert diff > 1e-6


def test_gradient_flows_to_every_parameter():
    net = _small_net(dtype=torch.float32)
    x = torch.randn(2, 8, 6, requires_grad=True)
    out = net(x, torch.tensor([8, 5]))
    loss = out.offsets.sum() + out.score_logits.sum() + out.cls_logits.pow(2).sum()
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert bool(torch.isfinite(p.grad).all()), name
        assert p.grad.abs().sum() > 0, name
    assert x.grad[1, 5:].abs().sum() == 0  # padded inputs do not influence anything
    assert x.grad[1, :5].abs().sum() > 0


@pytest.mark.parametrize("encoder, has_context", [("gru", True), ("none", False)])
def test_temporal_context(encoder, has_context):
    net = _small_net(encoder)
    x = torch.randn(1, 10, 6, dtype=torch.float64)
    y = x.clone()
    y[0, 0] += 1.0
    ox, oy = net(x), net(y)
    changed = any(bool((a[0, 5] - b[0, 5]).abs().max() > 1e-9) for a, b in zip(ox, oy))
    assert changed == has_context
    # Step 0 itself always changes.
    assert (ox.cls_logits[0, 0] - oy.cls_logits[0, 0]).abs().max() > 1e-9


def test_dropout_only_in_training():
    net = _small_net()
    net.dropout.p = 0.5
    x = torch.randn(1, 6, 6, dtype=torch.float64)
    net.eval()
    torch.testing.assert_close(net(x).cls_logits, net(x).cls_logits, rtol=0, atol=0)
    net.train()
    torch.manual_seed(1)
    a = net(x).cls_logits
    torch.manual_seed(2)
    b = net(x).cls_logits
    assert (a - b).abs().max() > 1e-9


def test_wrong_input_dim_message():
    net = _small_net()
    with pytest.raises(ValueError, match=r"features have 7 channels.*input_dim=6"):
        net(torch.randn(1, 4, 7, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(B, T, C\)"):
        net(torch.randn(4, 6, dtype=torch.float64))


def test_bad_lengths_and_arguments():
    net = _small_net()
    x = torch.randn(2, 4, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 4\]"):
        net(x, torch.tensor([5, 2]))
    with pytest.raises(ValueError, match="lengths must have shape"):
        net(x, torch.tensor([4, 2, 1]))
    with pytest.raises(ValueError, match="temporal_encoder"):
        SaladNet(input_dim=4, num_classes=2, hidden_size=3, temporal_encoder="lstm")
    with pytest.raises(ValueError, match="num_classes"):
        SaladNet(input_dim=4, num_classes=0, hidden_size=3)
