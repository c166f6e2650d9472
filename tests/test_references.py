"""privaudit references: recipes, reference models that replay them, their manifest, and loading
them back for the calibrated attacks.

Everything is tiny: 32x32 pairs, U-Nets with ngf 4, 6 pairs per folder, 1-2 epochs.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import TINY_ARCH, tiny_generator, write_pairs
from privaudit.attacks.reconstruction import AttackConfig, reconstruction_losses
from privaudit.cli.app import app
from privaudit.data.images import data_fingerprint, load_pairs
from privaudit.defenses import defend
from privaudit.defenses.distill import DistillOptions
from privaudit.defenses.dpsgd import DPSGDOptions
from privaudit.defenses.gauss import GaussOptions
from privaudit.errors import CheckpointError, DataError, InputError
from privaudit.io import sha256_file
from privaudit.models.checkpoint import load_model, save_checkpoint
from privaudit.models.arch import ModelSpec
from privaudit.references import MANIFEST_SCHEMA, RecipeFlags, balanced_assignment, build_references, load_references, read_recipe
from privaudit.references.build import hex_hashes
from privaudit.training import TrainConfig, train

runner = CliRunner()
N = 6  # pairs per folder
SEED = 5


def _bad(result, needle: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("privaudit: error: "), result.stderr
    assert needle in lines[0], lines[0]


def _pairs(folder: Path):
    return load_pairs(folder, size=32)


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "references.json").read_text())


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _teacher(data: Path, out: Path, seed: int = 0) -> Path:
    # 2 epochs of 2 steps: enough to interrupt a run between epochs
    train(data, out, direction="AtoB", size=32, model=ModelSpec(ngf=4, num_downs=5),
          config=TrainConfig(epochs=2, batch_size=3, augment=False, ndf=4, seed=seed, device="cpu"))
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Members m (the teacher's training pairs), non-members n and extra population p, the
    teacher, and an offline build of 3 references on n + p (seed 5). Read-only."""
    root = tmp_path_factory.mktemp("refs_world")
    w = {"m": write_pairs(root / "m", N, seed=1, prefix="m"), "n": write_pairs(root / "n", N, seed=2, prefix="n"),
         "p": write_pairs(root / "p", N, seed=3, prefix="p")}
    w["teacher"] = _teacher(w["m"], root / "teacher.pt")
    w["offline"] = root / "offline"
    build_references(w["teacher"], population=[w["n"], w["p"]], count=3, out=w["offline"], seed=SEED, device="cpu")
    return w


# ---------------------------------------------------------------------------------------------
# recipes


def test_recipe_of_a_privaudit_checkpoint(world):
    r = read_recipe(load_model(world["teacher"]))
    assert (r.kind, r.image_size, r.direction, r.train_count, r.source) == ("pix2pix", 32, "AtoB", N, "model")
    assert (r.arch.ngf, r.arch.num_downs, r.arch.norm) == (4, 5, "batch")
    assert (r.training.epochs, r.training.batch_size, r.training.ndf, r.training.augment) == (2, 3, 4, False)
    assert r.trained_on.path == str(world["m"]) and r.trained_on.sha256 == data_fingerprint(_pairs(world["m"]))
    # the key ignores the run's seed and where its data was, and only those
    r2 = read_recipe(load_model(_teacher(world["p"], world["m"].parent / "t_other.pt", seed=9)))
    assert r2.recipe_key() == r.recipe_key() and r2.trained_on != r.trained_on
    assert len(r.recipe_key()) == 16
    with pytest.raises(InputError, match="drop --epochs"):
        read_recipe(load_model(world["teacher"]), flags=RecipeFlags(epochs=3))
    assert read_recipe(load_model(world["teacher"]), flags=RecipeFlags(epochs=2)) == r  # repeating a recorded value is fine


def test_bare_state_dict_needs_its_recipe_from_flags(world, tmp_path):
    pth = tmp_path / "latest_net_G.pth"
    torch.save(torch.load(world["teacher"], weights_only=True)["state_dict"], pth)
    with pytest.raises(InputError) as e:
        read_recipe(load_model(pth))
    assert all(f in str(e.value) for f in ("--epochs", "--size", "--direction", "--train-count"))
    flags = RecipeFlags(epochs=2, batch_size=3, ndf=4, augment=False, size=32, direction="AtoB", train_count=N)
    r = read_recipe(load_model(pth), flags=flags)
    assert r.source == "model and flags" and r.recipe_key() == read_recipe(load_model(world["teacher"])).recipe_key()
    # it records no training set: offline references need --exclude
    with pytest.raises(InputError, match="--exclude"):
        build_references(pth, population=[world["n"]], count=1, out=tmp_path / "r", flags=flags, device="cpu")
    assert not (tmp_path / "r").exists()
    res = build_references(pth, population=[world["n"]], count=1, out=tmp_path / "r", flags=flags, exclude=[world["m"]], device="cpu")
    assert res.trained == [0] and res.manifest["excluded"][0]["from"] == "--exclude"


# ---------------------------------------------------------------------------------------------
# building: offline, online, rerun, interruption


def test_offline_manifest_bookkeeping(world):
    m = _manifest(world["offline"])
    population = set(hex_hashes(_pairs(world["n"])) + hex_hashes(_pairs(world["p"])))
    assert m["schema"] == MANIFEST_SCHEMA and (m["mode"], m["count"], m["seed"]) == ("offline", 3, SEED)
    assert m["population"]["count"] == 2 * N and [f["count"] for f in m["population"]["folders"]] == [N, N]
    assert m["excluded"] == [{"path": str(world["m"]), "count": N, "verified": True, "from": "recorded training set"}]
    assert m["target"]["sha256"] == sha256_file(world["teacher"])
    assert m["target"]["recipe"]["recipe_key"] == read_recipe(load_model(world["teacher"])).recipe_key()
    refs = m["references"]
    assert [r["file"] for r in refs] == ["ref-000.pt", "ref-001.pt", "ref-002.pt"] and [r["seed"] for r in refs] == [5, 6, 7]
    samples = [frozenset(r["pairs"]) for r in refs]
    assert all(len(s) == N == r["count"] for s, r in zip(samples, refs)) and all(s <= population for s in samples)
    assert len(set(samples)) == 3  # different references train on different samples
    for r in refs:
        path = world["offline"] / r["file"]
        ckpt = torch.load(path, weights_only=True)
        assert r["sha256"] == sha256_file(path)
        assert ckpt["provenance"]["training"]["seed"] == r["seed"] and ckpt["provenance"]["trained_on"]["count"] == N
        assert ckpt["arch"] == load_model(world["teacher"]).arch and ckpt["training"]["complete"] is True
        assert not Path(str(path) + ".state").exists()
    assert not _same_weights(world["offline"] / "ref-000.pt", world["offline"] / "ref-001.pt")


def test_balanced_assignment():
    a = balanced_assignment(13, 6, seed=1)
    assert a.shape == (13, 6) and (a.sum(axis=1) == 3).all() and set(a.sum(axis=0)) <= {6, 7}
    assert np.array_equal(a, balanced_assignment(13, 6, seed=1)) and not np.array_equal(a, balanced_assignment(13, 6, seed=2))


def test_online_each_sample_is_in_for_half(world, tmp_path):
    res = build_references(world["teacher"], population=[world["m"], world["n"]], count=4, out=tmp_path / "on", online=True, seed=SEED, device="cpu")
    m = res.manifest
    assert m["mode"] == "online" and m["population"]["members"] == N and m["excluded"] == []
    counts: dict[str, int] = {}
    for r in m["references"]:
        assert r["count"] == N  # 12 pairs, each IN for 2 of 4: 6 per reference
        for h in r["pairs"]:
            counts[h] = counts.get(h, 0) + 1
    assert sorted(counts) == sorted(hex_hashes(_pairs(world["m"])) + hex_hashes(_pairs(world["n"]))) and set(counts.values()) == {2}
    refs = load_references(tmp_path / "on", load_model(world["teacher"]))
    inside = refs.inside(_pairs(world["m"]))
    assert inside.shape == (N, 4) and (inside.sum(axis=1) == 2).all()
    assert refs.supports("lira-online", _pairs(world["m"])) is None and refs.supported() == ["loss", "reference-only", "calibrated", "lira-offline",
                                                                                          "lira-online"]


def test_rerun_reuses_finished_references_and_count_can_grow(world, tmp_path):
    out = tmp_path / "r"
    build_references(world["teacher"], population=[world["n"], world["p"]], count=2, out=out, seed=SEED, device="cpu")
    stamp = {f: (f.stat().st_mtime_ns, sha256_file(f)) for f in out.glob("ref-*.pt")}
    res = build_references(world["teacher"], population=[world["p"], world["n"]], count=2, out=out, seed=SEED, device="cpu")  # folder order is irrelevant
    assert (res.trained, res.reused) == ([], [0, 1])
    assert {f: (f.stat().st_mtime_ns, sha256_file(f)) for f in out.glob("ref-*.pt")} == stamp
    res = build_references(world["teacher"], population=[world["n"], world["p"]], count=3, out=out, seed=SEED, device="cpu")
    assert (res.trained, res.reused) == ([2], [0, 1]) and len(_manifest(out)["references"]) == 3
    # the same seed gives the same samples and, on the CPU, the same weights
    for k in range(3):
        assert _manifest(out)["references"][k]["pairs"] == _manifest(world["offline"])["references"][k]["pairs"]
        assert _same_weights(out / f"ref-{k:03d}.pt", world["offline"] / f"ref-{k:03d}.pt")
    with pytest.raises(InputError, match="another --seed"):
        build_references(world["teacher"], population=[world["n"], world["p"]], count=3, out=out, seed=SEED + 1, device="cpu")


def test_another_seed_draws_other_samples(world, tmp_path):
    res = build_references(world["teacher"], population=[world["n"], world["p"]], count=3, out=tmp_path / "r", seed=SEED + 10, device="cpu")
    ours = [frozenset(r["pairs"]) for r in res.manifest["references"]]
    assert ours != [frozenset(r["pairs"]) for r in _manifest(world["offline"])["references"]]


class _Stop(Exception):
    pass


def test_interrupted_run_continues_where_it_stopped(world, tmp_path):
    out = tmp_path / "r"
    seen = []

    def stop_in_second_epoch_of_second_reference(done: int, total: int, epoch: int, epochs: int) -> None:
        seen.append((done, epoch))
        if (done, epoch) == (1, 1) and seen.count((1, 1)) == 2:  # the first step of epoch 2: epoch 1 is saved
            raise _Stop

    with pytest.raises(_Stop):
        build_references(world["teacher"], population=[world["n"], world["p"]], count=2, out=out, seed=SEED, device="cpu",
                         on_progress=stop_in_second_epoch_of_second_reference)
    assert [r["file"] for r in _manifest(out)["references"]] == ["ref-000.pt"]
    assert torch.load(out / "ref-001.pt", weights_only=True)["training"] == {"complete": False, "epochs_done": 1, "epochs_total": 2}
    assert (out / "ref-001.pt.state").exists()
    first = (out / "ref-000.pt").stat().st_mtime_ns
    res = build_references(world["teacher"], population=[world["n"], world["p"]], count=2, out=out, seed=SEED, device="cpu")
    assert (res.trained, res.reused) == ([1], [0]) and (out / "ref-000.pt").stat().st_mtime_ns == first
    assert not (out / "ref-001.pt.state").exists()
    assert _same_weights(out / "ref-001.pt", world["offline"] / "ref-001.pt")  # resumed = uninterrupted


# ---------------------------------------------------------------------------------------------
# refused inputs


def test_population_holding_members_is_refused_and_nothing_written(world, tmp_path):
    out = tmp_path / "refs"
    result = runner.invoke(app, ["references", str(world["teacher"]), "--population", str(world["n"]), str(world["m"]), "--count", "2",
                                 "--out", str(out), "--device", "cpu", "--quiet"])
    _bad(result, f"{N} of the {2 * N} population pairs are pairs {world['teacher']} was trained on")
    assert not out.exists()
    with pytest.raises(DataError):  # the same pairs under other names are still the members
        shutil.copytree(world["m"], tmp_path / "renamed")
        for f in (tmp_path / "renamed").iterdir():
            f.rename(f.with_name("x" + f.name))
        build_references(world["teacher"], population=[tmp_path / "renamed"], count=1, out=out, device="cpu")
    assert not out.exists()


@pytest.mark.parametrize("count, needle", [("3", "even --count"), ("0", "--count"), ("1", "even --count")])
def test_online_count_must_be_even(world, tmp_path, count, needle):
    out = tmp_path / "refs"
    result = runner.invoke(app, ["references", str(world["teacher"]), "--population", str(world["m"]), "--population", str(world["n"]), "--online",
                                 "--count", count, "--out", str(out), "--device", "cpu", "--quiet"])
    _bad(result, needle)
    assert not out.exists()


def _target(tmp_path: Path, name: str, *, arch=TINY_ARCH, size: int = 32, direction: str = "AtoB") -> object:
    path = tmp_path / name
    save_checkpoint(path, generator=tiny_generator(arch), image_size=size, direction=direction)
    return load_model(path)


def test_references_of_another_model_are_refused_at_load(world, tmp_path):
    from dataclasses import replace

    for target, needle in [(_target(tmp_path, "wide.pt", arch=replace(TINY_ARCH, ngf=8)), "ngf=8"),
                           (_target(tmp_path, "big.pt", size=64), "audited at 64 px"),
                           (_target(tmp_path, "flipped.pt", direction="BtoA"), "audited BtoA"),
                           (_target(tmp_path, "same_arch.pt"), "holds references built for")]:
        with pytest.raises(CheckpointError, match="build references for") as e:
            load_references(world["offline"], target)
        assert needle in str(e.value)
    # another model of the same recipe (the teacher trained again with another seed) may use them, and is told so
    retrained = load_model(_teacher(world["m"], tmp_path / "again.pt", seed=3))
    refs = load_references(world["offline"], retrained)
    assert refs.target_matches is False and "same recipe" in refs.notes[0]


def _copy(world, tmp_path: Path) -> Path:
    folder = tmp_path / "refs"
    shutil.copytree(world["offline"], folder)
    return folder


def test_manifest_that_does_not_match_its_files_is_refused(world, tmp_path):
    folder = _copy(world, tmp_path)
    teacher = load_model(world["teacher"])
    ckpt = torch.load(folder / "ref-001.pt", weights_only=True)
    ckpt["provenance"]["created"] = "another day"
    torch.save(ckpt, folder / "ref-001.pt")
    with pytest.raises(CheckpointError, match="ref-001.pt does not match .*references.json .its sha256 differs"):
        load_references(folder, teacher)
    m = _manifest(world["offline"])
    for change, needle in [({"references": m["references"][:2]}, "holds 2 of the 3 references"),
                           ({"schema": "privaudit.references/9"}, "is not a privaudit.references/1 manifest"),
                           ({"references": [{**m["references"][0], "file": "../ref-000.pt"}, *m["references"][1:]]}, "not a file in")]:
        (folder / "references.json").write_text(json.dumps({**m, **change}))
        with pytest.raises(CheckpointError, match=needle):
            load_references(folder, teacher)
    (folder / "references.json").unlink()
    with pytest.raises(CheckpointError, match="holds no references.json"):
        load_references(folder, teacher)


class _Evil:
    """Unpickling this touches ``marker``: code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_reference_file_that_would_run_code_is_refused(world, tmp_path):
    folder = _copy(world, tmp_path)
    marker = tmp_path / "pwned"
    torch.save({"format": "privaudit.checkpoint/1", "x": _Evil(marker)}, folder / "ref-000.pt")
    teacher = load_model(world["teacher"])
    with pytest.raises(CheckpointError, match="sha256 differs"):
        load_references(folder, teacher)
    m = _manifest(folder)  # a manifest forged to match: load_model's vetting still refuses the file
    m["references"][0]["sha256"] = sha256_file(folder / "ref-000.pt")
    (folder / "references.json").write_text(json.dumps(m))
    with pytest.raises(CheckpointError, match="refusing to load .*ref-000.pt"):
        load_references(folder, teacher)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# what the attacks get


def test_losses_inside_and_supports(world, tmp_path):
    teacher = load_model(world["teacher"])
    refs = load_references(world["offline"], teacher)
    assert len(refs) == 3 and refs.mode == "offline" and refs.target_matches and refs.describe()["count"] == 3
    members, nonmembers = _pairs(world["m"]), _pairs(world["n"])
    cfg = AttackConfig(batch_size=4)
    lm, ln = refs.losses_many([members, nonmembers], cfg)
    assert lm.shape == ln.shape == (N, 3)
    for k in range(3):
        assert np.array_equal(lm[:, k], reconstruction_losses(load_model(world["offline"] / f"ref-{k:03d}.pt"), members, cfg))
    assert np.array_equal(refs.losses(nonmembers, cfg), ln)
    assert not refs.inside(members).any()  # offline: no reference saw a member
    pairs = [set(r["pairs"]) for r in _manifest(world["offline"])["references"]]
    assert refs.inside(nonmembers).tolist() == [[h in p for p in pairs] for h in hex_hashes(nonmembers)]
    assert refs.supported(members) == ["loss", "reference-only", "calibrated", "lira-offline"]
    assert "--online" in refs.supports("lira-online")
    with pytest.raises(InputError, match="unknown attack"):
        refs.supports("lira")
    one = build_references(world["teacher"], population=[world["n"]], count=1, out=tmp_path / "one", device="cpu")
    assert "lira-offline needs at least 2 OUT references per sample" in load_references(one.out, teacher).supports("lira-offline")
    two = build_references(world["teacher"], population=[world["m"], world["n"]], count=2, online=True, out=tmp_path / "two", device="cpu")
    with pytest.raises(InputError, match="--online --count 4 or more"):
        load_references(two.out, teacher).check_supports("lira-online", members)
    # every sample lacks both its 2 IN and its 2 OUT references: counted once each
    assert f"{N} of the {N} samples lack them" in load_references(two.out, teacher).supports("lira-online", members)


# ---------------------------------------------------------------------------------------------
# defended models: pipelines


@pytest.fixture(scope="module")
def defended(world, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("defended")
    opts = DistillOptions(epochs=1, batch_size=N, ndf=4, augment=False)
    d = {m: root / f"{m}.pt" for m in ("akd", "dmp")}
    for method, path in d.items():
        defend(method, out=path, teacher=world["teacher"], proxy=world["p"], options=opts, seed=1, device="cpu")
    return d


def test_akd_is_replayed_as_a_pipeline_and_shares_teachers_with_dmp(world, defended, tmp_path):
    akd = load_model(defended["akd"])
    assert akd.defense["teacher"]["recipe"]["training"]["epochs"] == 2  # the teacher's recipe is recorded
    r = read_recipe(akd)
    assert (r.kind, r.teacher.kind, r.params["proxy_count"]) == ("akd", "pix2pix", N)
    assert r.teacher.recipe_key() == read_recipe(load_model(world["teacher"])).recipe_key()
    with pytest.raises(InputError, match="--proxy"):
        build_references(defended["akd"], population=[world["n"]], count=2, out=tmp_path / "a", device="cpu")
    with pytest.raises(DataError, match="distilled on 6"):
        build_references(defended["akd"], population=[world["n"]], count=2, out=tmp_path / "a", proxy=_fewer(world["p"], tmp_path / "few"), device="cpu")
    assert not (tmp_path / "a").exists()
    res = build_references(defended["akd"], population=[world["n"]], count=2, out=tmp_path / "a", proxy=world["p"], seed=SEED, device="cpu")
    assert (res.teachers_trained, res.teachers_reused) == (2, 0)
    teachers = sorted((tmp_path / "a" / "teachers").iterdir())
    assert len(teachers) == 2 and all(t.name.startswith(r.teacher.recipe_key() + "-") for t in teachers)
    for k, entry in enumerate(res.manifest["references"]):
        ref = torch.load(tmp_path / "a" / entry["file"], weights_only=True)
        t_path = tmp_path / "a" / entry["teacher"]["file"]
        t = torch.load(t_path, weights_only=True)
        assert ref["defense"]["method"] == "akd" and ref["defense"]["lambda_l1"] == 100 and ref["defense"]["proxy"]["count"] == N
        assert ref["defense"]["teacher"]["sha256"] == entry["teacher"]["sha256"] == sha256_file(t_path)
        assert t["provenance"]["training"]["seed"] == SEED + k and t["provenance"]["trained_on"]["count"] == N
        assert ref["provenance"]["training"]["seed"] == SEED + k and ref["arch"] == akd.arch
    stamp = {t: t.stat().st_mtime_ns for t in teachers}
    res = build_references(defended["dmp"], population=[world["n"]], count=2, out=tmp_path / "d", proxy=world["p"], seed=SEED, device="cpu",
                           teacher_cache=tmp_path / "a" / "teachers")
    assert (res.teachers_trained, res.teachers_reused) == (0, 2) and {t: t.stat().st_mtime_ns for t in teachers} == stamp
    assert [e["teacher"]["sha256"] for e in res.manifest["references"]] == [sha256_file(t) for t in
                                                                          [tmp_path / "a" / e["teacher"]["file"] for e in _manifest(tmp_path / "a")["references"]]]
    assert torch.load(tmp_path / "d" / "ref-000.pt", weights_only=True)["defense"]["method"] == "dmp"


def test_teachers_references_are_the_pipelines_reference_teachers(world, defended, tmp_path):
    """With a shared --teacher-cache, the plain teacher's reference k and the AKD pipeline's reference
    teacher k are one model (same recipe, sample and seed): trained once, whichever comes first."""
    cache = tmp_path / "cache"
    res = build_references(world["teacher"], population=[world["n"]], count=2, out=tmp_path / "t", online=True, seed=SEED, device="cpu",
                           teacher_cache=cache)
    assert res.trained == [0, 1] and res.teachers_reused == 0
    shared = sorted(cache.iterdir())
    assert len(shared) == 2 and {sha256_file(p) for p in shared} == {sha256_file(tmp_path / "t" / e["file"]) for e in res.manifest["references"]}
    res = build_references(defended["akd"], population=[world["n"]], count=2, out=tmp_path / "a", online=True, proxy=world["p"], seed=SEED,
                           device="cpu", teacher_cache=cache)
    assert (res.teachers_trained, res.teachers_reused) == (0, 2)
    assert [e["teacher"]["sha256"] for e in res.manifest["references"]] == [e["sha256"] for e in _manifest(tmp_path / "t")["references"]]
    # the other order: a pipeline's reference teachers become the teacher's references without training
    res = build_references(world["teacher"], population=[world["n"]], count=2, out=tmp_path / "t2", online=True, seed=SEED, device="cpu",
                           teacher_cache=cache)
    assert res.trained == [0, 1] and res.teachers_reused == 2
    assert [e["sha256"] for e in res.manifest["references"]] == [e["sha256"] for e in _manifest(tmp_path / "t")["references"]]
    # without an explicit cache nothing is shared or copied
    res = build_references(world["teacher"], population=[world["n"]], count=2, out=tmp_path / "t3", online=True, seed=SEED, device="cpu")
    assert res.teachers_reused == 0 and not (tmp_path / "t3" / "teachers").exists()


def _fewer(folder: Path, dst: Path) -> Path:
    shutil.copytree(folder, dst)
    sorted(dst.iterdir())[0].unlink()
    return dst


def test_older_defended_checkpoint_needs_its_teacher(world, defended, tmp_path, tiny_checkpoint):
    ckpt = torch.load(defended["akd"], weights_only=True)
    del ckpt["defense"]["teacher"]["recipe"]
    old = tmp_path / "old_akd.pt"
    torch.save(ckpt, old)
    with pytest.raises(InputError, match="pass --teacher TEACHER.pt"):
        read_recipe(load_model(old))
    r = read_recipe(load_model(old), teacher=load_model(world["teacher"]))
    assert r.recipe_key() == read_recipe(load_model(defended["akd"])).recipe_key() and r.teacher.source == "--teacher"
    with pytest.raises(InputError, match="is not the teacher"):
        read_recipe(load_model(old), teacher=load_model(tiny_checkpoint))
    with pytest.raises(InputError, match="drop --teacher"):
        read_recipe(load_model(defended["akd"]), teacher=load_model(world["teacher"]))


def test_gauss_and_dpsgd_references_record_the_targets_noise(world, tmp_path):
    gauss = tmp_path / "gauss.pt"
    defend("gauss", out=gauss, teacher=world["teacher"], options=GaussOptions(sigma=0.07))
    res = build_references(gauss, population=[world["n"]], count=1, out=tmp_path / "g", device="cpu")
    ref = torch.load(tmp_path / "g" / "ref-000.pt", weights_only=True)
    assert ref["defense"]["method"] == "gauss" and ref["defense"]["sigma"] == 0.07 and res.teachers_trained == 1

    dp = tmp_path / "dp.pt"  # σ solved for a target ε: references replay σ itself, so they spend the same ε
    defend("dpsgd", out=dp, train_data=world["m"], options=DPSGDOptions(epochs=1, batch_size=3, ngf=4, ndf=4, augment=False, target_epsilon=50.0),
           size=32, device="cpu")
    target = torch.load(dp, weights_only=True)["defense"]
    r = read_recipe(load_model(dp))
    assert r.kind == "dpsgd" and r.params["noise_multiplier"] == target["noise_multiplier"]
    build_references(dp, population=[world["n"]], count=1, out=tmp_path / "d", device="cpu")
    ref = torch.load(tmp_path / "d" / "ref-000.pt", weights_only=True)["defense"]
    assert ref["noise_multiplier"] == target["noise_multiplier"] and ref["target_epsilon"] is None
    assert ref["epsilon"] == pytest.approx(target["epsilon"], rel=1e-9) and ref["delta"] == target["delta"]


def test_cli_takes_several_population_folders_after_one_flag(world, tmp_path):
    out = tmp_path / "refs"
    result = runner.invoke(app, ["references", str(world["teacher"]), "--population", str(world["n"]), str(world["p"]), "--count", "1",
                                 "--out", str(out), "--device", "cpu", "--seed", str(SEED)])
    assert result.exit_code == 0, result.output
    m = _manifest(out)
    assert [f["path"] for f in m["population"]["folders"]] == [str(world["n"]), str(world["p"])]
    assert m["references"][0]["pairs"] == _manifest(world["offline"])["references"][0]["pairs"]
    assert "trained / reused" in result.stderr and "1 / 0" in result.stderr


def test_help_needs_no_torch():
    import subprocess
    import sys

    code = "import sys; from privaudit.cli.references import references; print('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
