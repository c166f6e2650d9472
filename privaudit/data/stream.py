"""Streamed data: an image set decoded batch by batch by ``DataLoader`` worker processes, for sets
that do not fit the memory budget (or when ``--stream`` asks for it).

``open_pairs`` and ``open_inputs`` list a folder and check every image header first (``scan_pairs``,
``scan_inputs``: not an image, cannot be split, too small, mixed sizes... fail here, before any
training), then either decode it whole into an ``ImageSet`` (it fits ``Streaming``'s budget) or return
a ``StreamedSet`` that decodes on demand with the very same code (``images.decode_item``). Both give
``batches(batch_size)`` (consecutive, in order) and ``take(index_batches)`` (the batches a training
step draws), so the training loops, the attack and the KID features consume either, with the same
results: the same uint8 tensors, in the same batches, drawn from the same seeded generators. Content
hashes (``data_fingerprint``, ``pair_hashes``) are computed from the same bytes in the same order,
so they are identical too.

A file that fails only when its pixels are decoded (a truncated PNG) fails in a worker; the worker
hands the error back and the main process raises it as the same one-line ``DataError``.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from privaudit import defaults, errors
from privaudit.data.images import Decode, ImageSet, Item, Listing, ResizeLog, check_decoded, decode_item, resize_warning, scan_inputs, scan_pairs
from privaudit.errors import DataError, InputError, PrivauditError
from privaudit.limits import MAX_STREAM_WORKERS, check_at_most

GB = 1024**3
# Batches of the hashing passes (``fingerprint``, ``pair_hashes``): any size gives the same digests.
HASH_BATCH = 32


# ----------------------------------------------------------------------------------------------
# when to stream, and with how many workers


def machine_memory_bytes() -> int | None:
    """Physical memory, or the container's (cgroup) limit when that is lower; None when unknown."""
    total = None
    try:
        total = int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) > 0:
            limit = int(text)
            total = limit if total is None else min(total, limit)
            break
    return total if total and total > 0 else None


def default_budget_bytes() -> int:
    """``defaults.MEMORY_BUDGET_SHARE`` of the machine's memory, divided among the processes torchrun
    starts on this machine (``LOCAL_WORLD_SIZE``: each holds its own copy of the data);
    ``defaults.MEMORY_BUDGET_FALLBACK_GB`` when the memory cannot be read."""
    total = machine_memory_bytes()
    budget = int(total * defaults.MEMORY_BUDGET_SHARE) if total else int(defaults.MEMORY_BUDGET_FALLBACK_GB * GB)
    try:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local = 1
    return budget // local


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def resolve_workers(requested: int | None, count: int) -> int:
    """Decoding worker processes: ``requested``, or by default none for a set under
    ``defaults.STREAM_SMALL_SET`` items (starting workers would cost more than they save), else
    min(``defaults.STREAM_WORKERS``, CPUs - 1)."""
    if requested is not None:
        return requested
    if count < defaults.STREAM_SMALL_SET:
        return 0
    return max(0, min(defaults.STREAM_WORKERS, cpu_count() - 1))


@dataclass(frozen=True)
class Streaming:
    """When a data set is streamed from disk instead of decoded whole into memory.

    ``force``: always stream (``--stream``). ``memory_budget_gb``: stream a set whose decoded
    inputs and targets (N × (C_in + C_out) × size² bytes) exceed it (``--memory-budget``; None:
    ``default_budget_bytes``). ``workers``: decoding worker processes of a streamed set
    (``--workers``; None: ``resolve_workers``'s default)."""

    force: bool = False
    memory_budget_gb: float | None = None
    workers: int | None = None

    def validate(self) -> None:
        b = self.memory_budget_gb
        if b is not None and (isinstance(b, bool) or not b > 0 or b != b or b == float("inf")):
            raise InputError(f"--memory-budget must be a positive number of GB, not {b}")
        if self.workers is not None:
            if isinstance(self.workers, bool) or self.workers < 0:
                raise InputError(f"--workers must be 0 (decode in the main process) or more, not {self.workers}")
            check_at_most(self.workers, MAX_STREAM_WORKERS, "--workers", "each worker is a process holding a few decoded batches")

    def budget_bytes(self) -> int:
        return int(self.memory_budget_gb * GB) if self.memory_budget_gb is not None else default_budget_bytes()

    def streams(self, decoded_bytes: int) -> bool:
        """Whether a set of ``decoded_bytes`` is streamed."""
        return self.force or decoded_bytes > self.budget_bytes()


# ----------------------------------------------------------------------------------------------
# the streamed set


@dataclass(frozen=True)
class _Failed:
    """A worker's PrivauditError, handed back as data (a DataLoader re-raises a worker's exception
    with its traceback folded into the message, which would not be one line)."""

    kind: str
    message: str

    def raise_(self) -> None:
        cls = getattr(errors, self.kind, None)
        if not (isinstance(cls, type) and issubclass(cls, PrivauditError)):
            cls = DataError
        raise cls(self.message)


class _Decoder(torch.utils.data.Dataset):
    """Map-style dataset over a set's items: item i → (uint8 input, uint8 target), decoded by ``decode_item``."""

    def __init__(self, items: list[Item], dec: Decode, shape_x: tuple[int, ...], shape_y: tuple[int, ...] | None, want_x: bool, want_y: bool) -> None:
        self.items, self.dec, self.shape_x, self.shape_y = items, dec, shape_x, shape_y
        self.want_x, self.want_y = want_x, want_y and shape_y is not None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        item = self.items[i]
        try:
            x, y = decode_item(item, self.dec, ResizeLog(self.dec.size), want_x=self.want_x, want_y=self.want_y)
            if self.want_x:
                x = check_decoded(x, self.shape_x, item)
            if self.want_y:
                y = check_decoded(y, self.shape_y, item)  # type: ignore[arg-type]
        except PrivauditError as exc:
            return _Failed(type(exc).__name__, str(exc))
        return x, y


def _collate(batch: list[Any]) -> Any:
    for b in batch:
        if isinstance(b, _Failed):
            return b
    xs, ys = [b[0] for b in batch], [b[1] for b in batch]
    return [torch.stack(xs) if xs[0] is not None else None, torch.stack(ys) if ys[0] is not None else None]


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's seeded generator; numpy and random follow it.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def checked(batches: Any) -> Iterator[Any]:
    """The batches of a loader over a ``StreamedSet``'s dataset, raising a worker's error as itself."""
    for b in batches:
        if isinstance(b, _Failed):
            b.raise_()
        yield b


@dataclass
class StreamedSet:
    """An image set read from disk batch by batch (the ``ImageSet`` interface but ``inputs``/``targets``).

    Listed and header-checked (``Listing``); ``batches``/``take`` decode with ``workers`` processes
    (0: in the main process). ``fingerprint`` and ``pair_hashes`` are computed once, on demand, by
    decoding passes over the set, and are the ``ImageSet``'s to the byte."""

    items: list[Item]
    names: list[str]
    path: str
    layout: str
    decode: Decode
    size: int
    input_nc: int
    output_nc: int | None
    resized: dict[str, Any] | None
    workers: int = 0
    _inputs_sha: Any = field(default=None, repr=False)
    _pair_hashes: list[bytes] | None = field(default=None, repr=False)
    _fingerprint: str | None = field(default=None, repr=False)

    @classmethod
    def from_listing(cls, listing: Listing, *, workers: int | None = None) -> "StreamedSet":
        return cls(list(listing.items), list(listing.names), listing.path, listing.layout, listing.decode, listing.size, listing.input_nc,
                   listing.output_nc, listing.resized, resolve_workers(workers, len(listing)))

    def __len__(self) -> int:
        return len(self.items)

    @property
    def has_targets(self) -> bool:
        return self.output_nc is not None

    def decoded_bytes(self) -> int:
        return len(self.items) * (self.input_nc + (self.output_nc or 0)) * self.size * self.size

    def resize_warning(self, what: str) -> str | None:
        return resize_warning(self.resized, what=what, path=self.path, count=len(self))

    def subset(self, idx: list[int] | torch.Tensor) -> "StreamedSet":
        index = torch.as_tensor(idx, dtype=torch.long).tolist()
        return replace(self, items=[self.items[i] for i in index], names=[self.names[i] for i in index], _inputs_sha=None, _pair_hashes=None,
                       _fingerprint=None)

    def dataset(self, *, want_x: bool = True, want_y: bool = True) -> _Decoder:
        """The map-style dataset of this set: index i → (uint8 input, uint8 target)."""
        s = self.size
        return _Decoder(self.items, self.decode, (self.input_nc, s, s), (self.output_nc, s, s) if self.output_nc is not None else None, want_x, want_y)

    def loader_options(self, *, seed: int = 0) -> dict[str, Any]:
        """The ``DataLoader`` options of this set's batches (workers, collate, seeding)."""
        w = self.workers
        return dict(num_workers=w, collate_fn=_collate, generator=torch.Generator().manual_seed(int(seed)), worker_init_fn=_seed_worker if w else None,
                    prefetch_factor=defaults.STREAM_PREFETCH if w else None, persistent_workers=False)

    def take(self, index_batches: Sequence[torch.Tensor | Sequence[int]], *, seed: int = 0, want_x: bool = True,
             want_y: bool = True) -> Iterator[tuple[torch.Tensor | None, torch.Tensor | None]]:
        """(uint8 inputs, uint8 targets or None) of each batch of indices, in order, decoded by the
        workers ahead of use. ``seed`` seeds the workers (their torch, numpy and random generators);
        the main process's generators are not touched."""
        batches = [torch.as_tensor(b, dtype=torch.long).tolist() for b in index_batches]
        if not batches:
            return
        loader = torch.utils.data.DataLoader(self.dataset(want_x=want_x, want_y=want_y), batch_sampler=batches, **self.loader_options(seed=seed))
        for x, y in checked(loader):
            yield x, y

    def batches(self, batch_size: int, *, want_x: bool = True, want_y: bool = True) -> Iterator[tuple[slice, torch.Tensor | None, torch.Tensor | None]]:
        """(slice, uint8 inputs, uint8 targets or None) for consecutive batches, in order."""
        n = len(self)
        slices = [slice(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
        for sl, (x, y) in zip(slices, self.take([list(range(sl.start, sl.stop)) for sl in slices], want_x=want_x, want_y=want_y)):  # type: ignore[misc]
            yield sl, x, y

    def load(self) -> ImageSet:
        """The whole set decoded into memory (by the workers)."""
        s, n = self.size, len(self)
        inputs = torch.empty((n, self.input_nc, s, s), dtype=torch.uint8)
        targets = torch.empty((n, self.output_nc, s, s), dtype=torch.uint8) if self.output_nc is not None else None
        for sl, x, y in self.batches(HASH_BATCH):
            inputs[sl] = x
            if targets is not None:
                targets[sl] = y
        return ImageSet(inputs=inputs, targets=targets, names=list(self.names), path=self.path, layout=self.layout, resized=self.resized)

    # --- content hashes, byte for byte those of the ImageSet (data.images.data_fingerprint, data.checks.pair_hashes)

    def _hash_inputs(self) -> None:
        """One pass: the sha256 of all inputs (the first half of ``fingerprint``) and each pair's blake2b."""
        h = hashlib.sha256()
        per: list[bytes] = []
        for _, x, y in self.batches(HASH_BATCH):
            h.update(x.numpy())  # type: ignore[union-attr]
            for i in range(x.shape[0]):  # type: ignore[union-attr]
                d = hashlib.blake2b(digest_size=16)
                d.update(repr(tuple(x[i].shape)).encode())  # type: ignore[index]
                d.update(x[i].numpy())  # type: ignore[index]
                if y is not None:
                    d.update(repr(tuple(y[i].shape)).encode())
                    d.update(y[i].numpy())
                per.append(d.digest())
        self._inputs_sha, self._pair_hashes = h, per

    def pair_hashes(self) -> list[bytes]:
        if self._pair_hashes is None:
            self._hash_inputs()
        return list(self._pair_hashes)  # type: ignore[arg-type]

    def fingerprint(self) -> str:
        """sha256 of all inputs, then all targets: a pass for the inputs, another for the targets."""
        if self._fingerprint is None:
            if self._inputs_sha is None:
                self._hash_inputs()
            h = self._inputs_sha.copy()
            if self.output_nc is not None:
                for _, _, y in self.batches(HASH_BATCH, want_x=False):
                    h.update(y.numpy())  # type: ignore[union-attr]
            self._fingerprint = h.hexdigest()
        return self._fingerprint


def concat(sets: Sequence[StreamedSet], order: Sequence[int], *, path: str, layout: str, names: list[str]) -> StreamedSet:
    """The items of ``sets`` (read alike: same direction, size and channels) taken in ``order``
    (indices into their concatenation), named ``names`` (one per index of the concatenation)."""
    first = sets[0]
    for s in sets[1:]:
        if (s.decode, s.size, s.input_nc, s.output_nc) != (first.decode, first.size, first.input_nc, first.output_nc):
            raise DataError(f"{s.path} is read at another size or with other channels than {first.path}; pass --size so both are resized alike")
    items = [it for s in sets for it in s.items]
    resized = next((s.resized for s in sets if s.resized), None)
    return StreamedSet([items[i] for i in order], [names[i] for i in order], path, layout, first.decode, first.size, first.input_nc, first.output_nc,
                       resized, max(s.workers for s in sets))


# ----------------------------------------------------------------------------------------------
# opening a folder: in memory when it fits, else streamed

def _open(listing: Listing, streaming: Streaming | None) -> ImageSet | StreamedSet:
    streaming = streaming or Streaming()
    streaming.validate()
    if streaming.streams(listing.decoded_bytes()):
        return StreamedSet.from_listing(listing, workers=streaming.workers)
    return listing.load()


def open_pairs(path: str | Path, *, direction: str = "AtoB", size: int | None = None, input_nc: int = 3, output_nc: int = 3, what: str = "data",
               streaming: Streaming | None = None) -> ImageSet | StreamedSet:
    """``load_pairs``, or the same pairs as a ``StreamedSet`` when ``streaming`` says so (default:
    ``Streaming()``, stream above the default memory budget). Every header is checked either way."""
    return _open(scan_pairs(path, direction=direction, size=size, input_nc=input_nc, output_nc=output_nc, what=what), streaming)


def open_sets(folders: Sequence[tuple[str | Path, str]], *, direction: str = "AtoB", size: int | None = None, input_nc: int = 3, output_nc: int = 3,
              streaming: Streaming | None = None) -> list[ImageSet | StreamedSet]:
    """Several folders of pairs ((path, what) each) read alike: all headers are checked first, then
    all are streamed when their decoded total exceeds the budget (or ``--stream``), else all loaded."""
    listings = [scan_pairs(p, direction=direction, size=size, input_nc=input_nc, output_nc=output_nc, what=w) for p, w in folders]
    streaming = streaming or Streaming()
    streaming.validate()
    stream = streaming.streams(sum(item.decoded_bytes() for item in listings))
    return [StreamedSet.from_listing(item, workers=streaming.workers) if stream else item.load() for item in listings]


def open_inputs(path: str | Path, *, direction: str = "AtoB", size: int | None = None, input_nc: int = 3, layout: str = "auto", what: str = "proxy",
                streaming: Streaming | None = None) -> ImageSet | StreamedSet:
    """``load_inputs``, or the same inputs as a ``StreamedSet`` when ``streaming`` says so."""
    return _open(scan_inputs(path, direction=direction, size=size, input_nc=input_nc, layout=layout, what=what), streaming)


def is_streamed(images: Any) -> bool:
    return isinstance(images, StreamedSet)
