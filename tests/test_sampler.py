"""The length-bucketing batch sampler: padding, determinism, DDP shares."""

from __future__ import annotations

import numpy as np
import pytest

from salad_lightning.data.sampler import BucketBatchSampler, padding_ratio


def _lengths(n=1000, seed=0):
    # long-tailed like THUMOS14 video lengths (in clip steps)
    return np.random.default_rng(seed).lognormal(mean=7.0, sigma=0.8, size=n).astype(int) + 1


def test_bucketing_cuts_padding():
    lengths = _lengths()
    plain = BucketBatchSampler(lengths, 8, bucket=False, seed=1)
    bucketed = BucketBatchSampler(lengths, 8, bucket=True, seed=1)
    p_plain = padding_ratio(list(plain), lengths)
    p_bucket = padding_ratio(list(bucketed), lengths)
    assert p_plain > 0.4  # random batches of a long-tailed distribution waste a lot
    assert p_bucket < 0.1 and p_bucket < p_plain / 4


def test_padding_ratio_by_hand():
    # batch [0, 1]: lengths 2 and 4 -> 2 padded steps of 8; batch [2]: none
    assert padding_ratio([[0, 1], [2]], [2, 4, 5]) == pytest.approx(2 / 13)


def test_every_index_once_per_epoch_and_batch_sizes():
    lengths = _lengths(103)
    s = BucketBatchSampler(lengths, 8)
    batches = list(s)
    assert len(batches) == len(s) == 13
    assert sorted(i for b in batches for i in b) == list(range(103))
    assert sorted(len(b) for b in batches) == [7] + [8] * 12
    s = BucketBatchSampler(lengths, 8, drop_last=True)
    assert len(list(s)) == len(s) == 12 and all(len(b) == 8 for b in s)


def test_deterministic_by_seed_and_epoch():
    lengths = _lengths(200)
    a, b = BucketBatchSampler(lengths, 4, seed=3), BucketBatchSampler(lengths, 4, seed=3)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(BucketBatchSampler(lengths, 4, seed=4)) != first
    # Lightning calls set_epoch on batch_sampler.sampler
    assert a.sampler is a


def test_eval_order_is_fixed_longest_first():
    lengths = [5, 9, 1, 7, 3]
    s = BucketBatchSampler(lengths, 2, shuffle=False)
    assert list(s) == [[1, 3], [0, 4], [2]]
    s.set_epoch(5)
    assert list(s) == [[1, 3], [0, 4], [2]]
    assert list(BucketBatchSampler(lengths, 2, shuffle=False, bucket=False)) == [
        [0, 1],
        [2, 3],
        [4],
    ]


@pytest.mark.parametrize("n", [100, 101, 103, 97, 9])
@pytest.mark.parametrize("shuffle", [True, False])
def test_ranks_get_disjoint_equal_shares(n, shuffle):
    lengths = _lengths(n)
    world = 4
    shares = [
        list(BucketBatchSampler(lengths, 4, shuffle=shuffle, num_replicas=world, rank=r, seed=7))
        for r in range(world)
    ]
    counts = {len(s) for s in shares}
    assert counts == {len(BucketBatchSampler(lengths, 4, num_replicas=world, rank=0))}
    assert len(counts) == 1  # DDP steps in lock-step
    seen = [i for s in shares for b in s for i in b]
    assert sorted(seen) == list(range(n))  # disjoint, complete, no duplicates
    assert all(1 <= len(b) <= 4 for s in shares for b in s)


def test_ranks_with_drop_last_are_equal_and_disjoint():
    lengths = _lengths(103)
    shares = [
        list(BucketBatchSampler(lengths, 4, drop_last=True, num_replicas=3, rank=r))
        for r in range(3)
    ]
    assert {len(s) for s in shares} == {8}  # 25 full batches -> 24 shared by 3 ranks
    seen = [i for s in shares for b in s for i in b]
    assert len(seen) == len(set(seen)) == 96


def test_bucketed_ranks_still_cut_padding():
    lengths = _lengths(2000)
    for r in range(2):
        kw = dict(num_replicas=2, rank=r, seed=0)
        plain = list(BucketBatchSampler(lengths, 8, bucket=False, **kw))
        bucketed = list(BucketBatchSampler(lengths, 8, **kw))
        assert padding_ratio(bucketed, lengths) < padding_ratio(plain, lengths) / 4


def test_argument_errors():
    with pytest.raises(ValueError, match="3 samples cannot give each of 4 ranks a batch"):
        BucketBatchSampler([1, 2, 3], 1, num_replicas=4, rank=0)
    with pytest.raises(ValueError, match=r"rank must be in \[0, 2\), found 2"):
        BucketBatchSampler([1, 2, 3], 1, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        BucketBatchSampler([1], 0)
