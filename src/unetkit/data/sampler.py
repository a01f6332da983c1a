"""Which samples a training step sees, as a pure function of (seed, epoch, rank), so runs can stop and resume.

A training epoch is a permutation of the dataset drawn from (seed, epoch). With several processes the
permutation is padded to a multiple of the world size and dealt out round-robin, so rank r's k-th batch holds
the samples that batch k of a single process with the same global batch would hold. Each index comes with
its own augmentation seed drawn from (seed, epoch, index), so the random crop and deformation of a sample
do not depend on which worker process or rank loads it, nor on where a run was interrupted.
"""

from __future__ import annotations

import random
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import albumentations as A
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for one sample's augmentation, well mixed from its three coordinates."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


def epoch_order(size: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """The epoch's order of dataset indices (size,): a fixed permutation for (seed, epoch)."""
    if not shuffle:
        return list(range(size))
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(size, generator=generator).tolist()


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields (index, augmentation seed) for one rank's share of one epoch, from batch `start_batch` on.

    Example, 5 samples, 2 ranks, order [3, 0, 4, 1, 2]: padded to [3, 0, 4, 1, 2, 3]; rank 0 gets [3, 4, 2]
    and rank 1 gets [0, 1, 3]. With a per-rank batch of 1 the first global batch is {3, 0}, as a single
    process with batch 2 would see.
    """

    def __init__(self, size: int, seed: int, *, batch_size: int, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1) -> None:
        self.size, self.seed, self.batch_size, self.shuffle = size, seed, batch_size, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start_batch = 1, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch to draw, skipping the first `start_batch` batches (already trained before a resume)."""
        self.epoch, self.start_batch = epoch, start_batch

    def rank_indices(self) -> list[int]:
        order = epoch_order(self.size, self.seed, self.epoch, self.shuffle)
        padded = order + order[: (-len(order)) % self.world_size]  # equal shares, so every rank steps together
        return padded[self.rank :: self.world_size]

    def batches_per_epoch(self) -> int:
        return -(-len(self.rank_indices()) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self.rank_indices()[self.start_batch * self.batch_size :]:
            yield index, sample_seed(self.seed, self.epoch, index)

    def __len__(self) -> int:
        return max(len(self.rank_indices()) - self.start_batch * self.batch_size, 0)


def seed_pipeline(pipeline: A.BaseCompose, seed: int) -> None:
    """Seed every transform of an albumentations pipeline from `seed`, each with its own stream.

    `Compose.set_random_seed` hands the same seed to every child, which would make e.g. a horizontal and a
    vertical flip with p=0.5 always fire together; here child i gets a seed mixed from (seed, i).
    """
    pipeline.set_random_seed(seed)
    for i, transform in enumerate(pipeline.transforms):
        child = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        if isinstance(transform, A.BaseCompose):
            seed_pipeline(transform, child)
        else:
            transform.set_random_seed(child)


def worker_init(worker_id: int) -> None:
    """Data loader workers ignore Ctrl-C and SIGTERM: the main process finishes its step, saves, then stops them.

    Their global RNGs get distinct seeds from torch's per-worker seed; augmentation itself is seeded per sample.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


@contextmanager
def closing_workers(loader: DataLoader) -> Iterator[DataLoader]:
    """Stop `loader`'s persistent worker processes when the block ends, however it ends.

    Left to the garbage collector they live on while anything holds the run's traceback (a caught
    TrainingStopped does), and since they ignore SIGTERM, multiprocessing's terminate-at-exit cannot end them:
    the interpreter would wait for them forever. Workers still alive after torch's shutdown are killed.
    """
    try:
        yield loader
    finally:
        iterator = getattr(loader, "_iterator", None)  # set once a persistent-worker loader was iterated
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            loader._iterator = None
            try:
                iterator._shutdown_workers()
            finally:
                for worker in getattr(iterator, "_workers", []):
                    if worker.is_alive():
                        worker.kill()
                        worker.join()
