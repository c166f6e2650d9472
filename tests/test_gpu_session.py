"""benchmarks/gpu_session.sh, the script a lent GPU session runs in one go, checked on the CPU: its
stages run within the budget, the ones that need CUDA fail alone (bf16 is refused on the CPU), a stage
with no time left is skipped, and the log and the packed results land in OUT."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def session(tmp_path: Path, budget: int, **extra: str) -> str:
    """Runs the script on the CPU with ``budget`` seconds (5 kept for packing); its log.txt."""
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "WORK": str(tmp_path / "work"), "BUDGET": str(budget), "RESERVE": "5", "DEV": "cpu",
           "SKIP_TIMINGS": "1", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    for k in ("DATA", "TEACHER", "TESTS", "INSTALL", "JOBS", "MIN_RUN"):
        env.pop(k, None)
    env.update(extra)
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_session.sh")], env=env, cwd=tmp_path, capture_output=True, text=True,
                       timeout=budget + 60)
    assert r.returncode == 0, r.stderr
    return (out / "log.txt").read_text()


# a stand-in for python: an ablation run writes its result where distill_ablation.py would; the rest succeeds doing nothing
STUB = """#!/usr/bin/env bash
while [ $# -gt 0 ]; do case "$1" in --out) out=$2; shift ;; --variants) v=$2; shift ;; --seeds) s=$2; shift ;; --data) d=$2; shift ;; esac; shift; done
[ -n "${out:-}" ] && mkdir -p "$out/runs" && echo "{\\"data\\": \\"$d\\"}" >"$out/runs/$v-s$s.json"
exit 0
"""


def test_gpu_session_runs_the_ablation_jobs_and_packs_their_results(tmp_path: Path) -> None:
    stub = tmp_path / "python"
    stub.write_text(STUB)
    stub.chmod(0o755)
    (tmp_path / "data").mkdir()
    (tmp_path / "t.pt").write_bytes(b"")
    (tmp_path / "jobs.txt").write_text("akd fp32 7\nobjective-augment-short-ema995 bf16 20\n")
    log = session(tmp_path, 40, PYTHON=str(stub), DATA="data", TEACHER="t.pt", JOBS=str(tmp_path / "jobs.txt"), MIN_RUN="1")
    assert "ablation: 2 runs, 6 at a time" in log and "ablation: 2 runs ended; 2 complete" in log
    with tarfile.open(tmp_path / "out" / "results.tar.gz") as tar:
        names = tar.getnames()
    assert "abl/akd-fp32-s7/runs/akd-s7.json" in names and "abl/objective-augment-short-ema995-bf16-s20/runs/objective-augment-short-ema995-s20.json" in names
    # a relative DATA is the caller's (here tmp_path), made absolute before the script's cd
    run = json.loads((tmp_path / "work" / "abl" / "akd-fp32-s7" / "runs" / "akd-s7.json").read_text())
    assert run["data"] == str(tmp_path / "data")


def test_gpu_session_skips_every_stage_without_time(tmp_path: Path) -> None:
    log = session(tmp_path, 6)  # 1 s left after the reserve: less than a stage's minimum of 5
    for stage in ("version", "demo", "attack_study", "reproduce_table2"):
        assert f"{stage}: skipped (no time left)" in log
    assert "packed:" in log and (tmp_path / "out" / "results.tar.gz").is_file()


@pytest.mark.slow
def test_gpu_session_script_runs_its_stages_within_the_budget(tmp_path: Path) -> None:
    log = session(tmp_path, 60)
    assert "version: rc=0" in log and "demo: rc=0" in log and "det-fp32-a: rc=0" in log
    assert "det-bf16: rc=2" in log  # bf16 needs CUDA: that stage fails, the others go on
    assert "ablation" not in log  # no DATA and TEACHER: no ablation
    assert "packed:" in log
    out = tmp_path / "out"
    with tarfile.open(out / "results.tar.gz") as tar:
        names = tar.getnames()
    assert "logs/demo.log" in names and "logs/det-bf16.log" in names


@pytest.mark.parametrize("extra, says", [
    ({"DATA": "missing-data", "TEACHER": "t.pt"}, "DATA"),
    ({"JOBS": "missing-jobs.txt"}, "JOBS"),
    ({"OUT": "/proc/not-writable"}, "cannot write to OUT"),
])
def test_gpu_session_bad_input_is_one_line_and_exit_2(tmp_path: Path, extra: dict, says: str) -> None:
    env = {**os.environ, "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work"), "BUDGET": "20", "DEV": "cpu", "SKIP_TIMINGS": "1",
           "PYTHON": sys.executable, **extra}
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_session.sh")], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("gpu_session: ") and says in lines[0], r.stderr
    assert not (tmp_path / "out" / "results.tar.gz").exists()
