"""The files in examples/ stay true to the CLI: the CI configs parse, every `privaudit <command>
--flag` they show exists, and the pix2pix checkpoint-audit script runs end to end."""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import typer

from conftest import write_pairs
from privaudit.cli.app import app
from privaudit.models.arch import UnetArch
from privaudit.models.networks import UnetGenerator

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPT = EXAMPLES / "audit_pix2pix_checkpoints.sh"
DOC_FILES = sorted([*EXAMPLES.glob("*.yml"), *EXAMPLES.glob("*.sh"), EXAMPLES / "README.md"])

COMMANDS = typer.main.get_command(app).commands  # name -> click.Command

# `privaudit <word>`: not part of a path or a longer name (examples/privaudit.toml,
# .cache/privaudit/, privaudit-demo, PRIVAUDIT_...), and on one (logical) line.
INVOCATION = re.compile(r"(?<![\w./-])privaudit[ \t]+([a-z][a-z-]*)(.*)")
# Where a command ends: a Markdown code span, a shell separator, a redirection or a comment.
END = re.compile(r"`|'|;|&&|\|\||\||\s\d?>>?[&\s]|\)|\s#")
FLAG = re.compile(r"(?<![\w-])(--[a-zA-Z][\w-]*|-[a-zA-Z])(?![\w-])")


def _logical_lines(text: str) -> list[str]:
    """Lines with shell continuations (backslash-newline) joined."""
    return re.sub(r"\\\n\s*", " ", text).splitlines()


def _invocations(path: Path) -> list[tuple[str, list[str], str]]:
    """(command, flags, line) for every `privaudit <command> ...` in ``path``."""
    found = []
    for line in _logical_lines(path.read_text(encoding="utf-8")):
        for m in INVOCATION.finditer(line):
            word, rest = m.group(1), m.group(2)
            end = END.search(rest)
            if end is not None:
                rest = rest[: end.start()]
            found.append((word, FLAG.findall(rest), line.strip()))
    return found


def _options(command: str) -> set[str]:
    opts: set[str] = set()
    for param in COMMANDS[command].params:
        opts.update(param.opts)
        opts.update(param.secondary_opts)
    return opts | {"--help"}


def test_example_files_exist():
    for name in ("github-actions.yml", "gitlab-ci.yml", "audit_pix2pix_checkpoints.sh", "README.md", "privaudit.toml"):
        assert (EXAMPLES / name).is_file(), name


def _problems(path: Path) -> list[str]:
    """Misspelt commands and flags a command does not have, one message each."""
    problems = []
    for word, flags, line in _invocations(path):
        if word not in COMMANDS:
            # Prose ("privaudit never downloads") is fine; a misspelt command is not.
            close = difflib.get_close_matches(word, list(COMMANDS), n=1, cutoff=0.75)
            if close:
                problems.append(f"'privaudit {word}' (did you mean {close[0]}?): {line}")
            continue
        unknown = [f for f in flags if f not in _options(word)]
        if unknown:
            problems.append(f"privaudit {word} has no {', '.join(unknown)}: {line}")
    return problems


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.name)
def test_every_privaudit_invocation_uses_real_commands_and_flags(path: Path):
    assert _invocations(path), f"no privaudit invocation found in {path.name}: has the parser gone blind?"
    problems = _problems(path)
    assert not problems, "\n".join(problems)


def test_the_invocation_check_catches_mistakes(tmp_path: Path):
    doc = tmp_path / "doc.sh"
    doc.write_text(
        "privaudit gate r.json --max-aucc 0.6 --junit g.xml\n"
        "privaudit evalute m.pt --members a\n"
        "privaudit attack m.pt --members a \\\n    --nonmember b --json r.json  # a comment --not-a-flag\n"
        "privaudit never downloads: pass --inception-weights\n"
    )
    problems = _problems(doc)
    assert len(problems) == 3, problems
    verdicts = [p.split(":")[0] for p in problems]  # without the quoted line
    assert verdicts[0] == "privaudit gate has no --max-aucc"
    assert "did you mean evaluate?" in verdicts[1]
    assert verdicts[2] == "privaudit attack has no --nonmember"


def test_ci_examples_run_the_documented_pipeline():
    def flags(path: Path) -> dict[str, set[str]]:
        """command -> the union of the flags used with it in ``path``."""
        out: dict[str, set[str]] = {}
        for word, fl, _ in _invocations(path):
            out.setdefault(word, set()).update(fl)
        return out

    for name in ("github-actions.yml", "gitlab-ci.yml"):
        used = flags(EXAMPLES / name)
        assert {"--members", "--nonmembers", "--json"} <= used["evaluate"], name
        assert {"--policy", "--junit", "--markdown"} <= used["gate"], name
    script = flags(SCRIPT)
    assert {"--members", "--nonmembers", "--direction", "--json", "--quiet"} <= script["attack"]
    assert {"--markdown", "--plot"} <= script["report"]


def test_ci_yaml_parses():
    yaml = pytest.importorskip("yaml")
    gh = yaml.safe_load((EXAMPLES / "github-actions.yml").read_text(encoding="utf-8"))
    # YAML 1.1 (PyYAML) reads the key `on` as True.
    triggers = gh.get("on", gh.get(True))
    assert "pull_request" in triggers and "tags" in triggers["push"]
    steps = gh["jobs"]["audit"]["steps"]
    uses = [s.get("uses", "") for s in steps]
    assert any(u.startswith("actions/checkout@") for u in uses)
    assert any(u.startswith("actions/setup-python@") for u in uses)
    assert any(u.startswith("actions/cache") for u in uses)
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()"
    assert "report.json" in upload["with"]["path"] and "gate.xml" in upload["with"]["path"]
    assert "PRIVAUDIT_INCEPTION_WEIGHTS" in gh["env"]

    gl = yaml.safe_load((EXAMPLES / "gitlab-ci.yml").read_text(encoding="utf-8"))
    job = gl["privacy-audit"]
    assert job["artifacts"]["when"] == "always"
    assert job["artifacts"]["reports"]["junit"] == "gate.xml"
    assert any("privaudit gate" in line for line in job["script"])


def test_shell_script_syntax():
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not available")
    subprocess.run([bash, "-n", str(SCRIPT)], check=True)


# ---------------------------------------------------------------------------------------------
# the checkpoint-audit script, end to end on a tiny fake pix2pix run


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PRIVAUDIT_NO_PROGRESS"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    return env


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not available")
    return subprocess.run([bash, str(SCRIPT), *args], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)


@pytest.fixture
def dataroot(tmp_path: Path) -> Path:
    root = tmp_path / "datasets" / "facades"
    write_pairs(root / "train", 4, size=32, seed=1, prefix="tr")
    write_pairs(root / "test", 4, size=32, seed=2, prefix="te")
    return root


@pytest.mark.slow
def test_audit_script_on_a_pix2pix_run(tmp_path: Path, dataroot: Path):
    ckpt_dir = tmp_path / "checkpoints" / "facades"
    ckpt_dir.mkdir(parents=True)
    torch.manual_seed(0)
    for name in ("latest", "5"):  # pix2pix's bare state_dicts
        torch.save(UnetGenerator(UnetArch(num_downs=5, ngf=4)).state_dict(), ckpt_dir / f"{name}_net_G.pth")
    (ckpt_dir / "5_net_D.pth").write_bytes(b"not a generator: must be ignored")

    result = _run(tmp_path, str(ckpt_dir), str(dataroot), "--direction", "AtoB", "--", "--device", "cpu", "--allow-small")
    assert result.returncode == 0, result.stderr

    out = tmp_path / "privaudit-audit" / "facades"
    for name in ("5", "latest"):
        report = json.loads((out / f"{name}.json").read_text())
        assert report["schema"] == "privaudit.report/1"
        assert report["data"]["members"]["count"] == 4 and report["data"]["nonmembers"]["count"] == 4
        assert 0.0 <= report["attack"]["auc"] <= 1.0
    table = (out / "audit.md").read_text()
    assert table.index("| 5 |") < table.index("| latest |"), "epochs in training order, latest last"
    assert (out / "tradeoff.png").stat().st_size > 0
    assert str(out / "audit.md") in result.stdout or "audit.md" in result.stdout


def test_audit_script_without_checkpoints_exits_2(tmp_path: Path, dataroot: Path):
    empty = tmp_path / "checkpoints" / "empty"
    empty.mkdir(parents=True)
    result = _run(tmp_path, str(empty), str(dataroot))
    assert result.returncode == 2
    assert "no *_net_G.pth" in result.stderr
    assert not (tmp_path / "privaudit-audit").exists()


@pytest.mark.parametrize(
    "args",
    [[], ["only-one"], ["{ckpt}", "{data}", "--direction", "sideways"], ["{ckpt}", "{data}", "--bogus"], ["{ckpt}", "{missing}"]],
    ids=["no-args", "one-arg", "bad-direction", "unknown-option", "no-train-split"],
)
def test_audit_script_usage_errors_exit_2(tmp_path: Path, dataroot: Path, args: list[str]):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    args = [a.format(ckpt=ckpt, data=dataroot, missing=tmp_path / "nowhere") for a in args]
    result = _run(tmp_path, *args)
    assert result.returncode == 2, result.stderr
    assert "usage:" in result.stderr
    assert "Traceback" not in result.stderr


def _pix2pix_run(tmp_path: Path) -> Path:
    ckpt_dir = tmp_path / "checkpoints" / "facades"
    ckpt_dir.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(UnetGenerator(UnetArch(num_downs=5, ngf=4)).state_dict(), ckpt_dir / "latest_net_G.pth")
    return ckpt_dir


@pytest.mark.slow
def test_audit_script_reads_the_direction_from_the_runs_train_opt(tmp_path: Path, dataroot: Path):
    ckpt_dir = _pix2pix_run(tmp_path)
    # as pix2pix's BaseOptions.print_options writes it
    (ckpt_dir / "train_opt.txt").write_text(
        "----------------- Options ---------------\n"
        "               batch_size: 1                             \n"
        "                direction: BtoA                          \t[default: AtoB]\n"
        "----------------- End -------------------\n"
    )
    result = _run(tmp_path, str(ckpt_dir), str(dataroot), "--", "--device", "cpu", "--allow-small")
    assert result.returncode == 0, result.stderr
    assert "direction BtoA, from" in result.stderr
    report = json.loads((tmp_path / "privaudit-audit" / "facades" / "latest.json").read_text())
    assert report["data"]["direction"] == "BtoA"


def test_audit_script_without_a_known_direction_exits_2(tmp_path: Path, dataroot: Path):
    ckpt_dir = _pix2pix_run(tmp_path)
    result = _run(tmp_path, str(ckpt_dir), str(dataroot))
    assert result.returncode == 2
    assert "pass --direction AtoB or BtoA" in result.stderr and "usage:" in result.stderr
    assert not (tmp_path / "privaudit-audit").exists()
