"""Start-up time of the commands that need no torch, against a baseline commit, side by side.

    python benchmarks/startup.py                      # this tree against BASELINE (default below)
    python benchmarks/startup.py --baseline HEAD~5 --rounds 7

The baseline is checked out into a temporary git worktree; each round runs every command once
from each tree (alternating, fresh interpreter each time, PYTHONPATH pointing at the tree), and
the median wall time of each is reported with the ratio baseline / this tree. ``gate`` is timed
on a small report written here, with ``--no-policy``; ``report`` without plots.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The last commit before the redesign of issue 11 (lazy imports): the "before" of the note.
DEFAULT_BASELINE = "95fa6ca"

REPORT = {
    "schema": "privaudit.report/1",
    "tool": {"name": "privaudit", "version": "0"},
    "created": "2026-01-01T00:00:00+00:00",
    "seed": 0,
    "model": {"path": "m.pt", "sha256": "0" * 64, "format": "privaudit", "arch": {}, "defense": {"method": "none"}},
    "data": {"members": {"path": "m", "count": 100}, "nonmembers": {"path": "n", "count": 100}},
    "attack": {"name": "reconstruction-loss", "auc": 0.55, "auc_ci95": [0.5, 0.6], "tpr_at_fpr": {"0.001": None, "0.01": 0.02, "0.1": 0.12},
               "advantage": 0.08, "balanced_accuracy": 0.54, "threshold": 0.3,
               "member_loss": {"mean": 0.3, "std": 0.1}, "nonmember_loss": {"mean": 0.31, "std": 0.1}},
}


def commands(report: Path) -> dict[str, list[str]]:
    return {
        "--help": ["--help"],
        "gate": ["gate", str(report), "--max-auc", "0.6", "--no-policy"],
        "report": ["report", str(report)],
    }


def run_once(tree: Path, argv: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree), "PRIVAUDIT_NO_PROGRESS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "privaudit", *argv], env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    secs = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{tree}: privaudit {' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return secs


def imports_torch(tree: Path) -> bool:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    code = "import sys, privaudit.cli.app; print('torch' in sys.modules)"
    # run outside any checkout, so the PYTHONPATH tree is the one imported
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tempfile.gettempdir()).stdout.strip() == "True"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default=DEFAULT_BASELINE, help="git revision to compare with")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(base), args.baseline], check=True)
        try:
            report = Path(tmp) / "r.json"
            report.write_text(json.dumps(REPORT))
            times: dict[tuple[str, str], list[float]] = {}
            for _ in range(args.rounds):
                for name, argv in commands(report).items():
                    for label, tree in (("baseline", base), ("this tree", ROOT)):
                        times.setdefault((name, label), []).append(run_once(tree, argv))
            print(f"load average {os.getloadavg()[0]:.2f}; {args.rounds} rounds; median seconds")
            print(f"{'command':10s} {'baseline ' + args.baseline:>20s} {'this tree':>12s} {'ratio':>7s}")
            for name in commands(report):
                b, t = statistics.median(times[(name, "baseline")]), statistics.median(times[(name, "this tree")])
                print(f"{name:10s} {b:20.3f} {t:12.3f} {b / t:7.2f}x")
            print(f"imports torch at start-up: baseline {imports_torch(base)}, this tree {imports_torch(ROOT)}")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)


if __name__ == "__main__":
    main()
