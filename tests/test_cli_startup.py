"""`privaudit --help`, `privaudit gate` and `privaudit report` (without plots) start without torch.

Each check runs a fresh interpreter (this one imported torch long ago) and reads what it imported,
from ``sys.modules`` or from ``python -X importtime``. The commands that need torch import the
library inside the command function; the top of every ``privaudit/cli/*.py`` imports only light
modules, which the last test checks statically.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "torch_fidelity", "opacus", "numpy", "scipy", "sklearn", "matplotlib", "PIL")


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "PRIVAUDIT_NO_PROGRESS": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def _heavy_modules(code: str, cwd: Path) -> list[str]:
    """The heavy top-level packages in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))"
    proc = _run(["-c", probe], cwd)
    assert proc.returncode == 0, proc.stderr
    return ast.literal_eval(proc.stdout.strip().splitlines()[-1])


def _imported(importtime_stderr: str) -> set[str]:
    """Module names from ``python -X importtime`` output (``import time: self | cumulative | name``)."""
    return {line.rsplit("|", 1)[1].strip() for line in importtime_stderr.splitlines() if line.startswith("import time:") and "|" in line}


def _report(path: Path, auc: float) -> Path:
    """A hand-written report: what the gate and `privaudit report` read, no model behind it."""
    report = {
        "schema": "privaudit.report/1", "tool": {"version": "0.1.0"}, "created": "2026-01-01T00:00:00+00:00", "seed": 0,
        "model": {"path": "student.pt", "sha256": "0" * 64, "format": "privaudit", "arch": {}, "defense": {"method": "akd"}},
        "data": {"members": {"path": "train", "count": 400}, "nonmembers": {"path": "test", "count": 106}},
        "attack": {"name": "reconstruction-l1", "auc": auc, "auc_ci95": [auc - 0.05, auc + 0.05], "tpr_at_fpr": {"0.01": 0.03, "0.1": 0.14},
                   "advantage": 0.12, "balanced_accuracy": 0.56},
    }
    path.write_text(json.dumps(report), encoding="utf-8")
    return path


def test_importing_the_cli_imports_no_torch(tmp_path: Path):
    assert _heavy_modules("import privaudit.cli.app", tmp_path) == []


def test_importing_the_library_imports_no_torch_until_a_name_needs_it(tmp_path: Path):
    assert _heavy_modules("import privaudit; privaudit.__version__; privaudit.PrivauditError; privaudit.load_report", tmp_path) == []
    assert _heavy_modules("import privaudit, numpy", tmp_path) == ["numpy"]  # the probe sees a heavy import


def test_every_help_needs_no_torch(tmp_path: Path):
    code = ("from typer.testing import CliRunner\nfrom privaudit.cli.app import app\n"
            "for cmd in ([], ['train'], ['attack'], ['defend'], ['evaluate'], ['report'], ['gate'], ['demo']):\n"
            "    r = CliRunner().invoke(app, [*cmd, '--help'])\n"
            "    assert r.exit_code == 0 and 'Usage:' in r.output, (cmd, r.output)")
    assert _heavy_modules(code, tmp_path) == []


@pytest.mark.parametrize("auc, code", [(0.55, 0), (0.8, 1)])
def test_gate_runs_without_torch(tmp_path: Path, auc: float, code: int):
    report = _report(tmp_path / "r.json", auc)
    proc = _run(["-X", "importtime", "-m", "privaudit", "gate", str(report), "--no-policy", "--max-auc", "0.6", "--junit", "-"], tmp_path)
    assert proc.returncode == code, proc.stderr
    assert ("gate passed" if code == 0 else "gate failed") in proc.stderr
    assert proc.stdout.startswith("<?xml")
    modules = _imported(proc.stderr)
    assert "privaudit.gate" in modules  # the probe sees what the command imported
    assert {m.split(".")[0] for m in modules} & set(HEAVY) == set()


def test_report_without_plots_runs_without_torch(tmp_path: Path):
    a, b = _report(tmp_path / "teacher.json", 0.9), _report(tmp_path / "akd.json", 0.55)
    proc = _run(["-X", "importtime", "-m", "privaudit", "report", str(a), str(b), "--markdown", "-"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "| teacher |" in proc.stdout and "| akd |" in proc.stdout
    modules = _imported(proc.stderr)
    assert "privaudit.report.tables" in modules
    assert {m.split(".")[0] for m in modules} & set(HEAVY) == set()


# What the top of a CLI module may import: the standard library, Typer and Rich, the package itself
# (its public names load lazily), its plain-Python defaults and errors, and the CLI's own modules
# (each checked here too). The library (torch, numpy, the models, the data) is imported inside the command.
LIGHT = {"privaudit", "privaudit.defaults", "privaudit.errors", "privaudit.threads"}  # threads.py never imports torch


@pytest.mark.parametrize("module", sorted(p.name for p in (ROOT / "privaudit" / "cli").glob("*.py")))
def test_command_modules_import_only_light_modules_at_the_top(module: str):
    tree = ast.parse((ROOT / "privaudit" / "cli" / module).read_text(encoding="utf-8"))
    heavy = []
    for node in tree.body:  # module level only: imports inside functions are the point
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        for name in names:
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top in ("typer", "rich") or name in LIGHT or name.startswith("privaudit.cli"):
                continue
            heavy.append(name)
    assert heavy == [], f"privaudit/cli/{module} imports {heavy} at the top; import the library inside the command"
