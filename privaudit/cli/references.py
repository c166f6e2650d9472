"""`privaudit references`: train K reference models that replay MODEL's recorded recipe.

Parses the flags into ``RecipeFlags`` and calls ``privaudit.references.build_references`` once
(``privaudit/references/build.py``); renders a progress bar over references and epochs, and a summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from privaudit import defaults, distributed
from privaudit.cli import options as o
from privaudit.cli.common import guarded, progress, stderr
from privaudit.cli.render import warning
from privaudit.errors import InputError


@guarded
def references(
    model: Annotated[Path, typer.Argument(help="The audited model (any MODEL format) whose recipe the references replay.")],
    more_population: Annotated[Optional[list[Path]], typer.Argument(metavar="DIR", show_default=False,
                                                                    help="More population folders (so '--population A B' works: B lands here).")] = None,
    population: Annotated[Optional[list[Path]], typer.Option("--population", help="A folder of pairs from MODEL's distribution (repeat the flag, or list more folders after it). Offline: must hold none of MODEL's training pairs; --online: the audited members and non-members.")] = None,
    count: Annotated[Optional[int], typer.Option("--count", help="How many reference models to train (K; --online: even, each sample IN for K/2).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder for the references and their manifest references.json (a rerun continues it).")] = None,
    online: Annotated[bool, typer.Option("--online", help="Each reference trains on a random half of the population (members and non-members included), so every sample is IN for half of them (online LiRA).")] = False,
    proxy: Annotated[Optional[Path], typer.Option("--proxy", help="akd/dmp: the proxy inputs MODEL was distilled on; each reference pipeline distils on them too.")] = None,
    teacher: Annotated[Optional[Path], typer.Option("--teacher", help="A defended MODEL made before privaudit recorded its teacher's recipe: the teacher it was made from.")] = None,
    teacher_cache: Annotated[Optional[Path], typer.Option("--teacher-cache", help="Where reference teachers of a pipeline are cached (default OUT/teachers); share it between the references of AKD and DMP of one teacher.")] = None,
    exclude: Annotated[Optional[list[Path]], typer.Option("--exclude", help="Offline: MODEL's training pairs, when they are not at the path MODEL records; the population is checked to hold none of them.")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Recipe of a model that does not record it (a pix2pix .pth, an exported model): training epochs.")] = None,
    decay_epochs: Annotated[Optional[int], typer.Option("--decay-epochs", help="Recipe: linear learning-rate decay over the last N epochs (default: half).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help=f"Recipe: batch size (pix2pix: {defaults.BATCH_SIZE}).")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help=f"Recipe: Adam learning rate (pix2pix: {defaults.LR:g}).")] = None,
    lambda_l1: Annotated[Optional[float], typer.Option("--lambda-l1", help=f"Recipe: weight of the L1 term (pix2pix: {defaults.LAMBDA_L1:g}).")] = None,
    ndf: Annotated[Optional[int], typer.Option("--ndf", help=f"Recipe: discriminator width (pix2pix: {defaults.NDF}).")] = None,
    augment: Annotated[Optional[bool], typer.Option("--augment/--no-augment", help="Recipe: pix2pix jitter and flips (pix2pix: on).")] = None,
    size: Annotated[Optional[int], typer.Option("--size", help="Recipe: the image size MODEL was trained at.")] = None,
    direction: Annotated[Optional[str], typer.Option("--direction", help="Recipe: AtoB (left half or A/ is the input) or BtoA.")] = None,
    ngf: o.Ngf = None,
    num_downs: o.NumDowns = None,
    norm: o.Norm = None,
    train_count: Annotated[Optional[int], typer.Option("--train-count", help="Recipe: how many pairs MODEL was trained on (each offline reference trains on that many).")] = None,
    seed: o.Seed = defaults.SEED,
    device: o.Device = defaults.DEVICE,
    precision: o.Precision = o.PrecisionChoice(defaults.PRECISION),
    deterministic: o.Deterministic = defaults.DETERMINISTIC,
    stream: o.Stream = False,
    memory_budget: o.MemoryBudget = None,
    workers: o.Workers = None,
    quiet: o.Quiet = False,
) -> None:
    """Train K reference models that replay MODEL's recipe on population data (for the calibrated attacks and LiRA)."""
    from privaudit.data.stream import Streaming
    from privaudit.references import RecipeFlags, build_references  # here, not above: --help needs no torch

    quiet = quiet or not distributed.is_main()  # under torchrun rank 0 alone shows progress and the summary

    if out is None:
        raise InputError("--out DIR is required: the folder for the reference models and their manifest")
    if count is None:
        raise InputError("--count K is required: how many reference models to train (--online: an even number)")
    folders = [*(population or []), *(more_population or [])]
    if not population:
        raise InputError("--population DIR is required: folders of pairs from MODEL's distribution to train the references on")
    flags = RecipeFlags(epochs=epochs, decay_epochs=decay_epochs, batch_size=batch_size, lr=lr, lambda_l1=lambda_l1, ndf=ndf, augment=augment, size=size,
                        direction=direction, ngf=ngf, num_downs=num_downs, norm=norm, train_count=train_count)
    with progress(disable=quiet) as bar:
        task = bar.add_task("references", total=None, info="")
        result = build_references(model, population=folders, count=count, out=out, online=online, proxy=proxy, teacher=teacher, teacher_cache=teacher_cache,
                                  exclude=exclude or (), flags=flags, seed=seed, device=device, precision=precision, deterministic=deterministic,
                                  on_progress=_bar(bar, task), on_warning=warning if distributed.is_main() else None,
                                  streaming=Streaming(force=stream, memory_budget_gb=memory_budget, workers=workers))
    if not quiet:
        m = result.manifest
        t = Table(title=f"references: {out}", title_justify="left", show_header=False)
        rows: list[tuple[str, Any]] = [
            ("model", f"{m['target']['path']}"),
            ("recipe", result.recipe.describe()),
            *((("teacher's recipe" if r.teacher is None else "teacher step"), r.describe()) for r in _teachers(result.recipe)),
            ("mode", f"{m['mode']}, {m['count']} references, seed {m['seed']}"),
            ("population", f"{m['population']['count']} pairs from {len(m['population']['folders'])} folder(s)"
             + (f", {m['population']['duplicates']} duplicates dropped" if m["population"]["duplicates"] else "")),
            ("trained / reused", f"{len(result.trained)} / {len(result.reused)}"),
        ]
        if result.teachers_trained or result.teachers_reused:
            rows.append(("reference teachers trained / reused", f"{result.teachers_trained} / {result.teachers_reused}"))
        rows += [("time", f"{result.seconds:.1f}s"), ("wrote", str(Path(out) / "references.json"))]
        for k, v in rows:
            t.add_row(k, str(v))
        stderr.print(t)


def _bar(bar: Any, task: Any) -> Any:
    def on_progress(done: int, total: int, epoch: int, epochs: int) -> None:
        per = max(epochs, 1)
        bar.update(task, total=total * per, completed=done * per + min(epoch, per),
                   description=f"reference {min(done + 1, total)}/{total}", info=f"epoch {min(epoch, per)}/{epochs}" if done < total else "")

    return on_progress


def _teachers(recipe: Any) -> list[Any]:
    out = []
    while recipe.teacher is not None:
        recipe = recipe.teacher
        out.append(recipe)
    return out
