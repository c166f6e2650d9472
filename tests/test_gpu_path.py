"""The GPU path (``privaudit.accel``), tested on the CPU: what each device and --precision resolve
to, that it is all off on the CPU, that bf16 autocast and channels_last (forced on the CPU here)
give the fp32 outputs within tolerance while every loss stays float32, that pinned memory is only
asked for on CUDA, that the process-wide switches are restored, and that checkpoints and reports
record what was used. A fake ``cuda`` device is only resolved, never computed on.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import privaudit.accel as accel_mod
from privaudit.accel import DPSGD_FP32, FOREIGN_FP32, Accel, resolve_accel
from privaudit.attacks.reconstruction import AttackConfig, reconstruction_losses
from privaudit.cli.app import app
from privaudit.data.images import load_pairs
from privaudit.errors import InputError, InternalError
from privaudit.models.arch import UnetArch
from privaudit.models.checkpoint import load_model, safe_torch_load
from privaudit.models.inference import iter_outputs
from privaudit.models.loaded import LoadedModel
from privaudit.models.networks import NLayerDiscriminator, init_weights
from privaudit.training.config import TrainConfig
from privaudit.training.pix2pix import GANLoss, discriminator_loss, fit, generator_loss, train
from privaudit.training.resume import check_resume_fingerprint

from conftest import tiny_generator, write_pairs

CPU = torch.device("cpu")
CUDA = torch.device("cuda", 0)  # resolved only: nothing runs on it
ARCH8 = UnetArch(input_nc=3, output_nc=3, num_downs=5, ngf=8, norm="batch", use_dropout=True)
# what bf16 autocast and channels_last look like, forced on the CPU (torch has CPU bf16 autocast)
FORCED = Accel(device=CPU, precision="bf16", requested="bf16", channels_last=True)


@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA GPU as far as resolving goes: ``supported`` says whether it has native bf16."""
    state = {"bf16": True}
    monkeypatch.setattr(accel_mod, "bf16_supported", lambda device: device.type == "cuda" and state["bf16"])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-16GB")
    return state


# ---------------------------------------------------------------------------------------------
# what each device and --precision resolve to


def test_everything_is_off_on_the_cpu():
    for asked in ("auto", "fp32"):
        a = resolve_accel(CPU, asked)
        assert (a.precision, a.requested, a.channels_last, a.cudnn_benchmark, a.pin_memory, a.note) == ("fp32", asked, False, False, False, None)
    assert resolve_accel(CPU, "auto", deterministic=True).record() == {
        "device": "cpu", "precision": "fp32", "requested_precision": "auto", "channels_last": False, "cudnn_benchmark": False,
        "deterministic": True, "pin_memory": False}


def test_bf16_on_the_cpu_and_unknown_precisions_are_refused():
    with pytest.raises(InputError, match="--precision bf16 runs on CUDA GPUs only"):
        resolve_accel(CPU, "bf16")
    with pytest.raises(InputError, match="unknown --precision 'fp16'; use auto, fp32 or bf16"):
        resolve_accel(CPU, "fp16")
    with pytest.raises(InputError, match="unknown --precision"):
        TrainConfig(precision="half").validate()


def test_auto_on_a_bf16_gpu_is_bf16_with_channels_last_autotuning_and_pinned_copies(fake_gpu):
    a = resolve_accel(CUDA, "auto")
    assert (a.precision, a.channels_last, a.cudnn_benchmark, a.pin_memory, a.deterministic, a.note) == ("bf16", True, True, True, False, None)
    assert resolve_accel(CUDA, "bf16").precision == "bf16"
    fp32 = resolve_accel(CUDA, "fp32")  # IEEE fp32 in NCHW, still autotuned and pinned
    assert (fp32.precision, fp32.channels_last, fp32.cudnn_benchmark, fp32.pin_memory) == ("fp32", False, True, True)
    det = resolve_accel(CUDA, "auto", deterministic=True)  # --deterministic: no autotuning
    assert (det.precision, det.cudnn_benchmark, det.deterministic) == ("bf16", False, True)
    assert a.record()["device"] == "cuda:0"


def test_a_gpu_without_native_bf16_runs_fp32_and_says_why(fake_gpu):
    fake_gpu["bf16"] = False
    a = resolve_accel(CUDA, "auto")
    assert a.precision == "fp32" and not a.channels_last and "Tesla V100-SXM2-16GB has no native bfloat16" in a.note
    with pytest.raises(InputError, match="needs a GPU with native bfloat16 .* use --precision fp32"):
        resolve_accel(CUDA, "bf16")


def test_dpsgd_and_foreign_models_stay_fp32_with_the_reason_recorded(fake_gpu):
    for reason in (DPSGD_FP32, FOREIGN_FP32):
        a = resolve_accel(CUDA, "auto", fp32_only=reason)
        assert (a.precision, a.channels_last, a.note, a.record()["note"]) == ("fp32", False, reason, reason)
        assert resolve_accel(CUDA, "fp32", fp32_only=reason).note is None  # asked for fp32: nothing to explain
        with pytest.raises(InputError, match="--precision bf16 is refused"):
            resolve_accel(CUDA, "bf16", fp32_only=reason)


def test_dp_step_refuses_a_bf16_run(monkeypatch, tmp_path: Path):
    """The invariant behind DPSGD_FP32, guarded where the DP step is built."""
    from privaudit.defenses import dpsgd

    monkeypatch.setattr(dpsgd, "train_accel", lambda cfg, fp32_only=None: FORCED)
    pairs = load_pairs(write_pairs(tmp_path / "d", 4), direction="AtoB")
    cfg = dpsgd.DPConfig(train=TrainConfig(epochs=1, batch_size=2, ndf=4, device="cpu"), noise_multiplier=1.0)
    with pytest.raises(InternalError, match="DP-SGD must run in fp32"):
        dpsgd.train_dpsgd(pairs, tmp_path / "dp.pt", direction="AtoB", arch=UnetArch(num_downs=5, ngf=4, norm="group"), cfg=cfg)
    assert not (tmp_path / "dp.pt").exists()


def test_opacus_clipping_in_bf16_breaks_the_norm_bound_which_is_why_dpsgd_stays_fp32():
    """The reason DPSGD_FP32 records, measured: Opacus 1.6 computes per-sample gradients and their
    norms in the autocast dtype, so clipped per-sample norms exceed C under bf16 (on CUDA as here on
    the CPU: the dtype logic is the same). If this starts failing, Opacus keeps fp32 norms and
    DP-SGD may use bf16 after all."""
    from opacus import GradSampleModule

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 4, 2, 1), nn.GroupNorm(4, 16), nn.LeakyReLU(0.2), nn.Conv2d(16, 1, 4, 1, 1))
    x = torch.randn(32, 3, 16, 16)
    worst = {}
    for amp in (False, True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gsm = GradSampleModule(net)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                out = gsm(x)
            (50 * out.float().square().mean()).backward()
        gs = [p.grad_sample for p in gsm.parameters()]
        # DPOptimizer.clip_and_accumulate: norms and clip factors in the grad samples' dtype
        norms = torch.stack([g.reshape(len(g), -1).norm(2, dim=-1) for g in gs], 1).norm(2, dim=1)
        factor = (1.0 / (norms + 1e-6)).clamp(max=1.0)
        exact = torch.stack([g.double().reshape(len(g), -1).norm(2, dim=-1) for g in gs], 1).norm(2, dim=1)
        assert exact.min() > 10  # every sample is clipped
        worst[amp] = float((factor.double() * exact).max())
        gsm._close()
    assert worst[False] <= 1 + 1e-6
    assert worst[True] > 1.001


# ---------------------------------------------------------------------------------------------
# the process-wide switches, pinned memory


def test_active_sets_the_cuda_switches_and_restores_the_callers(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    cudnn = torch.backends.cudnn
    before = (cudnn.benchmark, cudnn.deterministic, torch.are_deterministic_algorithms_enabled(), accel_mod._tf32())
    with Accel(device=CUDA, precision="fp32", cudnn_benchmark=False, deterministic=True).active():
        assert (cudnn.benchmark, cudnn.deterministic, torch.are_deterministic_algorithms_enabled()) == (False, True, True)
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert accel_mod._tf32() == (False, False)  # fp32 means IEEE: no TF32
        import os

        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    with Accel(device=CUDA, precision="bf16", channels_last=True, cudnn_benchmark=True).active():
        assert cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()
        assert accel_mod._tf32() == before[3]  # bf16 leaves the float32 settings to the caller
    assert (cudnn.benchmark, cudnn.deterministic, torch.are_deterministic_algorithms_enabled(), accel_mod._tf32()) == before


def test_active_on_the_cpu_touches_nothing_even_when_deterministic():
    cudnn = torch.backends.cudnn
    before = (cudnn.benchmark, cudnn.deterministic, torch.are_deterministic_algorithms_enabled(), accel_mod._tf32())
    with resolve_accel(CPU, "fp32", deterministic=True).active():
        assert (cudnn.benchmark, cudnn.deterministic, torch.are_deterministic_algorithms_enabled(), accel_mod._tf32()) == before


class _Spy:
    def __init__(self, monkeypatch):
        self.pinned = 0
        self.copies: list[dict] = []
        real_to = torch.Tensor.to
        spy = self

        def pin_memory(t, *args, **kwargs):
            spy.pinned += 1
            return t.clone()  # no accelerator here to pin for

        def to(t, *args, **kwargs):
            target = args[0] if args else kwargs.get("device")
            if isinstance(target, torch.device) and target.type == "cuda":
                spy.copies.append({"device": str(target), "non_blocking": kwargs.get("non_blocking", False)})
                return t  # stays on the CPU: nothing runs on the fake GPU
            return real_to(t, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
        monkeypatch.setattr(torch.Tensor, "to", to)


def test_batches_are_pinned_and_copied_without_blocking_on_cuda_only(monkeypatch, fake_gpu):
    spy = _Spy(monkeypatch)
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    cpu_out = resolve_accel(CPU, "auto").batch(x)
    assert torch.equal(cpu_out, x) and spy.pinned == 0 and spy.copies == []
    gpu = resolve_accel(CUDA, "auto")
    out = gpu.batch(x)
    assert spy.pinned == 1 and spy.copies == [{"device": "cuda:0", "non_blocking": True}]
    assert out.is_contiguous(memory_format=torch.channels_last) and torch.equal(out, x)


def test_training_on_the_cpu_never_asks_for_pinned_memory(monkeypatch, tmp_path: Path):
    spy = _Spy(monkeypatch)
    train(write_pairs(tmp_path / "d", 4), tmp_path / "g.pt", model=None, config=TrainConfig(epochs=1, batch_size=2, ndf=4, device="cpu"),
          size=32)
    assert spy.pinned == 0 and spy.copies == []


# ---------------------------------------------------------------------------------------------
# bf16 autocast and channels_last, forced on the CPU: same outputs within tolerance, float32 losses


def _loaded(net: nn.Module, accel: Accel | None) -> LoadedModel:
    model = LoadedModel(module=net, path="tiny.pt", sha256="0" * 64, format="privaudit", arch=ARCH8.to_dict(), image_size=32, accel=accel)
    if accel is not None:
        accel.module(net)
    return model


def test_forced_bf16_and_channels_last_give_the_fp32_outputs_and_losses_within_tolerance(tmp_path: Path):
    pairs = load_pairs(write_pairs(tmp_path / "p", 6), direction="AtoB")
    plain = _loaded(tiny_generator(ARCH8), None)
    nhwc = _loaded(tiny_generator(ARCH8), Accel(device=CPU, channels_last=True))
    mixed = _loaded(tiny_generator(ARCH8), FORCED)
    with torch.inference_mode():
        outs = {name: torch.cat([o for _, o in iter_outputs(m, pairs.inputs, batch_size=4)]) for name, m in
                (("fp32", plain), ("channels_last", nhwc), ("bf16", mixed))}
    assert all(o.dtype == torch.float32 for o in outs.values())  # whatever the forward pass ran in
    weights = [p for p in mixed.module.parameters() if p.ndim == 4]
    assert all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in weights)
    assert torch.allclose(outs["channels_last"], outs["fp32"], atol=1e-5)
    diff = (outs["bf16"] - outs["fp32"]).abs()
    assert 0 < diff.max() < 0.02  # bf16 did run, and stays within 1% of the [-1, 1] range
    cfg = AttackConfig(batch_size=4)
    losses = {name: reconstruction_losses(m, pairs, cfg) for name, m in (("fp32", plain), ("bf16", mixed))}
    assert losses["bf16"].dtype == np.float64
    np.testing.assert_allclose(losses["bf16"], losses["fp32"], rtol=1e-2)
    assert mixed.runtime.record()["precision"] == "bf16" and plain.runtime.record()["precision"] == "fp32"


def test_the_networks_run_under_autocast_but_the_losses_are_float32():
    torch.manual_seed(0)
    D = NLayerDiscriminator(6, ndf=4, norm="batch")
    init_weights(D)
    seen: list[torch.dtype] = []
    D.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    x, y, fake = (torch.rand(2, 3, 32, 32) * 2 - 1 for _ in range(3))
    loss_d, logged_d = discriminator_loss(D, GANLoss(), x, y, fake, amp=FORCED.autocast)
    loss_g, logged_g = generator_loss(D, GANLoss(), x, y, fake.bfloat16(), 100.0, amp=FORCED.autocast)
    assert seen == [torch.bfloat16] * 3  # D's three passes in bf16
    assert loss_d.dtype == loss_g.dtype == torch.float32
    ref_d, _ = discriminator_loss(D, GANLoss(), x, y, fake)
    assert seen[-1] == torch.float32 and abs(ref_d.item() - loss_d.item()) < 0.02
    # the L1 term of a bf16 output is computed in float32: exactly the float32 mean of the rounded output
    assert logged_g["G_L1"] == pytest.approx(float((fake.bfloat16().float() - y).abs().mean()), rel=1e-6)


def test_gauss_output_noise_is_float32_under_autocast():
    from privaudit.defenses.gauss import OutputNoise

    net = OutputNoise(tiny_generator(ARCH8), sigma=0.1, seed=3)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        plain = net(x)
        net.reseed(3)
        with FORCED.autocast():
            mixed = net(x)
    assert mixed.dtype == torch.float32 and (mixed - plain).abs().max() < 0.02


def test_a_forced_bf16_channels_last_run_trains_alike_records_it_and_saves_plain_weights(monkeypatch, tmp_path: Path):
    data = write_pairs(tmp_path / "d", 4)
    first: dict[str, dict[str, float]] = {}

    def run(name: str, accel: Accel | None) -> Path:
        if accel is not None:
            monkeypatch.setattr("privaudit.training.pix2pix.train_accel", lambda cfg, fp32_only=None: accel)
        out = tmp_path / f"{name}.pt"
        train(data, out, size=32, config=TrainConfig(epochs=1, batch_size=2, ndf=4, device="cpu", augment=True),
              on_step=lambda e, s, n, losses: first.setdefault(name, dict(losses)))
        return out

    plain, mixed = run("fp32", None), run("bf16", FORCED)
    for key in ("D_real", "D_fake", "G_GAN", "G_L1"):  # the first step, before any update: same networks, same batch
        assert first["bf16"][key] == pytest.approx(first["fp32"][key], rel=2e-2), key
    ckpt = safe_torch_load(mixed, what="checkpoint")
    assert ckpt["provenance"]["runtime"] == {"device": "cpu", "precision": "bf16", "requested_precision": "bf16", "channels_last": True,
                                             "cudnn_benchmark": False, "deterministic": False, "pin_memory": False}
    assert ckpt["provenance"]["training"]["precision"] == "auto"  # what was asked (the library's default)
    assert all(t.is_contiguous() for t in ckpt["state_dict"].values())  # trained in channels_last, saved in NCHW
    assert safe_torch_load(plain, what="checkpoint")["provenance"]["runtime"]["precision"] == "fp32"


def test_a_run_resumes_under_another_precision_and_old_states_with_amp_still_resume(tmp_path: Path):
    data = write_pairs(tmp_path / "d", 4)
    out = tmp_path / "g.pt"
    cfg = TrainConfig(epochs=1, batch_size=2, ndf=4, device="cpu", precision="fp32")
    train(data, out, size=32, config=cfg, keep_state=True)
    res = train(data, out, size=32, config=replace(cfg, epochs=2, precision="auto", deterministic=True), resume=True)
    assert [h.epoch for h in res.history] == [1, 2]  # the first epoch from the state, the second trained now
    prov = safe_torch_load(out, what="checkpoint")["provenance"]
    assert (prov["training"]["precision"], prov["training"]["deterministic"], prov["runtime"]["deterministic"]) == ("auto", True, True)
    # a state written before --precision recorded config.amp = true
    check_resume_fingerprint(out, {"config": {"lr": 2e-4, "amp": True}}, {"config": {"lr": 2e-4}})
    with pytest.raises(InputError, match=r"\(lr\)"):
        check_resume_fingerprint(out, {"config": {"lr": 2e-4, "amp": True}}, {"config": {"lr": 1e-4}})


# ---------------------------------------------------------------------------------------------
# recipes, models, reports, the command line


def test_recipe_keys_are_unchanged_by_the_precision_settings():
    """The keys below were computed by the code before --precision existed: reference folders and
    teacher caches built before stay valid, and precision is no part of a recipe."""
    from privaudit.references.recipe import Recipe, _train_config

    teacher = Recipe(kind="pix2pix", arch=ARCH8, image_size=32, direction="BtoA", train_count=12, training=TrainConfig(epochs=3, batch_size=2))
    akd = Recipe(kind="akd", arch=ARCH8, image_size=32, direction="BtoA", train_count=12, training=TrainConfig(epochs=2),
                 params={"proxy_count": 5, "proxy_layout": "inputs"}, teacher=teacher)
    assert (teacher.recipe_key(), akd.recipe_key()) == ("f304a948b296b0ad", "56b19559354a059e")
    bf16 = replace(teacher, training=replace(teacher.training, precision="bf16", deterministic=True))
    assert bf16.recipe_key() == teacher.recipe_key()
    recorded = {"epochs": 3, "batch_size": 2, "amp": True}  # a checkpoint from before --precision
    assert _train_config(recorded, "old.pt").epochs == 3
    assert _train_config({**recorded, "precision": "bf16", "deterministic": False}, "new.pt").batch_size == 2
    from privaudit.errors import CheckpointError

    with pytest.raises(CheckpointError, match="invalid training precision"):
        _train_config({**recorded, "precision": 16}, "bad.pt")


def test_load_model_and_reports_record_the_inference_precision(tiny_checkpoint: Path, tmp_path: Path):
    assert load_model(tiny_checkpoint, device="cpu").runtime.record()["precision"] == "fp32"
    with pytest.raises(InputError, match="--precision bf16 runs on CUDA GPUs only"):
        load_model(tiny_checkpoint, device="cpu", precision="bf16")
    members, nonmembers = write_pairs(tmp_path / "m", 3), write_pairs(tmp_path / "n", 3, seed=1)
    r = CliRunner().invoke(app, ["attack", str(tiny_checkpoint), "--members", str(members), "--nonmembers", str(nonmembers), "--allow-small",
                                 "--bootstrap", "0", "--device", "cpu", "--precision", "fp32", "--json", "-", "-q"])
    assert r.exit_code == 0, r.output
    runtime = json.loads(r.stdout)["environment"]["runtime"]
    assert (runtime["precision"], runtime["requested_precision"], runtime["channels_last"]) == ("fp32", "fp32", False)


@pytest.mark.parametrize("command", [["train", "{d}", "--out", "{o}"], ["defend", "--method", "dpsgd", "--train-data", "{d}", "--out", "{o}"],
                                     ["defend", "{t}", "--method", "akd", "--proxy", "{d}", "--out", "{o}"],
                                     ["attack", "{t}", "--members", "{d}", "--nonmembers", "{d}"]])
def test_precision_bf16_on_the_cpu_is_one_line_and_exit_2_before_any_work(command, tmp_path: Path, tiny_checkpoint: Path):
    d = write_pairs(tmp_path / "d", 2)
    args = [a.format(d=d, o=tmp_path / "o.pt", t=tiny_checkpoint) for a in command]
    r = CliRunner().invoke(app, [*args, "--device", "cpu", "--precision", "bf16"])
    assert r.exit_code == 2, r.output
    assert r.stderr.strip().splitlines() == ["privaudit: error: --precision bf16 runs on CUDA GPUs only; on the CPU use --precision fp32 "
                                             "(or auto, which is fp32 there)"]
    assert not (tmp_path / "o.pt").exists()


@pytest.mark.parametrize("command", ["train", "defend", "attack", "evaluate", "references"])
def test_every_command_that_runs_a_network_offers_precision_and_deterministic(command):
    r = CliRunner().invoke(app, [command, "--help"], terminal_width=200)
    assert r.exit_code == 0 and "--precision" in r.output and "--deterministic" in r.output


# ---------------------------------------------------------------------------------------------
# benchmarks/scale.py's GPU modes


def _scale(*args: str) -> "subprocess.CompletedProcess[str]":
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "PRIVAUDIT_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(root / "benchmarks" / "scale.py"), *args], env=env, capture_output=True, text=True, timeout=300)


def test_the_gpu_benchmarks_say_they_are_skipped_without_a_gpu():
    r = _scale("--gpu-precision", "--paper-akd", "--gpu-device", "cpu")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "skipped --gpu-precision and --paper-akd: --gpu-device cpu is no CUDA device; the GPU path only runs on a CUDA GPU"


def test_the_gpu_benchmarks_code_runs_when_forced_onto_the_cpu():
    """What a GPU machine runs, checked here on a tiny CPU setting: fp32 measured, bf16 refused with its reason."""
    r = _scale("--gpu-precision", "--paper-akd", "--allow-cpu", "--gpu-device", "cpu", "--gpu-size", "32", "--gpu-ngf", "4", "--gpu-pairs", "4",
               "--gpu-epochs", "2", "--gpu-rounds", "1", "--akd-epochs", "2", "--proxy", "3")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    fp32 = next(line for line in lines if line.startswith("fp32 "))
    assert len(fp32.split()) == 4 and all(float(v) > 0 for v in fp32.split()[1:])
    assert any(line.startswith("bf16 ") and "n/a" in line and "--precision bf16 runs on CUDA GPUs only" in line for line in lines)
    assert any(line.startswith("AKD wall time: ") for line in lines)
    assert any(line.startswith("projected to the paper's 200 epochs: ") for line in lines)
    assert "precision fp32 (asked auto), channels_last False" in r.stdout
