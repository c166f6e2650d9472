"""The thread count the command line gives torch: --threads, PRIVAUDIT_THREADS, a user's OMP_NUM_THREADS,
else the cores free at the start; OMP_WAIT_POLICY=PASSIVE before torch loads. Timings are in
benchmarks/threads.py, not here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from privaudit.cli.app import app
from privaudit.errors import InputError
from privaudit.threads import ENV, busy_fraction, choose_threads, configure_threads, current_choice, prepare_openmp

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def keep_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def choose(requested=None, environ=None, *, cores=2, total_cpus=2, busy=0.0, current=None, busy_here=None):
    return choose_threads(requested, environ or {}, cores=cores, total_cpus=total_cpus, busy=busy, current=current, busy_here=busy_here)


@pytest.mark.parametrize(
    "cores, total_cpus, busy, current, expected",
    [
        (2, 2, 0.0, None, 2),   # idle 2-core machine: both cores
        (2, 2, 0.4, None, 2),   # a little background load rounds away
        (2, 2, 0.6, None, 1),   # a process using most of a core takes it
        (2, 2, 1.0, None, 1),   # the reviewer's case: one busy process beside us
        (2, 2, 5.3, None, 1),   # overloaded: still at least one thread
        (16, 16, 3.2, None, 13),
        (4, 64, 40.0, None, 4),  # a container limited to 4 cores of a busy 64-core host: its 4 cores
        (16, 16, 0.0, 8, 8),    # never more than torch already uses (physical cores)
        (2, 2, 0.0, 1, 1),      # a caller's torch.set_num_threads(1) stands
    ],
)
def test_auto_takes_the_free_cores(cores, total_cpus, busy, current, expected):
    choice = choose(cores=cores, total_cpus=total_cpus, busy=busy, current=current)
    assert (choice.threads, choice.source, choice.cores) == (expected, "auto", cores)
    assert choice.busy == busy


def test_a_pinned_process_counts_the_use_of_its_own_cores():
    # pinned to 2 of 16 cores: the machine looks idle, but one of our cores is taken
    choice = choose(cores=2, total_cpus=16, busy=1.0, busy_here=0.9)
    assert (choice.threads, choice.busy_here, choice.total_cpus) == (1, 0.9, 16)
    assert "2 of 16 cores usable, 0.9 of them busy" in choice.describe()
    assert choose(cores=2, total_cpus=16, busy=6.0, busy_here=0.1).threads == 2  # the load is elsewhere
    assert choose(cores=4, total_cpus=16, busy=14.7, busy_here=0.0).threads == 1  # the machine-wide load still counts


def test_busy_fraction_reads_proc_stat():
    # user nice system idle iowait irq softirq steal: cpu1 busy 30 of 40 jiffies, cpu2 idle, cpu0 not ours
    before = "cpu  1 2 3 4 5 6 7 8\ncpu0 100 0 0 100 0 0 0 0\ncpu1 10 0 10 50 10 0 0 0\ncpu2 0 0 0 500 0 0 0 0\nintr 5\n"
    after = "cpu  9 9 9 9 9 9 9 9\ncpu0 200 0 0 100 0 0 0 0\ncpu1 30 0 20 55 15 0 0 0\ncpu2 0 0 0 540 0 0 0 0\nintr 7\n"
    assert busy_fraction(before, after, {1, 2}) == pytest.approx(30 / 40)
    assert busy_fraction(before, after, {0, 1, 2}) == pytest.approx(1 + 30 / 40)
    assert busy_fraction(before, after, {7}) == 0.0  # a core /proc/stat does not list


def test_explicit_settings_win_in_order():
    assert (choose(3, {ENV: "5", "OMP_NUM_THREADS": "7"}, busy=9.0).threads, choose(3, {ENV: "5"}).source) == (3, "--threads")
    assert (choose(None, {ENV: " 5 ", "OMP_NUM_THREADS": "7"}, busy=9.0).threads, choose(None, {ENV: "5"}).source) == (5, ENV)
    left = choose(None, {"OMP_NUM_THREADS": "7"}, busy=9.0)
    assert (left.threads, left.source) == (None, "OMP_NUM_THREADS")  # the user's OpenMP setting is left to torch
    assert choose(None, {ENV: "", "OMP_NUM_THREADS": ""}, busy=1.0).source == "auto"  # empty means unset


@pytest.mark.parametrize("requested, env, needle", [
    (0, {}, "--threads must be a whole number of threads, at least 1, not 0"),
    (-2, {}, "--threads must be"),
    (None, {ENV: "two"}, f"{ENV} must be a whole number of threads, at least 1, not 'two'"),
    (None, {ENV: "0"}, f"{ENV} must be"),
    (None, {ENV: "1.5"}, f"{ENV} must be"),
])
def test_bad_values_are_input_errors(requested, env, needle):
    with pytest.raises(InputError) as exc:
        choose(requested, env)
    assert needle in str(exc.value)


def test_configure_threads_sets_torch_once_it_is_loaded(monkeypatch, keep_torch_threads):
    monkeypatch.setenv(ENV, "2")
    choice = configure_threads(None)
    assert (choice.threads, choice.source, torch.get_num_threads()) == (2, ENV, 2)
    assert current_choice() == choice
    monkeypatch.delenv(ENV)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(1)
    assert configure_threads(None).threads == 1 and torch.get_num_threads() == 1  # auto never raises a caller's count


def test_prepare_openmp_sets_a_passive_wait_policy_only_before_torch(monkeypatch):
    env: dict[str, str] = {}
    prepare_openmp(env)
    assert env == {}  # torch is loaded in this process: too late, nothing set
    monkeypatch.delitem(sys.modules, "torch")
    prepare_openmp(env)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    for users in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "1000"}):
        mine = dict(users)
        prepare_openmp(mine)
        assert mine == users  # the user's own OpenMP policy stands


def test_the_command_line_prepares_openmp_before_torch_loads():
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env["PYTHONPATH"] = str(ROOT)
    code = "import os, sys; import privaudit.cli.app; print('torch' in sys.modules, os.environ.get('OMP_WAIT_POLICY'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    # the policy is set at start-up, before any command can load torch (starting the CLI loads none)
    assert out.stdout.split() == ["False", "PASSIVE"]


def test_cli_threads_option_and_env(tmp_path, monkeypatch, keep_torch_threads):
    runner = CliRunner()
    r = runner.invoke(app, ["--threads", "2", "demo", "--data-only", "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    assert torch.get_num_threads() == 2 and current_choice().source == "--threads"
    monkeypatch.setenv(ENV, "1")
    r = runner.invoke(app, ["demo", "--data-only", "--out", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    assert torch.get_num_threads() == 1 and current_choice().source == ENV


@pytest.mark.parametrize("args, env, needle", [
    (["--threads", "0"], {}, "--threads must be a whole number of threads, at least 1, not 0"),
    ([], {ENV: "lots"}, f"{ENV} must be a whole number of threads"),
])
def test_cli_bad_thread_counts_exit_2_in_one_line(tmp_path, monkeypatch, args, env, needle, keep_torch_threads):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    out = tmp_path / "demo"
    r = CliRunner().invoke(app, [*args, "demo", "--data-only", "--out", str(out)])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("privaudit: error: ") and needle in lines[0], r.stderr
    assert "Traceback" not in r.output
    assert not out.exists()  # refused before any work
