"""A length-bucketing batch sampler that shares videos between DDP ranks itself.

Padding is wasted work: a batch costs its longest sequence times its size. Sorting
every video by length would make each epoch's batches the same, so the sampler
shuffles, cuts the shuffled list into mega-buckets of ``bucket_batches`` batches,
sorts each mega-bucket by length, cuts it into batches and shuffles the batches.

Under DDP each rank takes every ``num_replicas``-th batch of the same global list, so
the ranks' videos are disjoint. Every rank gets the same number of batches (DDP
steps in lock-step) without repeating a video: when the batch count does not divide
by the number of ranks, the largest batches are halved until it does. Nothing is
padded with duplicates, so evaluation sees every video exactly once.

Lightning: build the ``Trainer`` with ``use_distributed_sampler=False`` (Lightning
cannot inject its own sampler into this one and says so when it tries). Lightning
calls ``set_epoch`` on ``batch_sampler.sampler``, which is why :attr:`sampler` is
this object.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler


def _dist_defaults(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    initialised = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if initialised else 1
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank must be in [0, {num_replicas}), found {rank}")
    return num_replicas, rank


class BucketBatchSampler(Sampler[list[int]]):
    """Yields lists of dataset indices; one rank's share of the epoch's batches.

    Args:
        lengths: sequence length of each sample (what padding is measured in).
        batch_size: samples per batch (a batch halved to balance ranks is smaller).
        shuffle: new order every epoch (training); otherwise longest first, fixed.
        bucket: sort by length within mega-buckets (False: plain random batches).
        bucket_batches: mega-bucket size, in batches.
        drop_last: drop the last incomplete batch, and the batches beyond the
            largest multiple of ``num_replicas``, instead of halving batches.
        num_replicas, rank: DDP world; default from ``torch.distributed`` when it is
            initialised, else a single process.
        seed: the order is a function of ``seed`` and the epoch (``set_epoch``).
        with_epoch: yield ``(index, epoch)`` pairs, so that the dataset can draw its
            random crop from ``(seed, epoch, index)`` (resume-exact training crops).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        shuffle: bool = True,
        bucket: bool = True,
        bucket_batches: int = 50,
        drop_last: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int = 0,
        with_epoch: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, found {batch_size}")
        if bucket_batches < 1:
            raise ValueError(f"bucket_batches must be >= 1, found {bucket_batches}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        # Not named `batch_size` / `drop_last` on purpose: Lightning would otherwise try
        # to rebuild this class with its own sampler and fail obscurely.
        self._bs, self._drop = int(batch_size), bool(drop_last)
        self.shuffle, self.bucket, self.bucket_batches = shuffle, bucket, bucket_batches
        self.num_replicas, self.rank = _dist_defaults(num_replicas, rank)
        self.seed, self.epoch = int(seed), 0
        self.with_epoch = bool(with_epoch)
        n, r = len(self.lengths), self.num_replicas
        if self._target(n) == 0 or self._target(n) > n:  # no batch / batches of size 0
            raise ValueError(
                f"{n} samples cannot give each of {r} ranks a batch "
                f"(batch_size {batch_size}, drop_last {drop_last})"
            )

    @property
    def sampler(self) -> BucketBatchSampler:
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _num_global_batches(self) -> int:
        n = len(self.lengths)
        return n // self._bs if self._drop else math.ceil(n / self._bs)

    def _target(self, n: int) -> int:
        r = self.num_replicas
        nb = self._num_global_batches()
        return (nb // r) * r if self._drop else math.ceil(nb / r) * r

    def __len__(self) -> int:
        return self._target(len(self.lengths)) // self.num_replicas

    def global_batches(self) -> list[list[int]]:
        """This epoch's batches for all ranks; rank ``k`` gets ``[k::num_replicas]``."""
        n, bs = len(self.lengths), self._bs
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.shuffle:
            order = rng.permutation(n)
            if self.bucket:
                mega = bs * self.bucket_batches
                order = np.concatenate(
                    [
                        chunk[np.argsort(-self.lengths[chunk], kind="stable")]
                        for chunk in np.split(order, range(mega, n, mega))
                    ]
                )
        else:
            order = np.arange(n)
            if self.bucket:
                order = np.argsort(-self.lengths, kind="stable")
        batches = [order[i : i + bs].tolist() for i in range(0, n, bs)]
        if self._drop and batches and len(batches[-1]) < bs:
            batches.pop()
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        target = self._target(n)
        if self._drop:
            return batches[:target]
        while len(batches) < target:  # halve the largest batch (the first one on ties)
            j = max(range(len(batches)), key=lambda k: len(batches[k]))
            half = (len(batches[j]) + 1) // 2
            batches[j : j + 1] = [batches[j][:half], batches[j][half:]]
        return batches

    def __iter__(self) -> Iterator[list]:
        batches = self.global_batches()[self.rank :: self.num_replicas]
        if self.with_epoch:  # (index, epoch): the dataset seeds its random crop with it
            batches = [[(i, self.epoch) for i in b] for b in batches]
        yield from batches


def padding_ratio(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> float:
    """Share of padded steps: 1 - sum(lengths) / sum(batch size * longest in batch)."""
    lengths = np.asarray(lengths)
    used = sum(int(lengths[b].sum()) for b in batches)
    padded = sum(len(b) * int(lengths[b].max()) for b in batches)
    return 1.0 - used / padded if padded else 0.0
