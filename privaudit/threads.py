"""How many intra-op threads torch may use, chosen once when a ``privaudit`` command starts.

torch's default is one OpenMP thread per physical core. On a machine where another process is
busy, one of those threads keeps losing its core, every parallel region waits for it, and training
runs several times slower than with fewer threads (``benchmarks/threads.py``; ``docs/performance.md``).
So the command line picks the cores that are free when it starts:

1. ``--threads N`` (the global option), else ``PRIVAUDIT_THREADS=N``: exactly N threads;
2. else ``OMP_NUM_THREADS`` set by the user: left alone (torch and OpenMP honour it);
3. else ``auto``: the cores this process may use (CPU affinity, a cgroup CPU quota) less the cores
   found busy (the 1-minute load average, or the processes running right now if more; for a process
   pinned to some cores, also their use over 0.1 s), at least 1 and never more than torch already
   uses (so ``torch.set_num_threads(1)`` by the caller stands).

:func:`prepare_openmp` sets ``OMP_WAIT_POLICY=PASSIVE`` before torch loads (OpenMP reads it once):
idle threads then sleep instead of spinning, which keeps a machine whose load rises after the start
from collapsing. Nothing here imports torch; :func:`configure_threads` calls ``torch.set_num_threads``
only when torch is already loaded, and otherwise sets ``OMP_NUM_THREADS`` for it to read.
The library never calls these by itself: a program that imports privaudit keeps its own settings.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import MutableMapping

from privaudit.errors import InputError

ENV = "PRIVAUDIT_THREADS"

__all__ = ["ENV", "ThreadChoice", "choose_threads", "configure_threads", "current_choice", "prepare_openmp", "usable_cores"]


@dataclass(frozen=True)
class ThreadChoice:
    """``threads``: the intra-op thread count set, or None when left to OMP_NUM_THREADS / torch.
    ``source``: "--threads", "PRIVAUDIT_THREADS", "OMP_NUM_THREADS" or "auto"; ``cores``: the cores this
    process may use; ``busy``: the cores found busy machine-wide at the start, ``busy_here``: busy among
    this process's cores when it is pinned to some, ``total_cpus``: the machine's (auto only)."""

    threads: int | None
    source: str
    cores: int
    busy: float | None = None
    busy_here: float | None = None
    total_cpus: int | None = None

    def describe(self) -> str:
        if self.source == "auto":
            where = (f"{self.cores} of {self.total_cpus} cores usable, {self.busy_here:.1f} of them busy"
                     if self.busy_here is not None else f"{self.cores} core(s), {self.busy:.1f} busy")
            return f"{self.threads} thread(s): {where} (set --threads N or {ENV} to choose)"
        if self.threads is None:
            return f"threads from OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')}"
        return f"{self.threads} thread(s) from {self.source}"


_CHOICE: ThreadChoice | None = None


def current_choice() -> ThreadChoice | None:
    """What the last :func:`configure_threads` chose in this process (None if it never ran)."""
    return _CHOICE


# ----------------------------------------------------------------------------- what the machine offers


def _cgroup_cpus() -> float | None:
    """The CPU quota of this process's cgroup in cores (Docker ``--cpus``, Kubernetes limits), or None."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]  # cgroup v2
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError):
        return None


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota; at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_cpus()
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def busy_cores() -> float:
    """Cores other processes keep busy machine-wide: the 1-minute load average, or the number of other
    processes running right now if that is more (the load average lags a job that has just started)."""
    try:
        fields = Path("/proc/loadavg").read_text().split()
        load1 = float(fields[0])
        running = int(fields[3].split("/")[0]) - 1  # the reader itself is running
        return max(load1, float(running))
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def _cpu_times(stat: str) -> dict[int, tuple[int, int]]:
    """cpu number -> (busy, total) jiffies from the text of /proc/stat."""
    out = {}
    for line in stat.splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and len(values) >= 4:
            v = [int(x) for x in values[:8]]
            idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
            out[int(name[3:])] = (sum(v) - idle, sum(v))
    return out


def busy_fraction(before: str, after: str, cpus: set[int]) -> float:
    """Cores kept busy among ``cpus`` between two readings of /proc/stat (0 to len(cpus))."""
    a, b = _cpu_times(before), _cpu_times(after)
    busy = 0.0
    for c in cpus:
        if c in a and c in b and b[c][1] > a[c][1]:
            busy += (b[c][0] - a[c][0]) / (b[c][1] - a[c][1])
    return busy


def busy_in_affinity(interval: float = 0.1) -> float | None:
    """Cores kept busy among those this process may run on, sampled over ``interval`` seconds, when
    the process is pinned to some of the machine's cores (a cpuset: ``taskset``, ``docker --cpuset-cpus``):
    the machine's load then says little about those cores. None when it is not pinned or cannot tell."""
    try:
        cpus = set(os.sched_getaffinity(0))
        if len(cpus) >= (os.cpu_count() or 1):
            return None
        stat = Path("/proc/stat")
        before = stat.read_text()
        time.sleep(interval)
        return busy_fraction(before, stat.read_text(), cpus)
    except (AttributeError, OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- the choice (pure)


def _parse(value: object, what: str) -> int:
    if isinstance(value, bool):
        raise InputError(f"{what} must be a whole number of threads, at least 1, not {value}")
    try:
        n = int(str(value).strip())
    except ValueError:
        raise InputError(f"{what} must be a whole number of threads, at least 1, not {str(value)!r}") from None
    if n < 1:
        raise InputError(f"{what} must be a whole number of threads, at least 1, not {n}")
    return n


def choose_threads(
    requested: int | None,
    environ: MutableMapping[str, str],
    *,
    cores: int,
    total_cpus: int,
    busy: float,
    current: int | None,
    busy_here: float | None = None,
) -> ThreadChoice:
    """The thread count for ``requested`` (``--threads``), ``environ`` (PRIVAUDIT_THREADS, OMP_NUM_THREADS),
    ``cores`` usable by this process, ``total_cpus`` on the machine, ``busy`` cores (machine-wide),
    ``busy_here`` cores busy among this process's own (None: not pinned) and torch's ``current`` count
    (None when torch is not loaded yet). Raises InputError for a bad value."""
    if requested is not None:
        return ThreadChoice(_parse(requested, "--threads"), "--threads", cores)
    env = environ.get(ENV, "").strip()
    if env:
        return ThreadChoice(_parse(env, ENV), ENV, cores)
    if environ.get("OMP_NUM_THREADS", "").strip():
        return ThreadChoice(None, "OMP_NUM_THREADS", cores)
    # Round the busy cores half up: a process using 60% of a core already takes it from a thread.
    free = total_cpus - math.floor(busy + 0.5)
    if busy_here is not None:
        free = min(free, cores - math.floor(busy_here + 0.5))
    n = max(1, min(cores, free))
    if current is not None:
        n = min(n, max(1, current))
    return ThreadChoice(n, "auto", cores, round(busy, 2), None if busy_here is None else round(busy_here, 2), total_cpus)


# ----------------------------------------------------------------------------- applying it


def prepare_openmp(environ: MutableMapping[str, str] | None = None) -> None:
    """Before torch loads: idle OpenMP threads sleep rather than spin (``OMP_WAIT_POLICY=PASSIVE``),
    unless the user set a wait policy or spin count. Does nothing once torch is loaded."""
    env = os.environ if environ is None else environ
    if "torch" in sys.modules or "OMP_WAIT_POLICY" in env or "GOMP_SPINCOUNT" in env:
        return
    env["OMP_WAIT_POLICY"] = "PASSIVE"


def configure_threads(requested: int | None = None) -> ThreadChoice:
    """Choose (:func:`choose_threads`) and apply the intra-op thread count; return the choice.

    With torch loaded: ``torch.set_num_threads``. Before: ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS``
    in the environment, which torch reads when it loads. Raises InputError for a bad ``--threads`` or
    PRIVAUDIT_THREADS.
    """
    global _CHOICE
    torch = sys.modules.get("torch")
    current = torch.get_num_threads() if torch is not None else None
    auto = requested is None and not os.environ.get(ENV, "").strip() and not os.environ.get("OMP_NUM_THREADS", "").strip()
    choice = choose_threads(
        requested, os.environ, cores=usable_cores(), total_cpus=os.cpu_count() or 1, busy=busy_cores(), current=current,
        busy_here=busy_in_affinity() if auto else None,
    )
    if choice.threads is not None:
        if torch is not None:
            torch.set_num_threads(choice.threads)
        else:
            os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(choice.threads)
    _CHOICE = choice
    return choice
