"""Data-parallel training under torchrun: 2 CPU processes (gloo) against one process, same global batch.

Measured tolerance (torch 2.14, CPU, gloo; 2 epochs of a 32 px U-Net, ngf 4): the per-epoch mean
losses agree within 1e-7, the generator's outputs within 1e-6, and all weights but a few isolated
elements within 1e-7 (DP-SGD: all within 1e-8). The float order of the gradient sum differs, and
Adam turns that into update differences of up to about 1% of a step (--lr 2e-4: 2.5e-6 measured)
where a gradient element is near zero; the test allows 1e-5 (5% of a step). The biases of
convolutions followed by InstanceNorm are left out: their true gradient is 0 (the norm removes
them), so Adam steps them on float noise alone, by up to --lr per step, which changes no output.
The U-Nets here (32 px) have no dropout layer; with dropout the runs agree in distribution only.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from privaudit import distributed
from privaudit.cli.app import app
from privaudit.errors import InputError
from privaudit.models.checkpoint import load_model

from conftest import write_pairs

pytestmark = pytest.mark.slow

runner = CliRunner()
TINY = ["--ngf", "4", "--ndf", "4", "--norm", "instance", "--no-augment", "--batch-size", "4", "--seed", "3", "--keep-state", "--quiet"]
LOSS_TOL = 1e-6
OUTPUT_TOL = 1e-5
WEIGHT_TOL = 1e-5


def torchrun(args: list[str], cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PRIVAUDIT_NO_PROGRESS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), "-m", "privaudit", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def one_process(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output


def state(path: Path) -> dict:
    return torch.load(path.with_name(path.name + ".state"), weights_only=True)


def assert_same_run(a: Path, b: Path, inputs: torch.Tensor) -> None:
    """Same loss trajectory, same generator outputs, same weights (see the module's note) for the runs that wrote ``a`` and ``b``."""
    sa, sb = state(a), state(b)
    assert sa["epoch"] == sb["epoch"]
    assert [h["epoch"] for h in sa["history"]] == [h["epoch"] for h in sb["history"]]
    for ha, hb in zip(sa["history"], sb["history"]):
        assert ha["losses"].keys() == hb["losses"].keys()
        for k in ha["losses"]:
            assert ha["losses"][k] == pytest.approx(hb["losses"][k], abs=LOSS_TOL), k
    ga, gb = load_model(a, device="cpu"), load_model(b, device="cpu")
    with torch.no_grad():
        oa, ob = ga.module(inputs), gb.module(inputs)
    assert float((oa - ob).abs().max()) < OUTPUT_TOL
    for key in ("generator", "discriminator"):
        for name, t in sa[key].items():
            diff = float((t.float() - sb[key][name].float()).abs().max())
            if name.endswith(".bias") and diff >= WEIGHT_TOL:
                continue  # a bias before InstanceNorm: no gradient, no effect (module note)
            assert diff < WEIGHT_TOL, (key, name, diff)


def tiny_inputs() -> torch.Tensor:
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_train_two_processes_equals_one_and_resumes_in_one(tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "data", 11)  # the last batch of 4 holds 3 pairs: shards of 2 and 1
    two = tmp_path / "two"
    two.mkdir()
    torchrun(["train", str(data), "--out", str(two / "g.pt"), "--epochs", "2", "--direction", "AtoB", *TINY], tmp_path)
    # Rank 0 alone wrote: one checkpoint and its (kept) state, nothing else.
    assert sorted(p.name for p in two.iterdir()) == ["g.pt", "g.pt.state"]
    ckpt = torch.load(two / "g.pt", weights_only=True)
    assert ckpt["provenance"]["distributed"] == {"world_size": 2, "global_batch": 4, "per_process_batch": 2}
    one = tmp_path / "one" / "g.pt"
    one.parent.mkdir()
    one_process(["train", str(data), "--out", str(one), "--epochs", "2", "--direction", "AtoB", *TINY])
    assert torch.load(one, weights_only=True)["provenance"]["distributed"] == {"world_size": 1, "global_batch": 4, "per_process_batch": 4}
    assert_same_run(two / "g.pt", one, tiny_inputs())

    # A state written by 2 processes after epoch 1 resumes in 1 process to the same run.
    half = tmp_path / "half" / "g.pt"
    half.parent.mkdir()
    torchrun(["train", str(data), "--out", str(half), "--epochs", "1", "--direction", "AtoB", *TINY], tmp_path)
    one_process(["train", str(data), "--out", str(half), "--epochs", "2", "--direction", "AtoB", "--resume", *TINY])
    assert_same_run(half, one, tiny_inputs())


def test_akd_two_processes_equals_one(tmp_path: Path, tiny_checkpoint: Path) -> None:
    proxy = write_pairs(tmp_path / "proxy", 9, seed=1)  # the last batch holds 1 proxy image: one process gets none
    args = ["defend", "--method", "akd", str(tiny_checkpoint), "--proxy", str(proxy), "--epochs", "2", "--lambda-l1", "10", *TINY]
    two = tmp_path / "two"
    two.mkdir()
    torchrun([*args, "--out", str(two / "s.pt")], tmp_path)
    assert sorted(p.name for p in two.iterdir()) == ["s.pt", "s.pt.state"]
    one = tmp_path / "one.pt"
    one_process([*args, "--out", str(one)])
    assert_same_run(two / "s.pt", one, tiny_inputs())


def test_global_batch_must_divide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert distributed.per_process_batch(4) == 2
    assert not distributed.is_main()
    with pytest.raises(InputError, match="--batch-size 3 is the global batch and must be a multiple of the 2 processes"):
        distributed.per_process_batch(3)


def test_shard_union_is_the_batch() -> None:
    idx = torch.tensor([7, 2, 5])
    assert distributed.shard(idx) == (idx, 3)  # no process group: the whole batch


def test_dpsgd_two_processes_equals_one_same_epsilon_and_resumes_in_one(tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "data", 9)  # 9 pairs: Poisson draws of odd sizes, shards of unequal sizes
    args = ["defend", "--method", "dpsgd", "--train-data", str(data), "--direction", "AtoB", "--noise-multiplier", "1.0", *TINY]
    args.remove("--norm"), args.remove("instance")  # DP-SGD uses GroupNorm
    two = tmp_path / "two"
    two.mkdir()
    torchrun([*args, "--epochs", "2", "--out", str(two / "dp.pt")], tmp_path)
    assert sorted(p.name for p in two.iterdir()) == ["dp.pt", "dp.pt.state"]
    one = tmp_path / "one.pt"
    one_process([*args, "--epochs", "2", "--out", str(one)])
    assert_same_run(two / "dp.pt", one, tiny_inputs())
    ca, cb = torch.load(two / "dp.pt", weights_only=True), torch.load(one, weights_only=True)
    assert ca["defense"]["epsilon"] == cb["defense"]["epsilon"] > 0  # the global Poisson batch's ε, exactly
    assert ca["defense"]["sample_rate"] == cb["defense"]["sample_rate"]
    assert state(two / "dp.pt")["accountant"] == state(one)["accountant"]
    assert ca["provenance"]["distributed"]["world_size"] == 2

    half = tmp_path / "half" / "dp.pt"
    half.parent.mkdir()
    torchrun([*args, "--epochs", "1", "--out", str(half)], tmp_path)
    one_process([*args, "--epochs", "2", "--resume", "--out", str(half)])
    assert_same_run(half, one, tiny_inputs())
    assert torch.load(half, weights_only=True)["defense"]["epsilon"] == cb["defense"]["epsilon"]


def test_gauss_trains_nothing_under_torchrun(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from privaudit.defenses import defend

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(InputError, match="--method gauss trains nothing"):
        defend("gauss", out=tmp_path / "g.pt", teacher=tmp_path / "m.pt")
    assert not any(tmp_path.iterdir())


def test_references_split_across_processes(tmp_path: Path) -> None:
    """Each of 2 processes trains its share of 4 references (rank r: r, r + 2); the manifest, written
    once by rank 0, lists all 4, and each reference is bit-identical to the one-process build's."""
    members = write_pairs(tmp_path / "m", 8, seed=1, prefix="m")
    pop = write_pairs(tmp_path / "p", 8, seed=2, prefix="p")
    teacher = tmp_path / "teacher.pt"
    # --batch-size 1 (pix2pix's): each reference trains alone, so it need not divide by the 2 processes
    one_process(["train", str(members), "--direction", "AtoB", "--size", "32", "--epochs", "1", *TINY, "--batch-size", "1", "--out", str(teacher)])
    args = ["references", str(teacher), "--population", str(pop), "--count", "4", "--seed", "7", "--device", "cpu", "--quiet"]
    torchrun([*args, "--out", str(tmp_path / "two")], tmp_path)
    one_process([*args, "--out", str(tmp_path / "one")])
    import json

    two = json.loads((tmp_path / "two" / "references.json").read_text())
    one = json.loads((tmp_path / "one" / "references.json").read_text())
    assert [e["index"] for e in two["references"]] == [0, 1, 2, 3]
    for a, b in zip(two["references"], one["references"]):
        assert (a["file"], a["pairs"], a["seed"]) == (b["file"], b["pairs"], b["seed"])
        wa, wb = (load_model(root / e["file"], device="cpu").module.state_dict() for root, e in ((tmp_path / "two", a), (tmp_path / "one", b)))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(["references.json", "ref-000.pt", "ref-001.pt", "ref-002.pt", "ref-003.pt"])
    # a rerun under torchrun reuses all four
    proc = torchrun([*args, "--out", str(tmp_path / "two")], tmp_path)
    assert json.loads((tmp_path / "two" / "references.json").read_text())["references"] == two["references"]
