"""Download torch-fidelity's Inception weights once, on request (``privaudit weights fetch``).

privaudit never downloads behind the user's back; this is the one place that does, when asked.
The file is streamed to a temporary file next to its destination, its SHA-256 is checked against
the pinned value, it is vetted like any other weights file (:func:`vet_inception_weights`:
``weights_only=True``, keys and shapes), and only then renamed into place. Any failure leaves
nothing behind: no partial file, no folder created for it.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from privaudit import __version__
from privaudit.errors import InputError, WeightsError
from privaudit.defaults import INCEPTION_WEIGHTS_FILENAME, INCEPTION_WEIGHTS_SHA256, INCEPTION_WEIGHTS_URL
from privaudit.evaluation.inception import hub_weights_path, vet_inception_weights
from privaudit.io import atomic_path, check_dir_creatable, sha256_file

# SHA-256 of torch-fidelity's v0.2.0 release file (95,628,359 bytes). By torch hub's naming
# convention its first 8 hex digits are the "6726825d" in the file name.
INCEPTION_WEIGHTS_BYTES = 95_628_359
MAX_BYTES = 1 << 30  # a mirror that sends more than 1 GiB is not sending Inception weights
CHUNK = 1 << 20

__all__ = ["INCEPTION_WEIGHTS_BYTES", "INCEPTION_WEIGHTS_SHA256", "FetchResult", "fetch_inception_weights"]


@dataclass(frozen=True)
class FetchResult:
    """``path`` now holds the vetted weights (``sha256``, ``size`` bytes); ``downloaded`` is False when a
    file with the expected SHA-256 was already there."""

    path: Path
    sha256: str
    size: int
    downloaded: bool
    url: str


def _check_args(url: str, sha256: str, timeout: float) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
        ok = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok:
        raise InputError(f"--url must be an http:// or https:// address, not {url!r}; for a local file pass --inception-weights FILE to evaluate")
    sha = sha256.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise InputError(f"--sha256 must be 64 hexadecimal digits, not {sha256!r}")
    if not timeout > 0:
        raise InputError(f"--timeout must be a positive number of seconds, not {timeout}")
    return sha


def _network_message(url: str, exc: BaseException) -> str:
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, (socket.timeout, TimeoutError)):
        why = "the connection timed out"
    elif isinstance(reason, ConnectionRefusedError):
        why = "the connection was refused"
    elif isinstance(reason, http.client.IncompleteRead):
        why = "the connection closed before the end of the file"
    elif isinstance(reason, socket.gaierror):
        why = f"the host name did not resolve ({reason.strerror or reason})"
    else:
        why = str(getattr(reason, "strerror", None) or reason or type(exc).__name__)
    return (f"cannot download Inception weights from {url}: {why}; check the network (or use --url MIRROR), or copy "
            f"{INCEPTION_WEIGHTS_FILENAME} by hand and pass --inception-weights FILE to evaluate")


def _download(url: str, tmp: Path, *, timeout: float, max_bytes: int,
              on_progress: Callable[[int, int | None], None] | None) -> tuple[str, int]:
    """Stream ``url`` into ``tmp``; return (sha256, size). A network or HTTP failure raises WeightsError;
    a failed write (disk full) raises the OSError, which ``atomic_path`` reports naming the destination."""
    request = urllib.request.Request(url, headers={"User-Agent": f"privaudit/{__version__}"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (the scheme is checked: http or https)
    except urllib.error.HTTPError as exc:
        raise WeightsError(f"cannot download Inception weights from {url}: HTTP {exc.code} {exc.reason}; check --url") from None
    except (OSError, http.client.HTTPException) as exc:  # URLError, refused, reset, timed out, a malformed reply
        raise WeightsError(_network_message(url, exc)) from None
    h = hashlib.sha256()
    done = 0
    with response, open(tmp, "wb") as f:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if total is not None and total > max_bytes:
            raise WeightsError(f"{url} sends {total} bytes, more than any Inception weights file ({max_bytes}); check --url")
        if on_progress:
            on_progress(0, total)
        while True:
            try:
                chunk = response.read(CHUNK)
            except (OSError, http.client.HTTPException) as exc:  # the connection dropped mid-transfer
                raise WeightsError(_network_message(url, exc)) from None
            if not chunk:
                break
            done += len(chunk)
            if done > max_bytes:
                raise WeightsError(f"{url} sent more than {max_bytes} bytes, more than any Inception weights file; check --url")
            h.update(chunk)
            f.write(chunk)
            if on_progress:
                on_progress(done, total)
    if total is not None and done != total:
        raise WeightsError(f"the download from {url} stopped after {done} of {total} bytes; try again")
    return h.hexdigest(), done


def fetch_inception_weights(
    *,
    url: str = INCEPTION_WEIGHTS_URL,
    dest: str | os.PathLike | None = None,
    sha256: str = INCEPTION_WEIGHTS_SHA256,
    timeout: float = 60.0,
    max_bytes: int = MAX_BYTES,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> FetchResult:
    """Download the Inception weights from ``url`` to ``dest`` (default: :func:`hub_weights_path`, where
    ``evaluate`` looks), check ``sha256``, vet them, and move them into place atomically.

    A ``dest`` that already holds a file with that SHA-256 is left as it is (``downloaded=False``); any
    other file there is replaced only once the new one is verified. ``timeout``: seconds per network
    operation. ``on_progress(bytes_done, bytes_total_or_None)`` follows the download. Raises InputError
    (bad arguments, unwritable destination), WeightsError (network, HTTP, SHA-256 mismatch, vetting) and
    EnvironmentProblem (disk full while writing); nothing is left behind on failure.
    """
    sha = _check_args(url, sha256, timeout)
    target = Path(dest).expanduser() if dest is not None and str(dest) != "" else hub_weights_path()
    if target.is_dir():
        raise InputError(f"--dest {target} is a folder; give the file name, e.g. {target / INCEPTION_WEIGHTS_FILENAME}")
    check_dir_creatable(target.parent, what="weights folder")
    if target.is_file():
        with contextlib.suppress(OSError):
            if sha256_file(target) == sha:
                vet_inception_weights(target)
                return FetchResult(target, sha, target.stat().st_size, False, url)

    created = []  # folders made for the file, removed again if it never arrives
    folder = target.parent
    while not folder.exists():
        created.append(folder)
        folder = folder.parent
    try:
        for d in reversed(created):
            d.mkdir()
    except OSError as exc:
        _remove_empty(created)
        raise InputError(f"cannot create weights folder {target.parent}: {exc.strerror or exc}; choose another --dest") from None
    try:
        with atomic_path(target) as tmp:
            got, size = _download(url, tmp, timeout=timeout, max_bytes=max_bytes, on_progress=on_progress)
            if got != sha:
                raise WeightsError(
                    f"the file downloaded from {url} ({size} bytes) has SHA-256 {got}, expected {sha}: a truncated download "
                    "or another file; nothing was written. Try again, or pass --sha256 only if you trust that file"
                )
            try:
                vet_inception_weights(tmp)
            except WeightsError as exc:
                raise WeightsError(str(exc).replace(str(tmp), f"downloaded from {url}") + "; nothing was written") from None
    except BaseException:
        _remove_empty(created)
        raise
    return FetchResult(target, sha, size, True, url)


def _remove_empty(folders: list[Path]) -> None:
    for d in folders:  # deepest first
        with contextlib.suppress(OSError):
            d.rmdir()
