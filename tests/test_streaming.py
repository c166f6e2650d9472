"""Streamed data (privaudit.data.stream): the same pairs, hashes, models, scores and KID features as
the in-memory path, decoded by DataLoader workers; when a set is streamed; bad files found late.

Everything is tiny: 32x32 pairs (a dozen), U-Nets with ngf 4, 1-2 epochs. "Identical" means
bit-identical (``torch.equal``, ``==`` on floats): the streamed path feeds the very same uint8
tensors, in the same batches, drawn from the same seeded generators.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import write_pairs
from privaudit.cli.app import app
from privaudit.data.checks import pair_hashes
from privaudit.data.images import ImageSet, data_fingerprint, load_inputs, load_pairs
from privaudit.data.stream import GB, StreamedSet, Streaming, default_budget_bytes, machine_memory_bytes, open_inputs, open_pairs, resolve_workers
from privaudit.errors import DataError, InputError
from privaudit.evaluation.features import FeatureStream, batched_features
from privaudit.models.arch import ModelSpec
from privaudit.training import TrainConfig, train

from inception_helpers import make_random_inception_weights

runner = CliRunner()
N = 12
STREAM = Streaming(force=True, workers=2)  # two worker processes: batches decoded out of the main process


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(result, mentions: str) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("privaudit: error: "), result.stderr
    assert mentions in lines[0], lines[0]
    return lines[0]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def gather(images) -> tuple[torch.Tensor, torch.Tensor | None]:
    """All of a set's images through ``batches`` (uneven batches of 5)."""
    xs, ys = [], []
    for _, x, y in images.batches(5):
        xs.append(x)
        ys.append(y)
    return torch.cat(xs), (torch.cat(ys) if ys[0] is not None else None)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header survives, the pixels do not


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("streaming")
    return SimpleNamespace(
        root=root,
        aligned=write_pairs(root / "aligned", N, seed=1, prefix="a"),
        folders=write_pairs(root / "folders", N, layout="folders", seed=2, prefix="f"),
        test=write_pairs(root / "test", N, seed=3, prefix="t"),
        proxy=write_pairs(root / "proxy", 8, seed=4, prefix="p"),
    )


# --- the data: the same tensors and hashes --------------------------------------------------------


@pytest.mark.parametrize("layout", ["aligned", "folders"])
@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_pairs_are_the_in_memory_pairs(data, layout, workers):
    root = getattr(data, layout)
    for kw in ({"direction": "BtoA"}, {"direction": "AtoB", "size": 24}):  # as they are, and resized (bicubic)
        mem = load_pairs(root, **kw)
        s = open_pairs(root, streaming=Streaming(force=True, workers=workers), **kw)
        assert isinstance(s, StreamedSet) and s.workers == workers
        assert (len(s), s.size, s.names, s.layout, s.path, s.resized) == (len(mem), mem.size, mem.names, mem.layout, mem.path, mem.resized)
        x, y = gather(s)
        assert torch.equal(x, mem.inputs) and torch.equal(y, mem.targets)
        # content hashes: byte for byte the in-memory ones (resume, provenance, disjointness, references)
        assert data_fingerprint(s) == data_fingerprint(mem)
        assert pair_hashes(s) == pair_hashes(mem)
        idx = [7, 0, 3]
        sub = s.subset(idx)
        assert data_fingerprint(sub) == data_fingerprint(mem.subset(idx)) and sub.names == [mem.names[i] for i in idx]
    assert mem.resized is not None  # the resized case was exercised


@pytest.mark.parametrize("layout", ["auto", "aligned", "inputs"])
def test_streamed_inputs_are_the_in_memory_inputs(data, layout):
    mem = load_inputs(data.proxy, layout=layout, size=32, direction="BtoA")
    s = open_inputs(data.proxy, layout=layout, size=32, direction="BtoA", streaming=STREAM)
    assert isinstance(s, StreamedSet) and not s.has_targets and s.layout == mem.layout
    x, y = gather(s)
    assert y is None and torch.equal(x, mem.inputs)
    assert data_fingerprint(s) == data_fingerprint(mem)


def test_take_returns_the_batches_asked_for(data):
    mem = load_pairs(data.aligned)
    s = open_pairs(data.aligned, streaming=STREAM)
    order = [torch.tensor([5, 1, 9]), torch.tensor([0]), torch.tensor([11, 2, 3, 4])]
    for (x, y), idx in zip(s.take(order, seed=3), order):
        assert torch.equal(x, mem.inputs[idx]) and torch.equal(y, mem.targets[idx])


# --- when a set is streamed -----------------------------------------------------------------------


def test_memory_budget_decides(data):
    decoded = N * (3 + 3) * 32 * 32  # uint8 inputs and targets
    assert isinstance(open_pairs(data.aligned, streaming=Streaming(memory_budget_gb=(decoded - 1) / GB)), StreamedSet)
    assert isinstance(open_pairs(data.aligned, streaming=Streaming(memory_budget_gb=decoded / GB)), ImageSet)
    assert isinstance(open_pairs(data.aligned), ImageSet)  # the default budget: a share of this machine's memory
    assert isinstance(open_inputs(data.proxy, streaming=Streaming(memory_budget_gb=(8 * 3 * 32 * 32 - 1) / GB)), StreamedSet)  # inputs only


def test_default_budget_is_a_share_of_memory(monkeypatch):
    pages = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    total = machine_memory_bytes()
    assert total is not None and 0 < total <= pages
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_budget_bytes() == int(total * 0.25)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun: four processes on this machine, each with its own copy
    assert default_budget_bytes() == int(total * 0.25) // 4
    assert Streaming(memory_budget_gb=2).budget_bytes() == 2 * 1024**3


def test_default_workers():
    cpus = len(os.sched_getaffinity(0))
    assert resolve_workers(None, 10) == 0  # a small set: no worker processes
    assert resolve_workers(None, 10_000) == max(0, min(4, cpus - 1))
    assert resolve_workers(3, 10) == 3


@pytest.mark.parametrize("kw, needle", [({"memory_budget_gb": 0}, "--memory-budget"), ({"memory_budget_gb": -1.5}, "--memory-budget"),
                                        ({"workers": -1}, "--workers"), ({"workers": 10_000}, "--workers")])
def test_bad_streaming_settings(data, kw, needle):
    with pytest.raises(InputError, match=needle):
        open_pairs(data.aligned, streaming=Streaming(**kw))


@pytest.mark.parametrize("args, needle", [(["--memory-budget", "0"], "--memory-budget"), (["--workers", "-2"], "--workers")])
def test_bad_streaming_flags_exit_2(data, tmp_path, args, needle):
    one_error_line(invoke("train", data.aligned, "--out", tmp_path / "g.pt", "--epochs", "1", *args), needle)
    assert not (tmp_path / "g.pt").exists()


# --- bad files: one line, exit 2, before training ----------------------------------------------------


def test_a_truncated_file_found_by_a_worker_is_one_data_error(data, tmp_path):
    root = write_pairs(tmp_path / "d", N, seed=5)
    s = open_pairs(root, streaming=STREAM)  # listed: every header is fine
    truncate(root / "img010.png")
    with pytest.raises(DataError) as streamed:
        list(s.take([torch.arange(N)], seed=0))
    with pytest.raises(DataError) as in_memory:
        load_pairs(root)
    assert str(streamed.value) == str(in_memory.value)  # the worker's error, as the in-memory path words it
    assert "img010.png" in str(streamed.value) and "truncated" in str(streamed.value) and "\n" not in str(streamed.value)


def test_train_stream_truncated_file_exit_2_nothing_written(tmp_path):
    root = write_pairs(tmp_path / "d", N, seed=5)
    truncate(root / "img011.png")  # the last file: found by the hashing pass, before any training
    out = tmp_path / "g.pt"
    one_error_line(invoke("train", root, "--out", out, "--epochs", "1", "--ngf", "4", "--ndf", "4", "--stream", "--workers", "2", "-q"), "img011.png")
    assert not out.exists() and not Path(f"{out}.state").exists()


@pytest.mark.parametrize("bad, needle", [("not-an-image", "is not an image file"), ("wide", "differ in size")])
def test_train_stream_bad_header_exit_2_before_decoding(tmp_path, bad, needle):
    root = write_pairs(tmp_path / "d", N, seed=5)
    if bad == "not-an-image":
        (root / "zzz.png").write_text("not a PNG")
    else:
        Image.new("RGB", (128, 64)).save(root / "zzz.png")  # 64x64 halves among 32x32 ones, no --size
    out = tmp_path / "g.pt"
    one_error_line(invoke("train", root, "--out", out, "--epochs", "1", "--stream", "-q"), needle)
    assert not out.exists()


def test_attack_stream_truncated_nonmember_exit_2(tiny_checkpoint, data, tmp_path):
    n = write_pairs(tmp_path / "n", N, seed=6, prefix="n")
    truncate(n / "n005.png")
    one_error_line(invoke("attack", tiny_checkpoint, "--members", data.aligned, "--nonmembers", n, "--stream", "--workers", "2", "-q",
                          "--bootstrap", "0"), "n005.png")


# --- training: the same model ---------------------------------------------------------------------


def test_train_streamed_is_bit_identical(data, tmp_path):
    # augment (jitter and flips), dropout, an uneven last batch: every random draw must line up
    # (64 px: a U-Net of 6 downsamplings has a dropout layer, drawing from the global generator)
    cfg = TrainConfig(epochs=2, batch_size=5, ndf=4, seed=7, device="cpu", augment=True)
    spec = ModelSpec(ngf=4, num_downs=6, use_dropout=True)
    mem = train(data.aligned, tmp_path / "mem.pt", direction="BtoA", size=64, model=spec, config=cfg)
    st = train(data.aligned, tmp_path / "st.pt", direction="BtoA", size=64, model=spec, config=cfg, streaming=STREAM)
    assert [h.losses for h in st.history] == [h.losses for h in mem.history]
    assert same_weights(tmp_path / "mem.pt", tmp_path / "st.pt")
    pm, ps = (torch.load(tmp_path / f, weights_only=True)["provenance"]["trained_on"] for f in ("mem.pt", "st.pt"))
    assert pm == ps  # path, count and the content hash


def test_in_memory_targets_mapped_batch_by_batch_train_alike(data, tmp_path):
    """In memory the targets stay uint8 and are mapped to [-1, 1] per batch (a quarter of the memory
    of a float32 copy): the same run as with the float32 copy."""
    from privaudit.data.images import to_float
    from privaudit.models.networks import UnetGenerator, init_weights
    from privaudit.training import fit

    pairs = load_pairs(data.aligned)
    cfg = TrainConfig(epochs=1, batch_size=5, ndf=4, seed=1, device="cpu")
    runs = []
    for targets in (pairs.targets, to_float(pairs.targets)):
        torch.manual_seed(0)
        G = UnetGenerator(ModelSpec(ngf=4, num_downs=5).build(32))
        init_weights(G)
        hist = fit(G, pairs.inputs, targets, cfg, out=tmp_path / f"{targets.dtype}.pt", save_model=lambda *a: None)
        runs.append((hist[-1].losses, G.state_dict()))
    (la, wa), (lb, wb) = runs
    assert la == lb and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_train_cli_stream_resumes_an_in_memory_run(data, tmp_path):
    """The resume state ties a run to its data by content hash: a run started in memory resumes streamed."""
    common = ["train", data.folders, "--ngf", "4", "--ndf", "4", "--batch-size", "4", "--seed", "2", "-q", "--no-augment"]
    assert invoke(*common, "--out", tmp_path / "once.pt", "--epochs", "2").exit_code == 0
    r = invoke(*common, "--out", tmp_path / "twice.pt", "--epochs", "1", "--keep-state")
    assert r.exit_code == 0, r.output
    r = invoke(*common, "--out", tmp_path / "twice.pt", "--epochs", "2", "--resume", "--stream", "--workers", "1")
    assert r.exit_code == 0, r.output
    assert same_weights(tmp_path / "once.pt", tmp_path / "twice.pt")


@pytest.mark.parametrize("method", ["akd", "dmp"])
def test_distillation_streamed_is_bit_identical(tiny_checkpoint, data, tmp_path, monkeypatch, method):
    from privaudit.defenses import defend
    from privaudit.defenses.distill import DistillOptions

    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))  # where a streamed proxy's teacher outputs go
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", None)
    opts = DistillOptions(epochs=1, batch_size=3, ndf=4)
    a = defend(method, out=tmp_path / "mem.pt", teacher=tiny_checkpoint, proxy=data.proxy, options=opts, seed=4, device="cpu")
    b = defend(method, out=tmp_path / "st.pt", teacher=tiny_checkpoint, proxy=data.proxy, options=opts, seed=4, device="cpu", streaming=STREAM)
    assert [h.losses for h in a.history] == [h.losses for h in b.history]
    assert same_weights(tmp_path / "mem.pt", tmp_path / "st.pt")
    assert list((tmp_path / "tmp").iterdir()) == []  # the teacher's outputs file is gone


def test_dpsgd_streamed_is_bit_identical(data, tmp_path):
    from privaudit.defenses import defend
    from privaudit.defenses.dpsgd import DPSGDOptions

    opts = DPSGDOptions(epochs=2, batch_size=4, ngf=4, ndf=4, noise_multiplier=0.8)
    a = defend("dpsgd", out=tmp_path / "mem.pt", train_data=data.aligned, options=opts, size=32, seed=3, device="cpu")
    b = defend("dpsgd", out=tmp_path / "st.pt", train_data=data.aligned, options=opts, size=32, seed=3, device="cpu", streaming=STREAM)
    assert a.privacy.epsilon == b.privacy.epsilon
    assert [h.losses for h in a.history] == [h.losses for h in b.history]
    assert same_weights(tmp_path / "mem.pt", tmp_path / "st.pt")


# --- the attack and the utility metrics: the same scores ------------------------------------------


@pytest.fixture(scope="module")
def dropout_checkpoint(tmp_path_factory) -> Path:
    """A 64 px U-Net with a dropout layer (32 px U-Nets have none): its stochastic attack draws from
    the global generator, which the decoding workers must not disturb."""
    from conftest import tiny_generator
    from privaudit.models.arch import UnetArch
    from privaudit.models.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("dropout") / "g64.pt"
    save_checkpoint(path, generator=tiny_generator(UnetArch(input_nc=3, output_nc=3, num_downs=6, ngf=4, norm="batch", use_dropout=True)),
                    image_size=64, direction="AtoB")
    return path


def test_attack_streamed_scores_are_identical(dropout_checkpoint, data, tmp_path):
    args = ["attack", dropout_checkpoint, "--members", data.aligned, "--nonmembers", data.test, "--batch-size", "5", "--bootstrap", "50", "-q",
            "--stochastic", "--samples", "2"]
    r = invoke(*args, "--json", tmp_path / "mem.json", "--scores", tmp_path / "mem.csv")
    assert r.exit_code == 0, r.output
    r = invoke(*args, "--json", tmp_path / "st.json", "--scores", tmp_path / "st.csv", "--stream", "--workers", "2")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "mem.csv").read_text() == (tmp_path / "st.csv").read_text()
    mem, st = (json.loads((tmp_path / f).read_text()) for f in ("mem.json", "st.json"))
    assert mem["attack"] == st["attack"] and mem["data"] == st["data"]


def test_attack_streamed_refuses_shared_pairs(tiny_checkpoint, data):
    one_error_line(invoke("attack", tiny_checkpoint, "--members", data.aligned, "--nonmembers", data.aligned, "--stream", "-q"),
                   "are also members")


def test_feature_stream_regroups_into_torch_fidelity_batches():
    """Images arriving in uneven batches give the features of ``batched_features``' batches of 64."""
    g = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(3, 5, 3)
    torch.nn.init.normal_(conv.weight, generator=g)

    def ex(x):  # any batch-wise module; what matters is which images share a forward pass
        return (conv(x.float() / 255).mean((2, 3)) + x.float().mean() * 1e-3,)  # a batch statistic: batches must match

    images = torch.randint(0, 256, (150, 3, 16, 16), dtype=torch.uint8, generator=g)
    stream = FeatureStream(ex, torch.device("cpu"), "generated")
    start = 0
    for k in (7, 30, 1, 64, 48):
        stream.add(images[start : start + k])
        start += k
    assert start == 150
    expected = batched_features(ex, images, torch.device("cpu"))
    assert torch.equal(stream.finish(), expected)


@pytest.mark.usefixtures("fast_cpu_inception")
def test_evaluate_streamed_report_is_identical(tiny_checkpoint, data, tmp_path):
    """KID (real, all-black and generated features, the feature cache), L1/PSNR/SSIM, sharpness and the gap."""
    w = make_random_inception_weights(tmp_path / "inception.pth")
    args = ["evaluate", tiny_checkpoint, "--members", data.aligned, "--nonmembers", data.test, "--batch-size", "5", "--bootstrap", "20", "-q",
            "--inception-weights", w, "--kid-subsets", "5", "--proxy-pairs", data.folders, "--allow-small"]
    r = invoke(*args, "--feature-cache", tmp_path / "cache-mem", "--json", tmp_path / "mem.json")
    assert r.exit_code == 0, r.output
    r = invoke(*args, "--feature-cache", tmp_path / "cache-st", "--json", tmp_path / "st.json", "--stream", "--workers", "2")
    assert r.exit_code == 0, r.output
    mem, st = (json.loads((tmp_path / f).read_text()) for f in ("mem.json", "st.json"))
    for key in ("attack", "utility", "generalization_gap", "proxy_leakage", "data"):
        assert mem[key] == st[key], key
    assert mem["utility"]["kid"] is not None and mem["utility"]["feature_cache"]["misses"] > 0  # computed, then cached
    # the same cache keys: the streamed run's files are the in-memory run's
    assert sorted(p.name for p in (tmp_path / "cache-mem").iterdir()) == sorted(p.name for p in (tmp_path / "cache-st").iterdir())
    r = invoke(*args, "--feature-cache", tmp_path / "cache-mem", "--json", tmp_path / "again.json", "--stream")  # streamed, on the in-memory cache
    assert r.exit_code == 0, r.output
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["utility"]["feature_cache"]["misses"] == 0 and again["utility"]["kid"] == mem["utility"]["kid"]
    # without Inception weights: the pixel metrics and sharpness alone
    nokid = [a for a in args if a not in ("--inception-weights", w)] + ["--no-kid"]
    for name, extra in (("m", []), ("s", ["--stream"])):
        r = invoke(*nokid, "--json", tmp_path / f"nokid-{name}.json", *extra)
        assert r.exit_code == 0, r.output
    a, b = (json.loads((tmp_path / f"nokid-{n}.json").read_text()) for n in ("m", "s"))
    assert a["utility"] == b["utility"] and a["utility"]["kid_skipped"] and a["utility"]["sharpness"] is not None


# --- references: the same population and references ---------------------------------------------


def test_references_streamed_are_identical(data, tmp_path):
    from privaudit.references import build_references

    teacher = tmp_path / "teacher.pt"
    train(data.aligned, teacher, size=32, model=ModelSpec(ngf=4, num_downs=5), config=TrainConfig(epochs=1, batch_size=4, ndf=4, seed=1, device="cpu"))
    kw = dict(population=[data.test, data.folders], count=1, seed=2, device="cpu")
    a = build_references(teacher, out=tmp_path / "mem", **kw)
    b = build_references(teacher, out=tmp_path / "st", streaming=STREAM, **kw)
    assert a.manifest["population"] == b.manifest["population"] and a.manifest["excluded"] == b.manifest["excluded"]
    assert a.manifest["references"][0]["pairs"] == b.manifest["references"][0]["pairs"]
    assert same_weights(tmp_path / "mem" / "ref-000.pt", tmp_path / "st" / "ref-000.pt")


@pytest.mark.slow
def test_torchrun_streamed_shards_are_the_in_memory_shards(data, tmp_path):
    """Under torchrun each process decodes only its shard of every batch: the same run as in memory."""
    from test_distributed import torchrun

    common = ["train", str(data.aligned), "--epochs", "1", "--batch-size", "4", "--ngf", "4", "--ndf", "4", "--norm", "instance", "--no-dropout", "-q"]
    torchrun([*common, "--out", str(tmp_path / "mem.pt")], tmp_path)
    torchrun([*common, "--out", str(tmp_path / "st.pt"), "--stream", "--workers", "1"], tmp_path)
    assert same_weights(tmp_path / "mem.pt", tmp_path / "st.pt")


def test_a_killed_worker_is_one_line():
    from privaudit.cli.common import _environment_message

    line = _environment_message(RuntimeError("DataLoader worker (pid 4242) is killed by signal: Killed. "))
    assert line is not None and "--workers" in line and "out of memory" in line
