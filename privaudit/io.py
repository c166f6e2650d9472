"""Atomic file output: write to a temporary file in the same folder, then rename.

A crash, a full disk or an exception never leaves a half-written report or model behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from privaudit.errors import EnvironmentProblem, InputError, describe_os_error


def check_writable(path: str | os.PathLike, *, what: str = "output") -> Path:
    """Fail early (before any expensive work) if ``path`` cannot be written.

    Returns the path. ``-`` (stdout) is always accepted.
    """
    p = Path(path)
    if str(path) == "-":
        return p
    if p.exists() and p.is_dir():
        raise InputError(f"{what} path {p} is a directory; give a file name instead")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise InputError(f"cannot write {what} {p}: folder {parent} does not exist; create it or choose another path")
    if not parent.is_dir():
        raise InputError(f"cannot write {what} {p}: {parent} is not a folder; choose another path")
    if not os.access(parent, os.W_OK):
        raise InputError(f"cannot write {what} {p}: folder {parent} is not writable; choose another path")
    return p


def check_dir_writable(path: str | os.PathLike, *, what: str = "output folder") -> Path:
    """Create ``path`` (and parents) if needed; fail with an InputError if that is impossible."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"{what} {p} exists and is not a folder; choose another path")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create {what} {p}: {exc.strerror or exc}; choose another path") from None
    if not os.access(p, os.W_OK):
        raise InputError(f"{what} {p} is not writable; choose another path")
    return p


def check_dir_creatable(path: str | os.PathLike, *, what: str = "output folder", files: tuple[str, ...] = ()) -> Path:
    """Like ``check_dir_writable`` but creates nothing: the folder exists and is writable, or its
    nearest existing ancestor is a writable folder. ``files`` inside it must not be folders."""
    p = Path(path)
    if p.exists():
        if not p.is_dir():
            raise InputError(f"{what} {p} exists and is not a folder; choose another path")
        if not os.access(p, os.W_OK):
            raise InputError(f"{what} {p} is not writable; choose another path")
        for name in files:
            if (p / name).is_dir():
                raise InputError(f"cannot write {p / name}: it is a folder; remove it or choose another {what}")
        return p
    ancestor = p.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"cannot create {what} {p}: {ancestor} is not a folder; choose another path")
    if not os.access(ancestor, os.W_OK):
        raise InputError(f"cannot create {what} {p}: {ancestor} is not writable; choose another path")
    return p


def write_outputs(items: list[tuple[Path, bytes]]) -> None:
    """Write every (path, bytes) atomically, creating parent folders; call once all are built."""
    for path, data in items:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create folder {path.parent}: {exc.strerror or exc}; choose another path") from None
        atomic_write_bytes(path, data)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: the process exists but is another user's
        return True
    return True


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Delete ``.<name>.<pid>.*.tmp`` files next to ``target`` left by a process that no longer runs
    (killed with ``kill -9`` mid-write). Returns what was removed."""
    removed = []
    parent = target.parent if str(target.parent) else Path(".")
    try:
        candidates = list(parent.glob(f".{glob_escape(target.name)}.*.tmp"))
    except OSError:
        return removed
    for tmp in candidates:
        parts = tmp.name[len(target.name) + 2 :].split(".")
        if not parts or not parts[0].isdigit():
            continue
        pid = int(parts[0])
        if pid != os.getpid() and not _pid_alive(pid):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it over ``path``, else delete it.

    The temporary name carries the writer's PID, so a later writer can remove what a killed one
    left behind. An OSError while writing (disk full, permissions) becomes an EnvironmentProblem
    (exit 2) naming the file, and the target is left as it was.
    """
    target = Path(path)
    remove_stale_temporaries(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent if str(target.parent) else ".")
    except OSError as exc:
        raise EnvironmentProblem(describe_os_error(_with_name(exc, target), action="write")) from None
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; the result should look like any other file
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise EnvironmentProblem(describe_os_error(_with_name(exc, target), action="write")) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def _with_name(exc: OSError, target: Path) -> OSError:
    """The error with the user's file name in place of our temporary one."""
    return OSError(exc.errno, exc.strerror or str(exc), str(target))


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` atomically. Serialised in memory first: torch's own writer reports a full disk
    as a RuntimeError, while a plain file write raises the OSError that names the problem."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy the file ``src`` to ``dst`` through a temporary beside ``dst`` (no half-copied ``dst``)."""
    atomic_write_with(dst, lambda tmp: shutil.copyfile(src, tmp))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_with(path: str | os.PathLike, writer: Callable[[Path], Any]) -> None:
    """Call ``writer(tmp_path)`` and atomically move the result to ``path``."""
    with atomic_path(path) as tmp:
        writer(tmp)


def report_json(obj: Any) -> str:
    """The JSON text privaudit writes: indented, and never NaN or Infinity (not JSON)."""
    return json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike, obj: Any) -> str:
    """Write ``obj`` as indented JSON to ``path`` atomically (``-`` means stdout). Returns the text."""
    text = report_json(obj)
    if str(path) == "-":
        import sys

        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        atomic_write_text(path, text)
    return text


def utc_now() -> str:
    """The current UTC time as reports, checkpoints and manifests record it (ISO 8601, seconds)."""
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
