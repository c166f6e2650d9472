"""Data-parallel training under ``torchrun``: PyTorch's own runtime, nothing home-made.

A run is distributed when torchrun's environment says so (``WORLD_SIZE`` > 1, with ``RANK`` and
``LOCAL_RANK``); ``session`` then starts the process group (NCCL on CUDA, gloo on the CPU) and
ends it. The global batch is the ``--batch-size`` flag: each process takes its shard
(``shard``) of every batch of the same seeded permutation, so the union of the shards is the
one-process batch, and ``DistributedDataParallel`` averages the gradients. The rank-0 process
(``is_main``) alone writes checkpoints and states and shows progress; the others wait at
``barrier``.

The functions that read the environment (``world_size``, ``rank``, ``is_main``) need no torch,
so the CLI can ask before the library loads.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

from privaudit.errors import EnvironmentProblem, InputError

if TYPE_CHECKING:
    import torch


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise EnvironmentProblem(f"{name}={value!r} in the environment is no whole number; launch with torchrun, which sets it") from None


_LOCAL = [0]  # depth of ``local()`` blocks: inside one, this process trains alone


def world_size() -> int:
    """How many processes train together (torchrun's WORLD_SIZE; 1 without torchrun or inside ``local()``)."""
    return 1 if _LOCAL[0] else launcher_world_size()


def launcher_world_size() -> int:
    """How many processes torchrun started, also inside ``local()`` (1 without torchrun)."""
    return max(1, _env_int("WORLD_SIZE", 1))


def launcher_rank() -> int:
    """This process's rank among the processes torchrun started, also inside ``local()``."""
    return _env_int("RANK", 0) if launcher_world_size() > 1 else 0


@contextmanager
def local() -> Iterator[None]:
    """Within the block, this process trains on its own, as if torchrun had started one process:
    no DDP, no sharded batches, and it writes its own files. ``references`` runs each rank's share
    of the reference models this way (each reference is an independent run). On CUDA the caller
    passes the process's own GPU (``local_device``), since ``device_for`` no longer sees torchrun."""
    _LOCAL[0] += 1
    try:
        yield
    finally:
        _LOCAL[0] -= 1


def local_device(device: str) -> str:
    """``device`` for a ``local()`` run in this process: ``cuda`` becomes this process's GPU
    (``cuda:LOCAL_RANK``) under torchrun; anything else is unchanged."""
    if launcher_world_size() > 1 and device in ("cuda", "auto"):
        import torch

        if torch.cuda.is_available():
            return f"cuda:{_env_int('LOCAL_RANK', 0)}"
    return device


def rank() -> int:
    """This process's rank among them (torchrun's RANK; 0 without torchrun)."""
    return _env_int("RANK", 0) if world_size() > 1 else 0


def local_rank() -> int:
    """This process's rank on its machine (torchrun's LOCAL_RANK): the GPU it uses."""
    return _env_int("LOCAL_RANK", 0) if world_size() > 1 else 0


def gather_json(value: Any) -> list[Any]:
    """``value`` (JSON-serialisable) from every process, in rank order (``[value]`` outside a group).
    Sent as JSON text, so nothing is unpickled but strings the processes of this run wrote."""
    if not active():
        return [value]
    import json

    import torch.distributed as dist

    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, json.dumps(value))
    return [json.loads(v) for v in out]


def launched() -> bool:
    """True under torchrun with more than one process."""
    return world_size() > 1


def is_main() -> bool:
    """True in the one process that writes files and shows progress (rank 0, or no torchrun)."""
    return rank() == 0


def active() -> bool:
    """True once this process is in a process group of several."""
    import torch.distributed as dist

    return launched() and dist.is_available() and dist.is_initialized()


def per_process_batch(batch_size: int) -> int:
    """The batch each process trains on: the global ``--batch-size`` over the world size.
    ``InputError`` when it does not divide."""
    n = world_size()
    if batch_size % n:
        raise InputError(f"--batch-size {batch_size} is the global batch and must be a multiple of the {n} processes torchrun started; "
                         f"pass --batch-size {max(n, batch_size // n * n)}, or start a number of processes that divides {batch_size}")
    return batch_size // n


def record(batch_size: int) -> dict[str, int]:
    """What a checkpoint's provenance says about the processes that trained it."""
    return {"world_size": world_size(), "global_batch": int(batch_size), "per_process_batch": int(batch_size) // world_size()}


def device_for(device: torch.device) -> torch.device:
    """Under torchrun on CUDA, this process's GPU (``cuda:LOCAL_RANK``); else ``device``."""
    import torch

    if launched() and device.type == "cuda":
        dev = torch.device("cuda", local_rank())
        torch.cuda.set_device(dev)
        return dev
    return device


@contextmanager
def session(device: torch.device, *, timeout_s: float | None = None) -> Iterator[None]:
    """Join the process group for the duration of a run (NCCL on CUDA, gloo on the CPU) when
    torchrun started several processes, and leave it afterwards; nothing without torchrun or when
    a group is already up (the caller's)."""
    import torch.distributed as dist

    if not launched() or dist.is_initialized():
        yield
        return
    if not dist.is_available():
        raise EnvironmentProblem("torchrun started several processes but this torch has no torch.distributed; run one process")
    backend = "nccl" if device.type == "cuda" else "gloo"
    extra: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
    if timeout_s is not None:
        from datetime import timedelta

        extra["timeout"] = timedelta(seconds=timeout_s)
    dist.init_process_group(backend=backend, **extra)
    try:
        yield
        dist.barrier()  # every process done with the group before any leaves it: gloo may abort a peer whose group goes away mid-teardown
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (nothing outside a process group)."""
    if active():
        import torch.distributed as dist

        dist.barrier()


def shard(idx: torch.Tensor) -> tuple[torch.Tensor, int]:
    """This process's part of a global batch ``idx`` (indices into the data) and its real size.

    The parts are contiguous and differ in size by at most one, so their union in rank order is
    ``idx``. A part left empty (a last batch with fewer items than processes) gets ``idx[:1]`` as
    a stand-in with real size 0, so that every process still takes part in the step (its loss is
    weighted by 0).
    """
    if not active():
        return idx, int(idx.numel())
    part = idx.tensor_split(world_size())[rank()]
    return (part, int(part.numel())) if part.numel() else (idx[:1], 0)


def weighted_means(values: dict[str, float], count: int, device: torch.device | None = None) -> dict[str, float]:
    """The means over the global batch of per-process means ``values`` over ``count`` items each:
    what one process would have logged for the whole batch (``values`` unchanged outside a group)."""
    if not active():
        return values
    import torch
    import torch.distributed as dist

    keys = list(values)  # the same order in every process: the step logs the same keys
    t = torch.tensor([values[k] * count for k in keys] + [float(count)], dtype=torch.float64,
                     device=device if device is not None and device.type == "cuda" else None)
    dist.all_reduce(t)
    total = float(t[-1])
    return {k: float(t[i]) / total for i, k in enumerate(keys)}
