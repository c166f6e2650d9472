"""`privaudit demo`: the whole pipeline on built-in procedural data, in minutes on a CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from privaudit import defaults
from privaudit.cli import options as o
from privaudit.cli.common import epoch_callback, guarded, progress, stderr
from privaudit.cli.render import compare_table, show
from privaudit.errors import InputError, check_seed
from privaudit.threads import current_choice


@guarded
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the data, checkpoints, reports and plots.")] = Path(defaults.DEMO_OUT),
    quick: Annotated[bool, typer.Option("--quick", help="A toy-sized run (seconds): what the test suite runs.")] = False,
    max_auc: Annotated[float, typer.Option("--max-auc", help="The gate's AUC limit applied to both models.")] = defaults.DEMO_MAX_AUC,
    data_only: Annotated[bool, typer.Option("--data-only", help="Only write the procedural data set (OUT/data/train, proxy, test) and stop.")] = False,
    seed: o.Seed = defaults.SEED,
) -> None:
    """Train a small teacher on procedural facades until it overfits, attack it, defend it with AKD,
    evaluate both, compare them and show the release gate's verdict."""
    from privaudit.demo import DemoConfig, StageProgress, build_data, run_demo
    from privaudit.io import check_dir_writable

    if not 0.0 <= max_auc <= 1.0:
        raise InputError(f"--max-auc must be between 0 and 1, not {max_auc}")
    check_seed(seed)
    check_dir_writable(out, what="demo folder")
    base = DemoConfig.quick() if quick else DemoConfig()
    cfg = DemoConfig(**{**base.__dict__, "seed": seed, "max_auc": max_auc})
    if data_only:
        paths = build_data(out / "data", cfg)
        stderr.print("wrote " + ", ".join(f"{p} ({n})" for p, n in zip(paths.values(), (cfg.n_train, cfg.n_proxy, cfg.n_test)))
                     + f": aligned {cfg.size}x{cfg.size} photo|label pairs, use --direction BtoA")
        return
    choice = current_choice()
    if choice is not None:
        stderr.print(f"[bold]›[/bold] torch threads: {choice.describe()}")
    with progress() as bar:
        tasks: dict[str, object] = {}
        on_step: dict[str, object] = {}

        def on_stage(key: str, text: str, total: int) -> None:
            if bar.disable:  # no live bar (a log, CI, PRIVAUDIT_NO_PROGRESS): one line per stage
                stderr.print(f"[bold]›[/bold] {text}")
            tasks[key] = bar.add_task(key.replace(":", " "), total=total, info="")

        def on_progress(p: StageProgress) -> None:
            if p.epochs is not None:  # training: "teacher epoch 3/150", losses, and a log line per epoch without a terminal
                if p.stage not in on_step:
                    on_step[p.stage] = epoch_callback(bar, tasks[p.stage], p.epochs, label=p.stage)
                on_step[p.stage](p.epoch, p.step, p.steps_per_epoch, p.losses)  # type: ignore[operator]
            else:
                bar.update(tasks[p.stage], completed=p.done, total=p.total)  # type: ignore[arg-type]

        summary = run_demo(out, cfg, on_stage=on_stage, on_progress=on_progress)
    show(compare_table(summary["rows"]))
    if not summary["kid"]:
        stderr.print("KID/NKID skipped: no Inception weights (privaudit weights fetch downloads them); pixel metrics shown instead.")
    from privaudit.gate import GatePolicy, evaluate_gate
    from privaudit.report.schema import load_report

    for name in ("teacher", "akd"):
        verdict = evaluate_gate(load_report(out / f"{name}.json"), GatePolicy(max_auc=max_auc))
        word = "PASS" if verdict.passed else "FAIL"
        judged = verdict.checks[0]  # the AUC the gate judged: max(AUC, 1 − AUC)
        stderr.print(f"gate --max-auc {max_auc}: {name} {word} (AUC {judged.value:.3f}{', score flipped' if judged.note else ''})")
    stderr.print(f"done in {summary['wall_s']}s; everything is in {out}/ (teacher.json, akd.json, comparison.md, tradeoff.png)")
