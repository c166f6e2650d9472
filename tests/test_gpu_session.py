"""benchmarks/gpu_session.sh, the script a lent GPU session runs in one go, checked on the CPU: its
stages run within the budget, the ones that need CUDA fail alone (bf16 is refused on the CPU), a stage
with no time left is skipped, and the log and the packed results land in OUT."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def session(tmp_path: Path, budget: int) -> str:
    """Runs the script on the CPU with ``budget`` seconds (5 kept for packing); its log.txt."""
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "WORK": str(tmp_path / "work"), "BUDGET": str(budget), "RESERVE": "5", "DEV": "cpu",
           "SKIP_TIMINGS": "1", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    for k in ("DATA", "TEACHER", "TESTS", "INSTALL"):
        env.pop(k, None)
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_session.sh")], env=env, capture_output=True, text=True, timeout=budget + 60)
    assert r.returncode == 0, r.stderr
    return (out / "log.txt").read_text()


def test_gpu_session_skips_every_stage_without_time(tmp_path: Path) -> None:
    log = session(tmp_path, 6)  # 1 s left after the reserve: less than a stage's minimum of 5
    for stage in ("version", "demo", "attack_study", "reproduce_table2"):
        assert f"{stage}: skipped (no time left)" in log
    assert "packed:" in log and (tmp_path / "out" / "results.tar.gz").is_file()


@pytest.mark.slow
def test_gpu_session_script_runs_its_stages_within_the_budget(tmp_path: Path) -> None:
    log = session(tmp_path, 90)
    assert "version: rc=0" in log and "demo: rc=0" in log and "det-fp32-a: rc=0" in log
    assert "det-bf16: rc=2" in log  # bf16 needs CUDA: that stage fails, the others go on
    assert "ablation" not in log  # no DATA and TEACHER: no ablation
    assert "packed:" in log
    out = tmp_path / "out"
    with tarfile.open(out / "results.tar.gz") as tar:
        names = tar.getnames()
    assert "logs/demo.log" in names and "logs/det-bf16.log" in names
