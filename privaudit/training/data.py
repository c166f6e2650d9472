"""What a training step draws its batches from: pairs held in memory, or streamed from disk.

``PlainStep`` asks for the batches of one epoch as lists of indices (its seeded permutation, cut
into batches and, under torchrun, into this process's shards) and gets back (float inputs in
[-1, 1], float targets) for each, in order. In memory that is indexing two tensors; streamed, the
``StreamedSet``'s workers decode the same indices ahead of use. Either way the tensors are the same
to the bit, so the run is the same run.

Distillation's targets are the teacher's outputs, not images: in memory a float tensor; for a
streamed proxy set, a float32 file written once (``OutputFile``), from which the workers read the
rows of each batch next to the proxy inputs they decode.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

import numpy as np
import torch

from privaudit.data.images import to_float
from privaudit.data.stream import StreamedSet, _Failed, checked
from privaudit.errors import EnvironmentProblem


class TrainingData(Protocol):
    """The pairs of a training run: ``n`` of them, ``take`` → (float x, float y) per index batch."""

    n: int
    input_nc: int
    output_nc: int
    size: int

    def take(self, index_batches: Sequence[torch.Tensor], *, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


class TensorPairs:
    """In memory: inputs uint8 (N, C_in, H, W); targets uint8 images (mapped to [-1, 1] batch by
    batch, the same values as mapping them all at once, in a quarter of the memory) or float
    (N, C_out, H, W) in [-1, 1] (a teacher's outputs)."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        self.inputs, self.targets = inputs, (targets if targets.dtype == torch.uint8 else targets.float())
        self.n, self.input_nc, self.output_nc = int(inputs.shape[0]), int(inputs.shape[1]), int(targets.shape[1])
        self.size = int(inputs.shape[-1])

    def take(self, index_batches: Sequence[torch.Tensor], *, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx in index_batches:
            y = self.targets[idx]
            yield to_float(self.inputs[idx]), (to_float(y) if y.dtype == torch.uint8 else y)


class OutputFile:
    """N float32 tensors of one shape in a file (row i at byte i × row bytes): a teacher's outputs on
    a streamed proxy set, written in order once (``append``), read by any process (``row``)."""

    def __init__(self, path: Path, shape: tuple[int, ...]) -> None:
        self.path, self.shape = Path(path), tuple(shape)
        self.row_bytes = int(np.prod(self.shape)) * 4
        self.n = 0

    @classmethod
    def create(cls, shape: tuple[int, ...], count: int, *, what: str) -> "OutputFile":
        """An empty file in the temporary folder (``TMPDIR``), after checking it has room for ``count`` rows."""
        folder = Path(tempfile.gettempdir())
        need = count * int(np.prod(shape)) * 4
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            free = None
        if free is not None and free < need * 1.05:
            raise EnvironmentProblem(f"{what} need {need / 1e9:.1f} GB on disk while the data are streamed, but {folder} has {free / 1e9:.1f} GB free; "
                                     "set TMPDIR to a folder with room, or pass a larger --memory-budget to keep them in memory")
        fd, name = tempfile.mkstemp(prefix="privaudit-outputs-", suffix=".f32", dir=folder)
        os.close(fd)
        return cls(Path(name), shape)

    def append(self, rows: torch.Tensor) -> None:
        data = rows.detach().to("cpu", torch.float32).contiguous().numpy()
        if data.shape[1:] != self.shape:
            raise ValueError(f"rows of shape {data.shape[1:]} in a file of {self.shape}")
        with open(self.path, "ab") as f:
            f.write(data.tobytes())
        self.n += int(data.shape[0])

    def row(self, i: int) -> torch.Tensor:
        a = np.fromfile(self.path, dtype=np.float32, count=self.row_bytes // 4, offset=int(i) * self.row_bytes)
        return torch.from_numpy(a).view(self.shape)

    def rows(self, idx: Sequence[int]) -> torch.Tensor:
        return torch.stack([self.row(i) for i in idx])

    def remove(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


class _InputsWithRows(torch.utils.data.Dataset):
    """A streamed set's inputs, each with its row of an ``OutputFile`` as the target."""

    def __init__(self, images: StreamedSet, rows: OutputFile) -> None:
        self.base, self.rows = images.dataset(want_y=False), rows

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> Any:
        item = self.base[i]
        if isinstance(item, _Failed):
            return item
        return item[0], self.rows.row(i)


class StreamedPairs:
    """A ``StreamedSet``'s pairs (its targets decoded and mapped to [-1, 1]), or its inputs with the
    rows of ``targets`` (an ``OutputFile``), decoded by its workers batch by batch."""

    def __init__(self, images: StreamedSet, targets: OutputFile | None = None) -> None:
        if targets is None and not images.has_targets:
            raise ValueError("a streamed set of inputs only needs its targets")
        if targets is not None and targets.n != len(images):
            raise ValueError(f"{targets.n} target rows for {len(images)} inputs")
        self.images, self.targets = images, targets
        self.n, self.input_nc, self.size = len(images), images.input_nc, images.size
        self.output_nc = int(targets.shape[0]) if targets is not None else int(images.output_nc)  # type: ignore[arg-type]

    def take(self, index_batches: Sequence[torch.Tensor], *, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.targets is None:
            for x, y in self.images.take(index_batches, seed=seed):
                yield to_float(x), to_float(y)  # type: ignore[arg-type]
            return
        batches = [torch.as_tensor(b, dtype=torch.long).tolist() for b in index_batches]
        if not batches:
            return
        loader = torch.utils.data.DataLoader(_InputsWithRows(self.images, self.targets), batch_sampler=batches, **self.images.loader_options(seed=seed))
        for x, y in checked(loader):
            yield to_float(x), y


def training_data(inputs: Any, targets: Any = None) -> TrainingData:
    """What ``fit`` was given as a ``TrainingData``: (uint8 inputs, float targets) tensors are held
    in memory; a ``TrainingData`` is used as it is."""
    if isinstance(inputs, torch.Tensor):
        return TensorPairs(inputs, targets)
    if targets is not None:
        raise TypeError("fit takes (inputs, targets) tensors, or a TrainingData and no targets")
    return inputs


__all__ = ["OutputFile", "StreamedPairs", "TensorPairs", "TrainingData", "training_data"]
