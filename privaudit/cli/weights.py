"""`privaudit weights fetch`: download the Inception weights KID needs, once, verified."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from privaudit.cli import options as o
from privaudit.cli.common import download_progress, guarded, stderr
from privaudit.defaults import INCEPTION_WEIGHTS_SHA256, INCEPTION_WEIGHTS_URL, WEIGHTS_ENV

weights = typer.Typer(
    help="Inception weights for KID: fetch torch-fidelity's file once, checked and vetted.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


@weights.command("fetch")
@guarded
def fetch(
    url: Annotated[str, typer.Option("--url", help="Where to download from (a mirror of torch-fidelity's release file).")] = INCEPTION_WEIGHTS_URL,
    dest: Annotated[Optional[Path], typer.Option("--dest", help="Where to put the file. Default: the torch hub cache, where evaluate looks ($TORCH_HOME/hub/checkpoints/).")] = None,
    sha256: Annotated[str, typer.Option("--sha256", help="The SHA-256 the file must have (default: the pinned hash of torch-fidelity's v0.2.0 file).")] = INCEPTION_WEIGHTS_SHA256,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait on the network before giving up.")] = 60.0,
    quiet: o.Quiet = False,
) -> None:
    """Download the Inception weights for KID, check and vet them, put them where evaluate looks.

    The file is torch-fidelity's weights-inception-2015-12-05-6726825d.pth. Its SHA-256 must match --sha256,
    then it is vetted (tensors only, InceptionV3's keys and shapes) before it is moved into place. On any
    failure nothing is written (exit 2)."""
    from privaudit.evaluation.fetch import fetch_inception_weights  # here, not above: --help needs no torch

    with download_progress(disable=quiet) as bar:
        task = bar.add_task("Inception weights", total=None)
        result = fetch_inception_weights(url=url, dest=dest, sha256=sha256, timeout=timeout,
                                         on_progress=lambda done, total: bar.update(task, completed=done, total=total))
    if quiet:
        return
    if not result.downloaded:
        stderr.print(f"{result.path} is already there (SHA-256 {result.sha256[:12]}…, vetted); nothing downloaded")
    else:
        stderr.print(f"wrote {result.path} ({result.size / 1e6:.1f} MB, SHA-256 {result.sha256[:12]}…, vetted)")
    if dest is not None:
        stderr.print(f"evaluate finds it with --inception-weights {result.path} (or {WEIGHTS_ENV}={result.path})")
    elif os.environ.get(WEIGHTS_ENV, "").strip():
        stderr.print(f"note: {WEIGHTS_ENV} is set and takes precedence over this file; unset it to use it")
    else:
        stderr.print("evaluate and demo find it there: KID/NKID are on")

