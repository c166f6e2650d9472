"""The exit-code contract: 0 success, 1 threshold crossed, 2 bad input or environment (one line),
3 a bug (traceback kept, "please report")."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import write_pairs
from privaudit.cli.app import app
from privaudit.errors import EXIT_BAD_INPUT, EXIT_INTERNAL

runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("d")
    write_pairs(root / "m", 10, seed=1)
    write_pairs(root / "n", 10, seed=2)
    return root


def _one_line(result, code: int, needle: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert needle in lines[0], lines[0]


def test_a_bug_exits_3_with_its_traceback_and_asks_for_a_report(tiny_checkpoint, data, monkeypatch):
    import privaudit.attacks.reconstruction as rec

    def broken(*args, **kwargs):
        raise ZeroDivisionError("an invariant broke")

    monkeypatch.setattr(rec, "attack_metrics", broken)
    r = runner.invoke(app, ["attack", str(tiny_checkpoint), "--members", str(data / "m"), "--nonmembers", str(data / "n"), "--quiet"])
    assert r.exit_code == EXIT_INTERNAL, r.output
    assert "Traceback" in r.stderr and "ZeroDivisionError" in r.stderr
    assert "please report" in r.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("code,needle", [(errno.ENOSPC, "No space left on device"), (errno.EACCES, "Permission denied")])
def test_a_full_disk_or_a_denied_write_exits_2_and_leaves_nothing(tiny_checkpoint, data, tmp_path, monkeypatch, code, needle):
    real_replace = os.replace

    def failing_replace(src, dst, *a, **k):
        if str(dst).endswith(".json"):
            raise OSError(code, os.strerror(code))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", failing_replace)
    out = tmp_path / "r.json"
    r = runner.invoke(app, ["attack", str(tiny_checkpoint), "--members", str(data / "m"), "--nonmembers", str(data / "n"), "--quiet", "--json", str(out)])
    _one_line(r, EXIT_BAD_INPUT, needle)
    assert str(out) in r.stderr
    assert list(tmp_path.iterdir()) == []  # neither the report nor a temporary file


def test_a_full_disk_while_saving_a_checkpoint_exits_2(data, tmp_path, monkeypatch):
    real_replace = os.replace

    def failing_replace(src, dst, *a, **k):
        if str(dst).endswith(".pt"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", failing_replace)
    out = tmp_path / "t.pt"
    r = runner.invoke(app, ["train", str(data / "m"), "--out", str(out), "--epochs", "1", "--ngf", "4", "--ndf", "4", "--batch-size", "4", "--no-augment", "--device", "cpu", "--quiet"])
    _one_line(r, EXIT_BAD_INPUT, "No space left on device")
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_out_of_memory_exits_2_with_a_hint(tiny_checkpoint, data, monkeypatch):
    import privaudit.attacks.reconstruction as rec

    def oom(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(rec, "attack_metrics", oom)
    r = runner.invoke(app, ["attack", str(tiny_checkpoint), "--members", str(data / "m"), "--nonmembers", str(data / "n"), "--quiet"])
    _one_line(r, EXIT_BAD_INPUT, "out of memory")


def test_stale_temporaries_of_a_killed_writer_are_removed(tmp_path):
    from privaudit.io import atomic_write_text

    target = tmp_path / "report.json"
    dead = tmp_path / ".report.json.999999999.abcd.tmp"  # no such PID
    dead.write_text("half")
    alive = tmp_path / f".report.json.{os.getppid()}.efgh.tmp"  # a live process's write in progress
    alive.write_text("half")
    atomic_write_text(target, "{}")
    assert target.read_text() == "{}"
    assert not dead.exists()
    assert alive.exists()
