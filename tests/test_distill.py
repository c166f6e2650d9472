"""AKD/DMP's richer distillation (issue 13): augmented and recombined distillation inputs, feature
matching, a multi-scale discriminator and an EMA of the student; nothing derived from the private
pairs (or the proxy's targets) reaches the student under any of them; the sets are seeded; the
teacher answers each distinct input once and the checkpoint says how often; bad settings are one
line and exit 2; references replay the options; evaluate's fidelity to the teacher.

Tiny: 32x32 procedural facades (label maps and photos), U-Nets with ngf 4, one epoch.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from privaudit import defaults
from privaudit.cli.app import app
from privaudit.data.images import load_inputs, to_float, to_uint8
from privaudit.defenses import default_options, defend
from privaudit.defenses.distill import DistillOptions, distill, student_arch
from privaudit.defenses.distill_data import DistillData, build_distillation_set, detect_input_kind, unique_rows
from privaudit.demo import make_facades, write_aligned
from privaudit.errors import CheckpointError, InputError
from privaudit.models.arch import ModelSpec
from privaudit.models.checkpoint import load_model
from privaudit.models.networks import MultiscaleDiscriminator, NLayerDiscriminator, patch_layers
from privaudit.references import build_references, read_recipe
from privaudit.training import TrainConfig, train
from privaudit.training.pix2pix import GANLoss, Objective, ema_average, generator_loss

runner = CliRunner()
N = 6
BASE = dict(epochs=1, batch_size=4, ndf=4)  # pix2pix jitter on: its draws must not change either


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def _same(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _corrupt_left_halves(folder: Path, seed: int) -> None:
    """Replace the left half (A: the photo, the target under BtoA) of every aligned image with noise, in place."""
    rng = np.random.default_rng(seed)
    for p in sorted(folder.glob("*.png")):
        arr = np.asarray(Image.open(p).convert("RGB")).copy()
        w = arr.shape[1] // 2
        arr[:, :w] = rng.integers(0, 256, arr[:, :w].shape, dtype=np.uint8)
        Image.fromarray(arr).save(p)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A teacher (BtoA: label map → photo) trained on members; proxy sets whose inputs are label
    maps (``labels``) or photos (``photos``: the halves swapped, so the input side holds the photo);
    non-members. Read-only, except inside ``_restored`` blocks."""
    root = tmp_path_factory.mktemp("distill")
    for name, seed in (("members", 1), ("nonmembers", 2), ("labels", 3)):
        photos, labels = make_facades(N if name != "nonmembers" else 10, size=32, seed=seed)
        write_aligned(root / name, photos, labels, name)
    photos, labels = make_facades(N, size=32, seed=4)
    write_aligned(root / "photos", labels, photos, "photos")  # input side (right, BtoA) = the photo
    train(root / "members", root / "teacher.pt", direction="BtoA", size=32, model=ModelSpec(ngf=4, num_downs=5),
          config=TrainConfig(epochs=1, batch_size=3, augment=False, ndf=4, seed=0, device="cpu"))
    return {"root": root, "teacher": root / "teacher.pt", "members": root / "members", "nonmembers": root / "nonmembers",
            "labels": root / "labels", "photos": root / "photos"}


@pytest.fixture(scope="module")
def plain(world) -> dict[str, Path]:
    """Students of the AKD paper's recipe (no new option) on each proxy set."""
    out = {}
    for kind in ("labels", "photos"):
        out[kind] = world["root"] / f"plain-{kind}.pt"
        defend("akd", out=out[kind], teacher=world["teacher"], proxy=world[kind], options=DistillOptions(**BASE), seed=7, device="cpu")
    return out


class _Restored:
    """Corrupt a folder in place for the block, then put it back."""

    def __init__(self, folder: Path, tmp: Path) -> None:
        self.folder, self.backup = folder, tmp / f"backup-{folder.name}"

    def __enter__(self) -> None:
        shutil.copytree(self.folder, self.backup)
        _corrupt_left_halves(self.folder, seed=11)

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.folder)
        shutil.copytree(self.backup, self.folder)


# every new option alone, and all together (labels: cutpaste; photos: colour jitter, mixup, CutMix)
CASES = [
    ("akd", "labels", dict(augment_copies=2)),
    ("akd", "labels", dict(recombine="cutpaste", recombine_copies=2)),
    ("akd", "photos", dict(augment_copies=2)),
    ("akd", "photos", dict(recombine="mixup")),
    ("akd", "photos", dict(recombine="cutmix")),
    ("akd", "labels", dict(feature_matching=10.0)),
    ("akd", "labels", dict(num_D=2)),
    ("akd", "labels", dict(ema=0.9)),
    ("akd", "labels", dict(augment_copies=1, recombine="cutpaste", feature_matching=10.0, num_D=2, ema=0.9)),
    ("dmp", "photos", dict(augment_copies=1, augment_ops=("color",), recombine="cutmix", ema=0.9)),
    ("akd", "photos", dict(recombine="auto", recombine_copies=2)),
]


@pytest.mark.parametrize("method, kind, extra", CASES, ids=[f"{m}-{k}-{'+'.join(e)}" for m, k, e in CASES])
def test_nothing_private_enters_distillation(world, plain, tmp_path, method, kind, extra):
    """The student's weights are bit-identical when the proxy's targets, or the teacher's members'
    targets (after the teacher was trained), are replaced by noise: only the teacher's weights and
    the proxy inputs reach it, whatever the option."""
    opts = DistillOptions(**BASE, **extra)
    runs = {}

    def run(name: str) -> Path:
        runs[name] = tmp_path / f"{name}.pt"
        defend(method, out=runs[name], teacher=world["teacher"], proxy=world[kind], options=opts, seed=7, device="cpu")
        return runs[name]

    run("clean")
    with _Restored(world[kind], tmp_path):
        run("proxy_targets_noise")
    with _Restored(world["members"], tmp_path):
        run("member_targets_noise")
    assert _same(runs["clean"], runs["proxy_targets_noise"]) and _same(runs["clean"], runs["member_targets_noise"])
    if method == "akd":
        assert not _same(runs["clean"], plain[kind])  # the option did something
    d = torch.load(runs["clean"], weights_only=True)["defense"]
    data_opts = {k: v for k, v in extra.items() if k in ("augment_copies", "augment_ops", "recombine", "recombine_copies")}
    if data_opts:
        assert d["distill_data"]["input_kind"] == kind and d["distill_data"]["recombine"] != "auto"
        assert d["distillation_inputs"] == N * (1 + extra.get("augment_copies", 0) + (extra.get("recombine_copies", 1) if "recombine" in extra else 0))
    else:
        assert "distill_data" not in d and d["distillation_inputs"] == N
    obj = {k: v for k, v in extra.items() if k in ("feature_matching", "num_D", "ema")}
    assert d.get("objective", {}) == obj


# ---------------------------------------------------------------------------------------------
# the distillation set


def _proxy(world, kind: str) -> torch.Tensor:
    return load_inputs(world[kind], direction="BtoA", size=32).inputs


def test_input_kind_is_detected(world):
    assert detect_input_kind(_proxy(world, "labels")) == "labels"
    assert detect_input_kind(_proxy(world, "photos")) == "photos"
    assert DistillData(augment_copies=1).resolve(_proxy(world, "photos")).augment_ops == ("flip", "crop", "color")
    assert DistillData(augment_copies=1).resolve(_proxy(world, "labels")).augment_ops == ("flip", "crop")


def test_recombine_auto_picks_the_method_of_the_kind(world):
    """--recombine auto: cut-and-paste for label maps, CutMix for photos; the resolved method is what
    builds the set and what the checkpoint records."""
    for kind, how in (("labels", "cutpaste"), ("photos", "cutmix")):
        x = _proxy(world, kind)
        auto = DistillData(recombine="auto", recombine_copies=2).resolve(x)
        assert auto.recombine == how and auto.record()["recombine"] == how
        assert torch.equal(build_distillation_set(x, auto, 5), build_distillation_set(x, DistillData(recombine=how, recombine_copies=2).resolve(x), 5))


@pytest.mark.parametrize("kind, data", [("labels", DistillData(augment_copies=3, recombine="cutpaste", recombine_copies=2)),
                                        ("photos", DistillData(augment_copies=3, recombine="mixup")),
                                        ("photos", DistillData(recombine="cutmix", recombine_copies=3))])
def test_generated_inputs_are_seeded(world, kind, data):
    x = _proxy(world, kind)
    data = data.resolve(x)
    a, b, c = (build_distillation_set(x, data, seed) for seed in (3, 3, 4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.uint8 and torch.equal(a[:N], x)  # the proxy inputs first, untouched
    extra = a[N:]
    assert extra.shape[0] == N * ((data.augment_copies) + (data.recombine_copies if data.recombine != "none" else 0))
    originals = {bytes(img.numpy().tobytes()) for img in x}
    assert sum(bytes(img.numpy().tobytes()) in originals for img in extra) < len(extra) // 4  # new inputs, nearly all of them


def test_label_maps_gain_no_new_colours(world):
    """Flips, nearest-neighbour crops and cut-and-paste only move a label map's pixels; colour
    jitter (photos) makes new colours."""
    x = _proxy(world, "labels")
    made = build_distillation_set(x, DistillData(augment_copies=4, recombine="cutpaste", recombine_copies=2).resolve(x), seed=0)
    colours = lambda t: set(map(tuple, t.permute(0, 2, 3, 1).reshape(-1, t.shape[1]).tolist()))  # noqa: E731
    assert colours(made) == colours(x)
    p = _proxy(world, "photos")
    jittered = build_distillation_set(p, DistillData(augment_copies=1, augment_ops=("color",)).resolve(p), seed=0)
    assert len(colours(jittered[N:]) - colours(p)) > 100


class _Counting(torch.nn.Module):
    """The teacher's module, counting the images it is asked about and remembering them."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += [hashlib.blake2b(to_uint8(img).numpy().tobytes()).hexdigest() for img in x]
        return self.inner(x)


def test_teacher_queries_are_the_distinct_inputs_sent_once(world, tmp_path):
    proxy_dir = tmp_path / "proxy"
    shutil.copytree(world["labels"], proxy_dir)
    first = sorted(proxy_dir.iterdir())[0]
    shutil.copy(first, proxy_dir / f"zz-duplicate{first.suffix}")  # the same input twice in the proxy set
    proxy = load_inputs(proxy_dir, direction="BtoA", size=32)
    teacher = load_model(world["teacher"], device="cpu")
    teacher.module = _Counting(teacher.module)
    data = DistillData(augment_copies=2, recombine="cutpaste")
    out = tmp_path / "s.pt"
    distill(teacher, proxy, out, method="akd", arch=student_arch(teacher, None), cfg=TrainConfig(**BASE, seed=1, device="cpu"), direction="BtoA", data=data)
    d = torch.load(out, weights_only=True)["defense"]
    made = build_distillation_set(proxy.inputs, data.resolve(proxy.inputs), seed=1)
    distinct = {img.numpy().tobytes() for img in made}
    assert d["distillation_inputs"] == len(made) == 4 * (N + 1)
    assert d["teacher_queries"] == len(teacher.module.seen) == len(set(teacher.module.seen)) == len(distinct) < len(made)
    keep, inverse = unique_rows(made)
    assert torch.equal(made[keep][inverse], made)


def test_resume_regenerates_the_same_set(world, tmp_path):
    """An interrupted run with every option resumes to the weights of an uninterrupted one."""
    flags = ["--augment-copies", "1", "--recombine", "cutpaste", "--feature-matching", "10", "--num-D", "2", "--ema", "0.9"]  # on the paper's student
    opts = DistillOptions(epochs=2, batch_size=4, ndf=4, augment_copies=1, recombine="cutpaste", feature_matching=10.0, num_D=2, ema=0.9)
    full, cut = tmp_path / "full.pt", tmp_path / "cut.pt"
    defend("akd", out=full, teacher=world["teacher"], proxy=world["labels"], options=opts, seed=2, device="cpu")

    class Stop(Exception):
        pass

    def interrupt(epoch: int, step: int, steps: int, losses: dict) -> None:
        if epoch == 1 and step == 1:
            raise Stop

    with pytest.raises(Stop):
        defend("akd", out=cut, teacher=world["teacher"], proxy=world["labels"], options=opts, seed=2, device="cpu", on_step=interrupt)
    r = runner.invoke(app, ["defend", str(world["teacher"]), "--method", "akd", "--proxy", str(world["labels"]), "--out", str(cut), "--epochs", "2",
                            "--batch-size", "4", "--ndf", "4", "--seed", "2", "--device", "cpu", "--resume", "--quiet", "--paper", *flags])
    assert r.exit_code == 0, r.output
    assert _same(full, cut)
    r = runner.invoke(app, ["defend", str(world["teacher"]), "--method", "akd", "--proxy", str(world["labels"]), "--out", str(tmp_path / "x.pt"),
                            "--epochs", "1", "--batch-size", "4", "--ndf", "4", "--device", "cpu", "--keep-state", "--quiet", "--paper", *flags])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["defend", str(world["teacher"]), "--method", "akd", "--proxy", str(world["labels"]), "--out", str(tmp_path / "x.pt"),
                            "--epochs", "2", "--batch-size", "4", "--ndf", "4", "--device", "cpu", "--resume", "--quiet", "--paper", *flags[:-2]])
    assert r.exit_code == 2 and "objective" in r.stderr  # another --ema: refused


# ---------------------------------------------------------------------------------------------
# bad settings: one line, exit 2, nothing written


@pytest.mark.parametrize("kind, args, needle", [
    ("labels", ["--recombine", "mixup"], "--recombine mixup makes no sense for label maps"),
    ("photos", ["--recombine", "cutpaste"], "--recombine cutpaste makes no sense for photos"),
    ("labels", ["--augment-copies", "1", "--augment-ops", "flip,color"], "--augment-ops color makes no sense for label maps"),
    ("photos", ["--input-kind", "labels", "--augment-copies", "1", "--augment-ops", "color"], "(as given by --input-kind)"),
    ("labels", ["--input-kind", "photos", "--recombine", "cutpaste"], "makes no sense for photos"),
    ("labels", ["--augment-copies", "0", "--augment-ops", "flip"], "--augment-copies is 0"),
    ("labels", ["--sharp", "--augment-copies", "0", "--augment-ops", "flip"], "--augment-copies is 0"),
    ("labels", ["--method", "dmp", "--sharp"], "--sharp chooses the student of --method akd"),
    ("labels", ["--method", "dmp", "--paper"], "--paper chooses the student of --method akd"),
    ("labels", ["--paper", "--sharp"], "--paper (the AKD paper's student) and --sharp (the default student) contradict"),
    ("labels", ["--augment-copies", "1", "--augment-ops", "rotate"], "invalid --augment-ops rotate"),
    ("labels", ["--augment-copies", "-1"], "--augment-copies must be"),
    ("labels", ["--recombine", "cutpaste", "--recombine-copies", "0"], "--recombine-copies must be"),
    ("labels", ["--num-D", "5"], "--num-D must be"),
    ("labels", ["--ema", "1.5"], "--ema must be"),
    ("labels", ["--feature-matching", "-1"], "--feature-matching must be"),
    ("labels", ["--method", "dmp", "--feature-matching", "10"], "--method dmp has no discriminator"),
    ("labels", ["--method", "dmp", "--num-D", "2"], "--method dmp has no discriminator"),
    ("one", ["--recombine", "cutpaste"], "the proxy set holds 1"),
    ("one", ["--recombine", "auto"], "pass --recombine none"),
])
def test_bad_settings_exit_2_with_one_line(world, tmp_path, kind, args, needle):
    proxy = world.get(kind)
    if kind == "one":
        proxy = tmp_path / "one"
        proxy.mkdir()
        shutil.copy(sorted(world["labels"].iterdir())[0], proxy)
    out = tmp_path / "s.pt"
    method = [] if "--method" in args else ["--method", "akd"]
    r = runner.invoke(app, ["defend", str(world["teacher"]), *method, "--proxy", str(proxy), "--out", str(out), "--epochs", "1", "--device", "cpu",
                            "--quiet", *args])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr, r.stderr
    assert not out.exists() and not (tmp_path / "s.pt.state").exists()


# ---------------------------------------------------------------------------------------------
# the objective


def test_multiscale_discriminator_and_patch_layers():
    D = MultiscaleDiscriminator(6, image_size=32, num_D=2, ndf=4)
    out = D(torch.zeros(1, 6, 32, 32))
    assert [tuple(o.shape) for o in out] == [(1, 1, 2, 2), (1, 1, 2, 2)]  # 32 px: 3 layers; 16 px: 2 layers
    assert [sum(isinstance(m, torch.nn.LeakyReLU) for m in d.model) for d in D.scales] == [4, 3]
    assert (patch_layers(24), patch_layers(23), patch_layers(6)) == (3, 2, 1)
    with pytest.raises(InputError, match="too small"):
        patch_layers(5)


def test_feature_matching_against_a_hand_computation():
    torch.manual_seed(0)
    D = NLayerDiscriminator(6, ndf=4)
    x, y, fake = (torch.rand(2, 3, 32, 32) * 2 - 1 for _ in range(3))
    gan = GANLoss()
    plain, logged0 = generator_loss(D, gan, x, y, fake, 100.0)
    with_fm, logged = generator_loss(D, gan, x, y, fake, 100.0, feature_matching=10.0)

    def acts(inp: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for layer in D.model:
            inp = layer(inp)
            if isinstance(layer, torch.nn.LeakyReLU):
                out.append(inp)
        return out

    # pix2pixHD: weight 4 / (n_layers + 1) = 1 per layer for the 3-layer PatchGAN, one scale
    with torch.no_grad():
        hand = sum(float((a - b).abs().mean()) for a, b in zip(acts(torch.cat([x, fake], 1)), acts(torch.cat([x, y], 1))))
    assert logged["G_FM"] == pytest.approx(hand, rel=1e-5)
    assert logged["G_GAN"] == logged0["G_GAN"] and float((with_fm - plain).detach()) == pytest.approx(10.0 * hand, rel=1e-4)
    assert generator_loss(D, gan, x, y, y, 100.0, feature_matching=10.0)[1]["G_FM"] == 0.0


def test_ema_average_against_a_hand_computation():
    avg, cur = [torch.tensor([1.0, 2.0])], [torch.tensor([3.0, -2.0])]
    ema_average(0.999)(avg, cur, torch.tensor(5))
    d = 6 / 15  # warm-up: min(0.999, (1 + 5) / (10 + 5))
    assert torch.allclose(avg[0], torch.tensor([d * 1 + (1 - d) * 3, d * 2 + (1 - d) * -2]))
    late = [torch.tensor([1.0])]
    ema_average(0.9)(late, [torch.tensor([0.0])], torch.tensor(10_000))
    assert torch.allclose(late[0], torch.tensor([0.9]))
    counts = [torch.tensor(3)]
    ema_average(0.9)(counts, [torch.tensor(8)], torch.tensor(2))
    assert int(counts[0]) == 8  # integer buffers (BatchNorm's count) follow the model
    assert Objective().record() == {} and Objective(ema=0.5).record() == {"ema": 0.5}


# ---------------------------------------------------------------------------------------------
# references replay the options


def test_references_replay_the_options(world, plain, tmp_path):
    opts = DistillOptions(**BASE, augment_copies=1, recombine="cutpaste", feature_matching=10.0, num_D=2, ema=0.9)
    student = tmp_path / "student.pt"
    defend("akd", out=student, teacher=world["teacher"], proxy=world["labels"], options=opts, seed=7, device="cpu")
    r = read_recipe(load_model(student))
    assert r.params["distill_data"] == {"input_kind": "labels", "augment_copies": 1, "augment_ops": ["flip", "crop"], "recombine": "cutpaste",
                                        "recombine_copies": 1}
    assert r.params["objective"] == {"feature_matching": 10.0, "num_D": 2, "ema": 0.9}
    assert "2x" not in r.describe() and "1x cutpaste" in r.describe()
    # a student of the paper's recipe records neither, so its recipe (and key) is what it always was
    assert set(read_recipe(load_model(plain["labels"])).params) == {"proxy_count", "proxy_layout"}
    assert r.recipe_key() != read_recipe(load_model(plain["labels"])).recipe_key()
    old = torch.load(plain["labels"], weights_only=True)  # as written before issue 13: no set size, no query count
    for key in ("distillation_inputs", "teacher_queries"):
        del old["defense"][key]
    torch.save(old, tmp_path / "old.pt")
    assert read_recipe(load_model(tmp_path / "old.pt")).recipe_key() == read_recipe(load_model(plain["labels"])).recipe_key()
    res = build_references(student, population=[world["nonmembers"]], count=1, out=tmp_path / "refs", proxy=world["labels"], seed=3, device="cpu")
    ref = torch.load(tmp_path / "refs" / res.manifest["references"][0]["file"], weights_only=True)
    mine = torch.load(student, weights_only=True)["defense"]
    assert ref["defense"]["distill_data"] == mine["distill_data"] and ref["defense"]["objective"] == mine["objective"]
    assert ref["defense"]["teacher_queries"] == mine["teacher_queries"]  # same proxy, same settings: the same set size (the seed differs)
    assert read_recipe(load_model(tmp_path / "refs" / "ref-000.pt")).recipe_key() == r.recipe_key()


def test_a_malformed_option_record_is_refused(world, plain, tmp_path):
    ckpt = torch.load(plain["labels"], weights_only=True)
    for bad in ({"distill_data": {"input_kind": "labels", "augment_copies": 1, "augment_ops": ["color"], "recombine": "none"}},
                {"objective": {"num_D": 99}}, {"objective": {"feature_matching": 1.0}, "method": "dmp"}, {"objective": "x"}):
        broken = {**ckpt, "defense": {**ckpt["defense"], **bad}}
        path = tmp_path / "bad.pt"
        torch.save(broken, path)
        with pytest.raises(CheckpointError, match="invalid distillation setting"):
            read_recipe(load_model(path))


# ---------------------------------------------------------------------------------------------
# evaluate: fidelity to the teacher


def _hand_l1(student: Path, teacher: Path, inputs: torch.Tensor) -> float:
    diffs = []
    for path in (student, teacher):
        m = load_model(path, device="cpu")
        m.module.eval()
        with torch.no_grad():
            diffs.append(to_uint8(m.module(to_float(inputs.clone()))).double())
    return float((diffs[0] - diffs[1]).abs().mean() / 127.5)


def test_evaluate_reports_fidelity_to_the_teacher(world, plain, tmp_path):
    student = plain["labels"]
    base = ["evaluate", str(student), "--nonmembers", str(world["nonmembers"]), "--no-kid", "--bootstrap", "0", "--allow-small", "--quiet"]
    r = runner.invoke(app, [*base, "--members", str(world["members"]), "--proxy", str(world["labels"]), "--json", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    fid = json.loads((tmp_path / "r.json").read_text())["utility"]["fidelity_to_teacher"]
    nonmember_inputs = load_inputs(world["nonmembers"], direction="BtoA", size=32).inputs
    assert fid["nonmembers_l1"] == pytest.approx(_hand_l1(student, world["teacher"], nonmember_inputs), rel=1e-9)
    assert fid["proxy_l1"] == pytest.approx(_hand_l1(student, world["teacher"], _proxy(world, "labels")), rel=1e-9)
    assert fid["teacher"]["sha256"] == load_model(world["teacher"]).sha256 and fid["proxy"]["count"] == N
    # no member is read: other members (here: the proxy pairs) give the same numbers
    r = runner.invoke(app, [*base, "--members", str(world["photos"]), "--teacher", str(world["teacher"]), "--proxy", str(world["labels"]),
                            "--json", str(tmp_path / "r2.json")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "r2.json").read_text())["utility"]["fidelity_to_teacher"] == fid
    # the table shows it
    r = runner.invoke(app, [*base[:-1], "--members", str(world["members"])])
    assert "L1 to the teacher" in r.stderr and f"{fid['nonmembers_l1']:.4f}" in r.stderr


def test_evaluate_fidelity_bad_input(world, plain, tmp_path):
    base = ["evaluate", "--members", str(world["members"]), "--nonmembers", str(world["nonmembers"]), "--no-kid", "--bootstrap", "0",
            "--allow-small", "--quiet"]
    r = runner.invoke(app, [base[0], str(world["teacher"]), *base[1:], "--proxy", str(world["labels"])])
    assert r.exit_code == 2 and "records no teacher" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = runner.invoke(app, [base[0], str(plain["labels"]), *base[1:], "--teacher", str(plain["photos"])])
    assert r.exit_code == 2 and "is not the teacher" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    moved = tmp_path / "moved.pt"
    ckpt = torch.load(plain["labels"], weights_only=True)
    ckpt["defense"]["teacher"]["path"] = str(tmp_path / "gone.pt")
    torch.save(ckpt, moved)
    r = runner.invoke(app, [base[0], str(moved), *base[1:], "--json", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    assert "is not there; pass --teacher" in json.loads((tmp_path / "r.json").read_text())["utility"]["fidelity_to_teacher"]["skipped"]


# ---------------------------------------------------------------------------------------------
# the default AKD student (the sharper one, defaults.AKD_SHARP) against the paper's (--paper)


def test_sharp_options_and_their_epochs():
    sharp = DistillOptions.sharp()
    for k, v in defaults.AKD_SHARP.items():
        assert getattr(sharp, k) == v, k
    # 4 augmented copies: a 5x set trains a fifth of the epochs, as many steps as AKD_PROXY_EPOCHS epochs of the proxy inputs alone
    assert sharp.augment_copies == 4 and sharp.proxy_epochs == defaults.AKD_PROXY_EPOCHS and sharp.resolved_epochs() == round(defaults.AKD_PROXY_EPOCHS / 5)
    assert DistillOptions.sharp(augment_copies=0).resolved_epochs() == defaults.AKD_PROXY_EPOCHS  # the proxy inputs alone
    assert DistillOptions() == DistillOptions.paper() and DistillOptions().epochs == defaults.EPOCHS and DistillOptions().lambda_l1 == 100.0  # dmp's
    # None: as many epochs of the distillation set as proxy_epochs epochs of the proxy inputs take in steps
    seven = dict(augment_copies=4, recombine="auto", recombine_copies=2)
    assert DistillOptions(epochs=None).resolved_epochs() == 200
    assert DistillOptions(epochs=None, **seven).resolved_epochs() == 29  # round(200 / 7)
    assert DistillOptions.sharp(**seven).resolved_epochs() == 4  # round(30 / 7)
    assert DistillOptions.sharp().resolved_epochs() == 6  # 30 epochs of the proxy inputs alone: 6 of the 5x set
    assert DistillOptions(epochs=None, augment_copies=4).resolved_epochs() == 40
    assert DistillOptions(epochs=None, recombine="none", recombine_copies=5).resolved_epochs() == 200  # copies without a method add nothing
    assert DistillOptions(epochs=None, proxy_epochs=0.001).resolved_epochs() == 1
    assert DistillOptions(epochs=7, **seven).resolved_epochs() == 7  # given epochs are kept
    assert DistillOptions.sharp(lambda_l1=50.0).lambda_l1 == 50.0
    with pytest.raises(InputError, match="proxy_epochs must be"):
        DistillOptions(proxy_epochs=0).validate()


def test_cli_default_student_is_the_sharp_one(world, tmp_path, monkeypatch):
    """`defend --method akd` distils the sharper student, recorded with its resolved epochs (so does
    the library given no options, and the old --sharp); flags given override its parts; --paper
    distils the AKD paper's student."""
    monkeypatch.setattr(defaults, "AKD_PROXY_EPOCHS", 14)  # a few epochs on the toy set
    common = ["defend", str(world["teacher"]), "--proxy", str(world["labels"]), "--device", "cpu", "--quiet", "--batch-size", "4", "--ndf", "4"]
    out = tmp_path / "sharp.pt"
    r = runner.invoke(app, [*common, "--method", "akd", "--out", str(out)])
    assert r.exit_code == 0, r.output
    d = torch.load(out, weights_only=True)["defense"]
    # 4 augmented copies: a 5x set for round(14 / 5) = 3 epochs
    assert d["epochs"] == 3 and d["lambda_l1"] == 10.0 and d["distillation_inputs"] == N * 5
    assert d["distill_data"] == {"input_kind": "labels", "augment_copies": 4, "augment_ops": ["flip", "crop"], "recombine": "none", "recombine_copies": 0}
    assert d["objective"] == {"feature_matching": 10.0, "num_D": 2, "ema": 0.995}
    lib = tmp_path / "lib.pt"  # the same student through the library
    defend("akd", out=lib, teacher=world["teacher"], proxy=world["labels"], options=DistillOptions.sharp(batch_size=4, ndf=4), seed=0, device="cpu")
    assert _same(out, lib)
    assert default_options("akd") == DistillOptions.sharp() and default_options("dmp") == DistillOptions.paper()
    old = tmp_path / "old-flag.pt"  # --sharp, the flag of the release before, is the default
    r = runner.invoke(app, [*common, "--method", "akd", "--out", str(old), "--sharp"])
    assert r.exit_code == 0, r.output
    assert _same(out, old)
    # flags given override: a 7x set trains round(14 / 7) = 2 epochs, as many steps as 14 epochs of the proxy inputs; --ema 0: no EMA
    out2 = tmp_path / "override.pt"
    r = runner.invoke(app, [*common, "--method", "akd", "--out", str(out2), "--augment-copies", "4", "--recombine", "auto",
                            "--recombine-copies", "2", "--lambda-l1", "30", "--ema", "0"])
    assert r.exit_code == 0, r.output
    d = torch.load(out2, weights_only=True)["defense"]
    assert d["epochs"] == 2 and d["lambda_l1"] == 30.0 and d["distillation_inputs"] == N * 7
    assert d["distill_data"] == {"input_kind": "labels", "augment_copies": 4, "augment_ops": ["flip", "crop"], "recombine": "cutpaste", "recombine_copies": 2}
    assert d["objective"] == {"feature_matching": 10.0, "num_D": 2}
    # --paper: the paper's student
    out3 = tmp_path / "paper.pt"
    r = runner.invoke(app, [*common, "--method", "akd", "--out", str(out3), "--epochs", "1", "--paper"])
    assert r.exit_code == 0, r.output
    d = torch.load(out3, weights_only=True)["defense"]
    assert d["epochs"] == 1 and d["lambda_l1"] == 100.0 and "distill_data" not in d and "objective" not in d
