"""Checkpoint formats load to the same function, and unsafe or broken files are refused."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from conftest import TINY_ARCH, tiny_generator
from privaudit.defenses.gauss import OutputNoise
from privaudit.errors import CheckpointError, InputError
from privaudit.models.arch import ArchOverrides, UnetArch
from privaudit.models.checkpoint import load_model, save_checkpoint


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1


def _out(model, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model.module(x)


def test_privaudit_round_trip(tiny_checkpoint, tiny_net, x):
    loaded = load_model(tiny_checkpoint, device="cpu")
    assert loaded.format == "privaudit"
    assert loaded.arch == TINY_ARCH.to_dict()
    assert loaded.image_size == 32 and loaded.direction == "AtoB"
    assert loaded.defense == {"method": "none"}
    assert len(loaded.sha256) == 64
    assert not loaded.module.training  # eval mode: BatchNorm running stats, dropout off
    with torch.inference_mode():
        expected = tiny_net(x)
    assert torch.allclose(_out(loaded, x), expected, atol=1e-6)
    # Deterministic in eval mode: two passes agree.
    assert torch.equal(_out(loaded, x), _out(loaded, x))


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    save_checkpoint(tmp_path / "g.pt", generator=tiny_generator(), image_size=32, direction="AtoB")
    assert [p.name for p in tmp_path.iterdir()] == ["g.pt"]


@pytest.mark.parametrize(
    "arch,size",
    [
        (TINY_ARCH, 32),
        (UnetArch(num_downs=6, ngf=4, norm="instance"), 64),
        (UnetArch(num_downs=5, ngf=4, norm="none"), 32),
    ],
    ids=["d5-batch", "d6-instance", "d5-none"],
)
def test_bare_pix2pix_state_dict_with_module_prefix_loads_without_flags(tmp_path, arch, size):
    net = tiny_generator(arch)
    path = tmp_path / "latest_net_G.pth"
    # DataParallel-saved reference checkpoints carry a ``module.`` prefix on every key.
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, path)
    loaded = load_model(path, device="cpu")
    assert loaded.format == "pix2pix"
    assert {k: loaded.arch[k] for k in ("num_downs", "ngf", "norm", "input_nc", "output_nc")} == {
        "num_downs": arch.num_downs,
        "ngf": arch.ngf,
        "norm": arch.norm,
        "input_nc": 3,
        "output_nc": 3,
    }
    xs = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.inference_mode():
        expected = net(xs)
    assert torch.allclose(_out(loaded, xs), expected, atol=1e-6)


def test_bare_state_dict_without_prefix_loads(tmp_path, tiny_net, x):
    path = tmp_path / "g.pth"
    torch.save(tiny_net.state_dict(), path)
    loaded = load_model(path, device="cpu")
    assert loaded.format == "pix2pix"
    assert torch.allclose(_out(loaded, x), tiny_net(x), atol=1e-6)


def test_old_instance_norm_running_stats_are_ignored(tmp_path, x):
    # Pre-0.4 pix2pix InstanceNorm checkpoints carry running stats the layer no longer has.
    net = tiny_generator(UnetArch(num_downs=5, ngf=4, norm="instance"))
    state = dict(net.state_dict())
    state["model.model.1.model.2.running_mean"] = torch.zeros(8)
    state["model.model.1.model.2.running_var"] = torch.ones(8)
    torch.save(state, tmp_path / "old.pth")
    loaded = load_model(tmp_path / "old.pth", device="cpu")
    assert loaded.arch["norm"] == "instance"
    assert torch.allclose(_out(loaded, x), net(x), atol=1e-6)


def test_wrong_ngf_override_names_the_mismatching_keys(tmp_path):
    path = tmp_path / "g.pth"
    torch.save(tiny_generator().state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        load_model(path, overrides=ArchOverrides(ngf=8), device="cpu")
    msg = str(info.value)
    assert "ngf=8" in msg
    assert "shape mismatch" in msg
    assert "model.model.0.weight" in msg and "(4, 3, 4, 4)" in msg and "(8, 3, 4, 4)" in msg
    assert "\n" not in msg


def test_wrong_norm_override_names_missing_keys(tmp_path):
    path = tmp_path / "g.pth"
    torch.save(tiny_generator().state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        load_model(path, overrides=ArchOverrides(norm="instance"), device="cpu")
    msg = str(info.value)
    assert "missing" in msg and "unexpected" in msg and "model.model.0.bias" in msg


def test_wrong_override_on_privaudit_checkpoint(tiny_checkpoint):
    with pytest.raises(CheckpointError, match="model.model.0.weight"):
        load_model(tiny_checkpoint, overrides=ArchOverrides(ngf=8), device="cpu")


@pytest.mark.parametrize("how", ["trace", "script"])
def test_torchscript_file_loads_and_matches(tmp_path, tiny_net, x, how):
    path = tmp_path / "g_script.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.trace(tiny_net, x) if how == "trace" else torch.jit.script(tiny_net)
        scripted.save(str(path))
    loaded = load_model(path, device="cpu")
    assert loaded.format == "torchscript"
    with torch.inference_mode():
        expected = tiny_net(x)
    assert torch.allclose(_out(loaded, x), expected, atol=1e-6)


D6 = UnetArch(num_downs=6, ngf=4, norm="batch", use_dropout=True)  # one middle block, so dropout


def test_scripted_torchscript_keeps_dropout_switchable(tmp_path):
    net = tiny_generator(D6)
    path = tmp_path / "g_script.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(net).save(str(path))
    loaded = load_model(path, device="cpu")
    assert loaded.has_dropout
    xs = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert loaded.set_mode(stochastic=True) == "stochastic-dropout"
    assert not torch.equal(_out(loaded, xs), _out(loaded, xs))
    loaded.set_mode(stochastic=False)
    assert torch.allclose(_out(loaded, xs), net(xs), atol=1e-6)


def test_traced_torchscript_with_frozen_dropout_refuses_stochastic(tmp_path):
    # torch.jit.trace bakes dropout's train flag in as a constant: --stochastic would be a silent no-op.
    net = tiny_generator(D6)
    path = tmp_path / "g_trace.pt"
    xs = torch.rand(2, 3, 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(net, xs).save(str(path))
    loaded = load_model(path, device="cpu")
    with pytest.raises(InputError, match="drop --stochastic"):
        loaded.set_mode(stochastic=True)
    assert loaded.set_mode(stochastic=False) == "eval"


def test_stochastic_without_dropout_is_refused(tiny_checkpoint):
    loaded = load_model(tiny_checkpoint, device="cpu")  # num_downs 5: no middle blocks, no dropout
    with pytest.raises(InputError, match="no dropout"):
        loaded.set_mode(stochastic=True)


def test_torch_export_program_loads_and_matches(tmp_path, tiny_net, x):
    path = tmp_path / "g.pt2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(tiny_net, (x,))
        torch.export.save(program, str(path))
    loaded = load_model(path, device="cpu")
    assert loaded.format == "export"
    assert loaded.image_size == 32
    assert loaded.fixed_batch == 2
    with torch.inference_mode():
        expected = tiny_net(x)
    assert torch.allclose(_out(loaded, x), expected, atol=1e-5)
    with pytest.raises(InputError, match="drop --stochastic"):
        loaded.set_mode(stochastic=True)


# --- refusals ----------------------------------------------------------------------------------


class _Malicious:
    """Unpickling this calls ``open(marker, "w")``, creating the marker file: code execution."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused_without_running_code(tmp_path, tiny_net):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": tiny_net.state_dict(), "payload": _Malicious(str(marker))}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_model(path, device="cpu")
    assert not marker.exists()
    # The file really is dangerous: an unsafe load runs the payload (proves the test is meaningful).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.load(path, weights_only=False)
    assert marker.exists()


def test_malicious_pickle_as_whole_file_is_refused(tmp_path):
    marker = tmp_path / "PWNED2"
    path = tmp_path / "evil2.pth"
    torch.save(_Malicious(str(marker)), path)
    with pytest.raises(CheckpointError):
        load_model(path, device="cpu")
    assert not marker.exists()


def test_garbage_bytes_are_refused(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(bytes(range(256)) * 16)
    with pytest.raises(CheckpointError, match=str(path)):
        load_model(path, device="cpu")


def test_truncated_checkpoint_is_refused(tmp_path, tiny_checkpoint):
    data = Path(tiny_checkpoint).read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_model(path, device="cpu")


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_model(path, device="cpu")


def test_directory_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="folder"):
        load_model(tmp_path, device="cpu")


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope.pth", device="cpu")


def test_nan_weights_are_refused(tmp_path, tiny_net):
    state = dict(tiny_net.state_dict())
    state["model.model.0.weight"] = state["model.model.0.weight"].clone()
    state["model.model.0.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    with pytest.raises(CheckpointError, match="non-finite"):
        load_model(tmp_path / "nan.pth", device="cpu")


def test_non_generator_objects_are_refused(tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="not a state_dict"):
        load_model(tmp_path / "list.pth", device="cpu")
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a pix2pix U-Net"):
        load_model(tmp_path / "other.pth", device="cpu")


def test_unknown_future_format_is_refused(tmp_path, tiny_net):
    torch.save({"format": "privaudit.checkpoint/99", "state_dict": tiny_net.state_dict()}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="upgrade privaudit"):
        load_model(tmp_path / "future.pt", device="cpu")


@pytest.mark.parametrize("device, needle", [("tpu", "unknown --device 'tpu'"), ("meta", "unknown --device 'meta'"), ("cuda", "no CUDA GPU")])
def test_a_device_that_cannot_be_used_is_a_usage_error_not_a_bad_model(tiny_checkpoint, monkeypatch, device, needle):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match=needle):
        load_model(tiny_checkpoint, device=device)
    assert load_model(tiny_checkpoint, device="auto").device == torch.device("cpu")


def test_an_impossible_architecture_record_is_refused(tmp_path, tiny_checkpoint):
    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    ckpt["arch"]["norm"] = "layer"
    torch.save(ckpt, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="records an impossible architecture: invalid norm layer 'layer'"):
        load_model(tmp_path / "odd.pt", device="cpu")


# --- Gauss output noise ----------------------------------------------------------------------


@pytest.fixture
def gauss_checkpoint(tmp_path) -> Path:
    path = tmp_path / "gauss.pt"
    save_checkpoint(path, generator=tiny_generator(), image_size=32, direction="AtoB", defense={"method": "gauss", "sigma": 0.5})
    return path


def test_gauss_checkpoint_adds_seeded_noise(gauss_checkpoint, tiny_net, x):
    a = load_model(gauss_checkpoint, device="cpu", seed=0)
    assert a.defense["method"] == "gauss" and a.defense["sigma"] == 0.5
    assert isinstance(a.module, OutputNoise)
    clean = tiny_net(x).detach()
    out_a = _out(a, x)
    assert out_a.shape == clean.shape
    assert out_a.min() >= -1.0 and out_a.max() <= 1.0  # clamped like a deployed image
    assert (out_a - clean).abs().mean() > 0.1  # sigma 0.5 is visible
    same = _out(load_model(gauss_checkpoint, device="cpu", seed=0), x)
    other = _out(load_model(gauss_checkpoint, device="cpu", seed=1), x)
    assert torch.equal(out_a, same)
    assert not torch.allclose(out_a, other)
    # reseed restarts the noise stream
    a.reseed(0)
    assert torch.equal(_out(a, x), out_a)


def test_gauss_sigma_zero_is_the_plain_generator(tmp_path, tiny_net, x):
    path = tmp_path / "g0.pt"
    save_checkpoint(path, generator=tiny_generator(), image_size=32, direction="AtoB", defense={"method": "gauss", "sigma": 0.0})
    assert torch.allclose(_out(load_model(path, device="cpu"), x), tiny_net(x), atol=1e-6)


def test_gauss_negative_sigma_is_refused(tmp_path):
    path = tmp_path / "gneg.pt"
    save_checkpoint(path, generator=tiny_generator(), image_size=32, direction="AtoB", defense={"method": "gauss", "sigma": -1.0})
    with pytest.raises(CheckpointError, match="sigma"):
        load_model(path, device="cpu")
