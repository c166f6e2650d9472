"""A stranger's file never runs code: payloads in every part of every file privaudit reads.

A payload is a pickle whose unpickling touches a marker file (or TorchScript code or export-program
JSON that would create it). For every kind of member of a real ``torch.export.save`` archive, of a
TorchScript archive, for pickles inside privaudit checkpoints, pix2pix state_dicts, resume states and
Inception weights, and for each command that reads such a file, privaudit must exit 2 with one line
on stderr, no traceback, the marker absent and no output written. The "trap is real" tests show that
torch alone would run these payloads, so the refusals are what keeps the marker away; the legitimate
files still load.
"""

from __future__ import annotations

import importlib.util
import io
import json
import pickle
import sys
import warnings
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pytest
import torch
from typer.testing import CliRunner

from conftest import tiny_generator, write_pairs
from privaudit.cli.app import app
from privaudit.errors import CheckpointError, WeightsError
from privaudit.evaluation.inception import vet_inception_weights
from privaudit.models import vetting
from privaudit.models.checkpoint import load_model, save_checkpoint

runner = CliRunner()


class _Evil:
    """Unpickling this touches ``marker``: code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def torch_payload(marker: Path) -> bytes:
    """A torch.save archive holding the payload (what torch.load unpickles)."""
    buf = io.BytesIO()
    torch.save((_Evil(marker),), buf)
    return buf.getvalue()


def pickle_payload(marker: Path, protocol: int = 2) -> bytes:
    return pickle.dumps({"x": _Evil(marker)}, protocol=protocol)


def rewrite(src: Path, dst: Path, *, replace: dict[str, bytes] | None = None, add: dict[str, bytes] | None = None,
            drop: tuple[str, ...] = (), edit_json: dict[str, Callable[[dict], None]] | None = None) -> Path:
    """Copy archive ``src`` to ``dst`` with members (named relative to the archive folder) replaced, added, dropped or their JSON edited."""
    replace, add, edit_json = replace or {}, add or {}, edit_json or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        root = zin.namelist()[0].split("/", 1)[0]
        for info in zin.infolist():
            rel = info.filename[len(root) + 1 :]
            if rel in drop:
                continue
            blob = replace.get(rel, zin.read(info))
            if rel in edit_json:
                doc = json.loads(blob)
                edit_json[rel](doc)
                blob = json.dumps(doc).encode()
            zout.writestr(info, blob)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a duplicate name is one of the attacks
            for rel, blob in add.items():
                zout.writestr(f"{root}/{rel}", blob)
    return dst


def members_of(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as zf:
        root = zf.namelist()[0].split("/", 1)[0]
        return [n[len(root) + 1 :] for n in zf.namelist()]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("payloads")
    net = tiny_generator()
    w = SimpleNamespace(root=root, net=net)
    w.members = write_pairs(root / "m", 10, seed=1)
    w.nonmembers = write_pairs(root / "n", 10, seed=2)
    w.pt2 = root / "good.pt2"
    torch.export.save(torch.export.export(net, (torch.randn(2, 3, 32, 32),)), w.pt2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w.script = root / "script.pt"
        torch.jit.script(net).save(str(w.script), _extra_files={"meta.json": '{"note": "text"}'})
        w.trace = root / "trace.pt"
        torch.jit.trace(net, torch.randn(1, 3, 32, 32)).save(str(w.trace))
    w.ckpt = root / "tiny.pt"
    save_checkpoint(w.ckpt, generator=net, image_size=32, direction="AtoB")
    w.pix = root / "latest_net_G.pth"
    torch.save(net.state_dict(), w.pix)
    return w


def _command(cmd: str, model: Path, w: SimpleNamespace, out: Path) -> tuple[list[str], list[Path]]:
    """Arguments of ``cmd`` reading MODEL, and the outputs it would write."""
    data = ["--members", str(w.members), "--nonmembers", str(w.nonmembers), "--direction", "AtoB"]
    if cmd == "attack":
        return ["attack", str(model), *data, "--json", str(out / "r.json"), "--scores", str(out / "s.csv"), "--quiet"], [out / "r.json", out / "s.csv"]
    if cmd == "evaluate":
        return ["evaluate", str(model), *data, "--no-kid", "--json", str(out / "r.json"), "--quiet"], [out / "r.json"]
    if cmd == "defend":  # the model as a distillation teacher
        return ["defend", str(model), "--method", "dmp", "--proxy", str(w.nonmembers), "--direction", "AtoB", "--epochs", "1",
                "--batch-size", "4", "--ngf", "4", "--out", str(out / "student.pt"), "--quiet"], [out / "student.pt", out / "student.pt.state"]
    if cmd == "gauss":
        return ["defend", str(model), "--method", "gauss", "--sigma", "0.1", "--direction", "AtoB", "--size", "32",
                "--out", str(out / "noisy.pt"), "--quiet"], [out / "noisy.pt"]
    raise ValueError(cmd)


def assert_refused(result, marker: Path, outputs: list[Path], mentions: Path | None = None) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    if mentions is not None:
        assert str(mentions) in lines[0], lines[0]
    assert not marker.exists(), "the payload ran"
    for out in outputs:
        assert not out.exists(), f"{out} was written"
    return lines[0]


# ---------------------------------------------------------------------------------------------- .pt2

def _use_pickle(doc: dict) -> None:
    doc["config"]["model.model.0.weight"]["use_pickle"] = True


def _opaque_constant(doc: dict) -> None:
    doc["config"]["evil"] = {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True, "tensor_meta": None}


def _custom_constant(doc: dict) -> None:
    doc["config"]["evil"] = {"path_name": "custom_obj_0", "is_param": False, "use_pickle": False, "tensor_meta": None}


def _guards(marker: Path) -> Callable[[dict], None]:
    def edit(doc: dict) -> None:
        doc["guards_code"] = [f"__import__('pathlib').Path({str(marker)!r}).touch() is None"]
    return edit


def _sympy(marker: Path) -> Callable[[dict], None]:
    def edit(doc: dict) -> None:
        sizes = doc["graph_module"]["graph"]["tensor_values"]["x"]["sizes"]
        sizes[0] = {"as_expr": {"expr_str": f"__import__('pathlib').Path({str(marker)!r}).touch()", "hint": {"as_int": 2}}}
    return edit


def _target(marker: Path) -> Callable[[dict], None]:
    def edit(doc: dict) -> None:
        doc["graph_module"]["graph"]["nodes"].insert(0, {
            "target": "torch.os.system", "inputs": [{"name": "cmd", "arg": {"as_string": f"touch {marker}"}, "kind": 1}],
            "outputs": [], "metadata": {}, "is_hop_single_tensor_return": None, "name": "evil"})
    return edit


def _name(marker: Path) -> Callable[[dict], None]:
    def edit(doc: dict) -> None:  # the placeholder's name is pasted into generated Python
        evil = f"x=__import__('pathlib').Path({str(marker)!r}).touch()"
        text = json.dumps(doc).replace('"x"', json.dumps(evil))
        doc.clear()
        doc.update(json.loads(text))
    return edit


def _string_input(doc: dict) -> None:
    doc["graph_module"]["graph"]["inputs"].append({"as_string": "x' or __import__('os') or '"})


def _file_op(doc: dict) -> None:
    doc["graph_module"]["graph"]["nodes"][0]["target"] = "torch.ops.aten.from_file.default"


def _pt2_cases(w: SimpleNamespace, marker: Path) -> dict[str, dict]:
    """Case id -> rewrite() arguments turning the good archive into a bad one."""
    pay = torch_payload(marker)
    return {
        # every kind of member torch.export.save writes, replaced by the payload
        "replace-weight": {"replace": {"data/weights/weight_0": pay}},
        "replace-weights-config": {"replace": {"data/weights/model_weights_config.json": pay}},
        "replace-constants-config": {"replace": {"data/constants/model_constants_config.json": pay}},
        "replace-program": {"replace": {"models/model.json": pay}},
        "replace-sample-inputs": {"replace": {"data/sample_inputs/model.pt": pay}},
        "replace-archive-format": {"replace": {"archive_format": pay}},
        "replace-archive-version": {"replace": {"archive_version": pay}},
        "replace-byteorder": {"replace": {"byteorder": pay}},
        "replace-data-version": {"replace": {".data/version": pay}},
        "replace-serialization-id": {"replace": {".data/serialization_id": pay}},
        # members added: legacy pickled weights/constants (the reviewer's hole), strays, compiled code
        "legacy-weights": {"add": {"data/weights/model.pt": pay}},
        "legacy-constants": {"add": {"data/constants/model.pt": pay}},
        "legacy-weights-pickle4": {"add": {"data/weights/model.pt": pickle_payload(marker, 4)}},
        "sample-inputs-extra": {"add": {"data/sample_inputs/other.pt": pay}},
        "unlisted-tensor": {"add": {"data/constants/tensor_0": pay}},
        "unknown-member": {"add": {"payload.pkl": pay}},
        "extra-file": {"add": {"extra/notes.pt": pay}},
        "extra-file-pickle0": {"add": {"extra/notes.txt": pickle.dumps(_Evil(marker), protocol=0)}},
        "second-program": {"add": {"models/other.json": pay}},
        "aotinductor": {"add": {"data/aotinductor/model/model.so": b"\x7fELF" + pay}},
        "duplicate-member": {"add": {"data/sample_inputs/model.pt": pay}},
        # payloads the config or the program asks torch to unpickle, eval, exec or call
        "use-pickle-weight": {"replace": {"data/weights/weight_0": pay}, "edit_json": {"data/weights/model_weights_config.json": _use_pickle}},
        "opaque-constant": {"add": {"data/constants/opaque_obj_0": pickle_payload(marker)},
                            "edit_json": {"data/constants/model_constants_config.json": _opaque_constant}},
        "custom-constant": {"add": {"data/constants/custom_obj_0": pay}, "edit_json": {"data/constants/model_constants_config.json": _custom_constant}},
        "guards-code": {"edit_json": {"models/model.json": _guards(marker)}},
        "sympy-expr": {"edit_json": {"models/model.json": _sympy(marker)}},
        "call-target": {"edit_json": {"models/model.json": _target(marker)}},
        "name-injection": {"edit_json": {"models/model.json": _name(marker)}},
        "string-input": {"edit_json": {"models/model.json": _string_input}},
        "file-operator": {"edit_json": {"models/model.json": _file_op}},
    }


PT2_CASES = list(_pt2_cases(SimpleNamespace(), Path("m")))


@pytest.mark.parametrize("case", PT2_CASES)
@pytest.mark.parametrize("cmd", ["attack", "evaluate", "defend"])
def test_pt2_payloads_are_refused_by_every_command(world, tmp_path, case, cmd):
    marker = tmp_path / "PWNED"
    bad = rewrite(world.pt2, tmp_path / f"{case}.pt2", **_pt2_cases(world, marker)[case])
    args, outputs = _command(cmd, bad, world, tmp_path)
    assert_refused(runner.invoke(app, args), marker, outputs, mentions=bad)


def test_every_pt2_member_replaced_by_a_payload_is_refused(world, tmp_path):
    """All members of a real archive (every weight file too), through the library."""
    marker = tmp_path / "PWNED"
    pay = torch_payload(marker)
    names = members_of(world.pt2)
    assert len(names) > 40 and "data/weights/weight_45" in names
    for rel in names:
        bad = rewrite(world.pt2, tmp_path / "bad.pt2", replace={rel: pay})
        with pytest.raises(CheckpointError, match=str(bad)) as err:
            load_model(bad, device="cpu")
        assert "\n" not in str(err.value), rel
        assert not marker.exists(), rel


@pytest.mark.parametrize("case", ["legacy-weights", "use-pickle-weight", "opaque-constant", "guards-code", "sympy-expr", "sample-inputs-pickled"])
def test_pt2_trap_is_real_torch_alone_runs_the_payload(world, tmp_path, case):
    marker = tmp_path / "PWNED"
    cases = _pt2_cases(world, marker)
    cases["sample-inputs-pickled"] = {"replace": {"data/sample_inputs/model.pt": torch_payload(marker)}}
    bad = rewrite(world.pt2, tmp_path / "bad.pt2", **cases[case])
    with pytest.raises(CheckpointError, match="could run code"):
        load_model(bad, device="cpu")
    assert not marker.exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.export.load(str(bad)).module()(torch.randn(2, 3, 32, 32))
        except Exception:
            pass  # the payload has run by the time torch notices anything
    assert marker.exists()


def test_guard_blocks_unrestricted_unpickling_even_without_vetting(world, tmp_path):
    """Defense in depth: torch.export.load of a payload archive under guarded_export_load runs nothing."""
    marker = tmp_path / "PWNED"
    bad = rewrite(world.pt2, tmp_path / "bad.pt2", add={"data/weights/model.pt": torch_payload(marker)})
    with warnings.catch_warnings(), vetting.guarded_export_load() as refused:
        warnings.simplefilter("ignore")
        with pytest.raises(Exception) as err:
            torch.export.load(str(bad))
    assert vetting.is_guard_refusal(err.value) and refused
    assert not marker.exists()
    assert torch.load is not None and torch.load.__module__ == "torch.serialization"  # restored


def test_guard_blocks_unvetted_guard_code_and_sympy(world, tmp_path):
    marker = tmp_path / "PWNED"
    for edit in (_guards(marker), _sympy(marker)):
        bad = rewrite(world.pt2, tmp_path / "bad.pt2", edit_json={"models/model.json": edit})
        with warnings.catch_warnings(), vetting.guarded_export_load() as refused:
            warnings.simplefilter("ignore")
            try:
                torch.export.load(str(bad)).module()(torch.randn(2, 3, 32, 32))
            except Exception:
                pass
        assert refused, edit
        assert not marker.exists()


def test_legitimate_pt2_files_still_load(world, tmp_path):
    x = torch.randn(2, 3, 32, 32)
    expected = world.net(x)
    assert torch.allclose(load_model(world.pt2, device="cpu").module(x), expected, atol=1e-5)
    # torch 2.8 wrote weights as a pickle of plain tensors (legacy): loaded through the restricted unpickler
    ep = torch.export.load(str(world.pt2))
    legacy = rewrite(world.pt2, tmp_path / "legacy.pt2", drop=tuple(n for n in members_of(world.pt2) if n.startswith(("data/weights/", "data/constants/"))),
                     add={"data/weights/model.pt": _tsave(dict(ep.state_dict)), "data/constants/model.pt": _tsave(dict(ep.constants))})
    assert torch.allclose(load_model(legacy, device="cpu").module(x), expected, atol=1e-5)
    # extra files and a dynamic batch (symbolic shapes, range constraints) are fine
    b = torch.export.Dim("b", min=1, max=64)
    dyn = tmp_path / "dyn.pt2"
    torch.export.save(torch.export.export(world.net, (x,), dynamic_shapes=({0: b},)), dyn, extra_files={"notes.txt": "trained on facades"})
    assert torch.allclose(load_model(dyn, device="cpu").module(x[:1]), world.net(x[:1]), atol=1e-5)
    # shape arithmetic: torch records guard code (exec-ed at load) and srepr expressions; both pass the checks
    guarded = tmp_path / "guarded.pt2"
    d = torch.export.Dim("d", min=2, max=64)
    torch.export.save(torch.export.export(_Halve(), (torch.randn(4, 6),), dynamic_shapes=({0: 2 * d},)), guarded)
    with zipfile.ZipFile(guarded) as zf:
        assert json.loads(zf.read("guarded/models/model.json"))["guards_code"]  # the test means something
    y = torch.randn(8, 6)
    assert torch.equal(load_model(guarded, device="cpu").module(y), _Halve()(y))
    r = runner.invoke(app, ["attack", str(world.pt2), "--members", str(world.members), "--nonmembers", str(world.nonmembers), "--direction", "AtoB", "--quiet"])
    assert r.exit_code == 0, r.output


class _Halve(torch.nn.Module):
    def forward(self, x):
        n = x.shape[0]
        return x.reshape(n // 2, -1) if n % 2 == 0 else x[:1]


def test_guard_code_and_expressions_torch_writes_pass_the_checks():
    assert vetting.guard_is_safe("(L['x'].size()[0] % 2) == 0")
    assert vetting.guard_is_safe("((6*L['x'].size()[0]) // (L['x'].size()[0] // 2)) != (L['x'].size()[0] // (L['x'].size()[0] // 2))")
    assert vetting.sympy_expr_is_safe("Symbol('s77', positive=True, integer=True)")
    assert vetting.sympy_expr_is_safe("Mul(Integer(2), Symbol('s40', positive=True, integer=True))")
    assert vetting.sympy_expr_is_safe("2*s40 + FloorDiv(s1, 4)")
    for bad in ("__import__('os').system('id')", "L['x'].__class__", "exec('1')", "L['x'].size()[0] == eval('1')", "(lambda: 1)()",
                "L['a\"b'].size()[0] == 1", "[c for c in ()]"):
        assert not vetting.guard_is_safe(bad), bad
    for bad in ("S('x')", "sympify('1')", "FloorDiv('__import__(\"os\")', 2)", "Symbol('a b')", "x.__class__", "Symbol('s0', positive=eval)"):
        assert not vetting.sympy_expr_is_safe(bad), bad


def _tsave(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- TorchScript

_SAVER = '''
import torch


class Saver(torch.nn.Module):
    def forward(self, x):
        torch.save(x, {marker!r})
        return x


class Reader(torch.nn.Module):
    def forward(self, x):
        y = torch.ops.debugprims.load_tensor({marker!r}, [1], [1], dtype=torch.float32, device=torch.device("cpu"))
        return x + y
'''


def _scripted_file_writer(tmp: Path, marker: Path, which: str) -> Path:
    """A TorchScript model whose code writes (torch.save) or reads files: the marker is the file it writes."""
    src = tmp / f"evil_{which.lower()}_mod.py"
    src.write_text(_SAVER.format(marker=str(marker)))
    spec = importlib.util.spec_from_file_location(src.stem, src)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[src.stem] = mod
    spec.loader.exec_module(mod)
    path = tmp / f"{which}.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(getattr(mod, which)()).save(str(path))
    return path


def _ts_cases(w: SimpleNamespace, marker: Path) -> dict[str, tuple[str, dict]]:
    """Case id -> (archive: script|trace, rewrite() arguments)."""
    pay, raw = torch_payload(marker), pickle_payload(marker)
    code = next(n for n in members_of(w.script) if n.startswith("code/") and n.endswith(".py")) if hasattr(w, "script") else "code/x.py"
    debug = code + ".debug_pkl"
    return {
        "data-pkl": ("script", {"replace": {"data.pkl": raw}}),
        "data-pkl-protocol4": ("script", {"replace": {"data.pkl": pickle_payload(marker, 4)}}),
        "constants-pkl": ("script", {"replace": {"constants.pkl": raw}}),
        "debug-pkl": ("script", {"replace": {debug: raw}}),
        "code": ("script", {"replace": {code: pay}}),
        "storage": ("script", {"replace": {"data/0": pay}}),
        "extra-file": ("script", {"replace": {"extra/meta.json": pay}}),
        "extra-file-pickle0": ("script", {"replace": {"extra/meta.json": pickle.dumps(_Evil(marker), protocol=0)}}),
        "version": ("script", {"replace": {"version": pay}}),
        "traced-inputs": ("trace", {"replace": {"traced_inputs.pkl": raw}}),
        "unknown-member": ("script", {"add": {"bytecode.pkl": raw}}),
        "duplicate-member": ("script", {"add": {"data.pkl": raw}}),
    }


TS_CASES = list(_ts_cases(SimpleNamespace(), Path("m")))


@pytest.mark.parametrize("case", TS_CASES)
@pytest.mark.parametrize("cmd", ["attack", "evaluate", "defend"])
def test_torchscript_payloads_are_refused_by_every_command(world, tmp_path, case, cmd):
    marker = tmp_path / "PWNED"
    which, how = _ts_cases(world, marker)[case]
    bad = rewrite(getattr(world, which), tmp_path / f"{case}.pt", **how)
    args, outputs = _command(cmd, bad, world, tmp_path)
    assert_refused(runner.invoke(app, args), marker, outputs, mentions=bad)


@pytest.mark.parametrize("which", ["Saver", "Reader"])
@pytest.mark.parametrize("cmd", ["attack", "evaluate", "defend"])
def test_torchscript_code_that_touches_files_is_refused(world, tmp_path, which, cmd):
    marker = tmp_path / "PWNED"
    bad = _scripted_file_writer(tmp_path, marker, which)
    args, outputs = _command(cmd, bad, world, tmp_path)
    line = assert_refused(runner.invoke(app, args), marker, outputs, mentions=bad)
    assert "could run code" in line


def test_torchscript_trap_is_real(world, tmp_path):
    """torch.jit.load runs no pickle payload (its unpickler is C++), but the model's code writes files."""
    marker = tmp_path / "PWNED"
    bad = rewrite(world.script, tmp_path / "bad.pt", replace={"data.pkl": pickle_payload(marker)})
    with pytest.raises(RuntimeError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.load(str(bad))
    assert not marker.exists()
    saver = _scripted_file_writer(tmp_path, marker, "Saver")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.load(str(saver))(torch.zeros(1))
    assert marker.exists()


def test_every_torchscript_member_replaced_by_a_payload_is_refused(world, tmp_path):
    marker = tmp_path / "PWNED"
    for src in (world.script, world.trace):
        for rel in members_of(src):  # pickles get a bare pickle (what torch's unpickler reads), the rest a torch.save archive
            pay = pickle_payload(marker) if rel.endswith("pkl") else torch_payload(marker)
            bad = rewrite(src, tmp_path / "bad.pt", replace={rel: pay})
            with pytest.raises(CheckpointError, match=str(bad)) as err:
                load_model(bad, device="cpu")
            assert "\n" not in str(err.value), rel
            assert not marker.exists(), rel


def test_legitimate_torchscript_files_still_load(world):
    x = torch.randn(1, 3, 32, 32)
    for path in (world.script, world.trace):
        assert torch.allclose(load_model(path, device="cpu").module(x), world.net(x), atol=1e-5)
        r = runner.invoke(app, ["attack", str(path), "--members", str(world.members), "--nonmembers", str(world.nonmembers), "--direction", "AtoB", "--quiet"])
        assert r.exit_code == 0, r.output


# ---------------------------------------------------------------------------------------------- pickles privaudit reads


def _pickled_cases(w: SimpleNamespace, marker: Path) -> dict[str, bytes]:
    evil = _Evil(marker)
    sd = dict(w.net.state_dict()) if hasattr(w, "net") else {}
    ckpt = torch.load(w.ckpt, weights_only=True) if hasattr(w, "ckpt") else {}
    cases: dict[str, object] = {
        "checkpoint-provenance": {**ckpt, "provenance": {"note": evil}},
        "checkpoint-weight": {**ckpt, "state_dict": {**sd, "model.model.0.weight": evil}},
        "state-dict-value": {**sd, "model.model.0.weight": evil},
        "state-dict-extra": {**sd, "evil": evil},
        "whole-file": evil,
    }
    out = {k: _tsave(v) for k, v in cases.items()}
    out["raw-pickle-protocol2"] = pickle_payload(marker, 2)
    out["raw-pickle-protocol4"] = pickle_payload(marker, 4)
    return out


PICKLED_CASES = list(_pickled_cases(SimpleNamespace(), Path("m")))


@pytest.mark.parametrize("case", PICKLED_CASES)
@pytest.mark.parametrize("cmd", ["attack", "evaluate", "defend", "gauss"])
def test_checkpoint_and_state_dict_payloads_are_refused_by_every_command(world, tmp_path, case, cmd):
    marker = tmp_path / "PWNED"
    bad = tmp_path / "evil_net_G.pth"
    bad.write_bytes(_pickled_cases(world, marker)[case])
    args, outputs = _command(cmd, bad, world, tmp_path)
    line = assert_refused(runner.invoke(app, args), marker, outputs, mentions=bad)
    assert "could run code" in line


def _state_payload(marker: Path, fmt: str) -> bytes:
    return _tsave({"format": fmt, "epoch": 1, "fingerprint": {"config": _Evil(marker)}, "generator": {}})


@pytest.mark.parametrize("cmd", ["train", "akd", "dmp", "dpsgd"])
def test_resume_state_payloads_are_refused(world, tmp_path, cmd):
    marker = tmp_path / "PWNED"
    out = tmp_path / "model.pt"
    state = tmp_path / "model.pt.state"
    fmt = "privaudit.dpsgd-state/1" if cmd == "dpsgd" else "privaudit.train-state/1"
    state.write_bytes(_state_payload(marker, fmt))
    before = state.read_bytes()
    common = ["--epochs", "2", "--batch-size", "4", "--ngf", "4", "--ndf", "8", "--no-augment", "--out", str(out), "--resume", "--quiet"]
    if cmd == "train":
        args = ["train", str(world.members), "--direction", "AtoB", *common]
    elif cmd == "dpsgd":
        args = ["defend", "--method", "dpsgd", "--train-data", str(world.members), "--direction", "AtoB", *common]
    else:
        args = ["defend", str(world.ckpt), "--method", cmd, "--proxy", str(world.nonmembers), "--direction", "AtoB", *common]
    line = assert_refused(runner.invoke(app, args), marker, [out], mentions=state)
    assert "could run code" in line
    assert state.read_bytes() == before


def _weights_cases(marker: Path) -> dict[str, bytes]:
    return {
        "value": _tsave({"fc.weight": _Evil(marker), "fc.bias": torch.zeros(1008)}),
        "whole-file": _tsave(_Evil(marker)),
        "raw-pickle-protocol2": pickle_payload(marker, 2),
        "raw-pickle-protocol4": pickle_payload(marker, 4),
        "zip-with-raw-pickle": _zip_with_data_pkl(pickle_payload(marker, 2)),
    }


def _zip_with_data_pkl(pkl: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", pkl)
        zf.writestr("archive/version", "3\n")
        zf.writestr("archive/byteorder", "little")
    return buf.getvalue()


@pytest.mark.parametrize("case", list(_weights_cases(Path("m"))))
def test_inception_weights_payloads_are_refused(world, tmp_path, case):
    marker = tmp_path / "PWNED"
    weights = tmp_path / "weights.pth"
    weights.write_bytes(_weights_cases(marker)[case])
    args = ["evaluate", str(world.ckpt), "--members", str(world.members), "--nonmembers", str(world.nonmembers), "--direction", "AtoB",
            "--inception-weights", str(weights), "--no-feature-cache", "--json", str(tmp_path / "r.json"), "--quiet"]
    line = assert_refused(runner.invoke(app, args), marker, [tmp_path / "r.json"], mentions=weights)
    assert line.startswith("privaudit: refusing") or "refusing" in line
    assert "could run code" in line


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (bytes(range(256)) * 16, "not a torch weights file or is corrupt"),
        (b"\x80\x02" + bytes(range(200)), "not a torch weights file or is corrupt"),
        (b"", "empty"),
        ("truncated", "not a torch weights file or is corrupt"),
    ],
)
def test_corrupt_inception_weights_are_called_corrupt_not_dangerous(tmp_path, content, needle):
    path = tmp_path / "weights.pth"
    if content == "truncated":
        blob = _tsave({"fc.bias": torch.zeros(1008)})
        content = blob[: len(blob) // 2]
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=needle) as err:
        vet_inception_weights(path)
    assert "could run code" not in str(err.value)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (bytes(range(256)) * 16, "corrupt"),
        (b"\x80\x02" + bytes(range(200)), "corrupt"),
        ("truncated", "truncated"),
        ("protocol4", "pickle protocol 4"),
    ],
)
def test_corrupt_model_files_are_called_corrupt_not_dangerous(tmp_path, content, needle):
    path = tmp_path / "model.pth"
    if content == "truncated":
        blob = _tsave(tiny_generator().state_dict())
        content = blob[: len(blob) // 2]
    elif content == "protocol4":
        buf = io.BytesIO()
        torch.save(tiny_generator().state_dict(), buf, pickle_protocol=4)
        content = buf.getvalue()
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=needle) as err:
        load_model(path, device="cpu")
    assert "could run code" not in str(err.value)


def test_torch_fidelity_never_loads_unrestricted(tmp_path):
    """torch-fidelity's own torch.load(weights_only=False) runs restricted under weights_only_loads."""
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pth"
    path.write_bytes(_tsave({"fc.weight": _Evil(marker)}))
    with vetting.weights_only_loads(), pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=False)
    assert not marker.exists()


def test_feature_cache_file_with_a_payload_is_a_miss_and_never_runs(tmp_path):
    from privaudit.evaluation.features import FeatureCache

    marker = tmp_path / "PWNED"
    cache = FeatureCache(tmp_path / "cache")
    key = FeatureCache.key(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "0" * 64)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / f"{key}.pt").write_bytes(_tsave(_Evil(marker)))
    assert cache.get(key, 2) is None
    assert (cache.hits, cache.misses) == (0, 1)
    assert not marker.exists()
