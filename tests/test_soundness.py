"""The verdict cannot be fooled by an ordinary mistake in the data or the direction.

A model that does not record its direction needs --direction (and a recorded one cannot be
contradicted); the console and the report say which direction and image size were used; members
and non-members that share a pair (by content) are refused, as are fewer than 10 pairs unless
--allow-small; resizing that could change the scores is warned about and recorded; absurd images
(too small, too elongated, decompression bombs) are refused with one line naming the file.
"""

from __future__ import annotations

import json
import shutil
import struct
import warnings
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import tiny_generator, write_pairs
from privaudit.attacks.reconstruction import AttackConfig
from privaudit.cli.app import app
from privaudit.data.images import load_pairs
from privaudit.errors import DataError, InputError
from privaudit.evaluation.evaluate import EvaluateConfig, evaluate
from privaudit.models.checkpoint import save_checkpoint
from privaudit.attacks.api import attack
from privaudit.data.checks import MIN_PAIRS, pair_hashes


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_refused(result, *needles: str) -> str:
    """Exit 2, one line on stderr naming every needle, no traceback, nothing on stdout."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("privaudit: error: "), lines[0]
    assert "Traceback" not in result.output and result.stdout == ""
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def warnings_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("privaudit: warning: ")]


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> SimpleNamespace:
    """10 member and 10 non-member pairs (32 px) and the tiny generator in every MODEL format."""
    root = tmp_path_factory.mktemp("soundness")
    net = tiny_generator()
    x = torch.randn(2, 3, 32, 32)
    ckpt = root / "tiny.pt"
    save_checkpoint(ckpt, generator=net, image_size=32, direction="AtoB")
    pth = root / "latest_net_G.pth"
    torch.save(net.state_dict(), pth)
    pt2 = root / "tiny.pt2"
    ts = root / "tiny_script.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(torch.export.export(net, (x,)), str(pt2))
        torch.jit.script(net).save(str(ts))
    return SimpleNamespace(
        root=root,
        ckpt=ckpt,
        foreign={"pix2pix": pth, "export": pt2, "torchscript": ts},
        members=write_pairs(root / "members", 10, seed=1, prefix="m"),
        nonmembers=write_pairs(root / "nonmembers", 10, seed=2, prefix="n"),
    )


def attack_cmd(env, model=None, members=None, nonmembers=None, *extra):
    return ("attack", model or env.ckpt, "--members", members or env.members, "--nonmembers", nonmembers or env.nonmembers,
            "--bootstrap", "20", *extra)


# --- direction -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["pix2pix", "export", "torchscript"])
def test_a_model_without_a_recorded_direction_needs_the_flag(env, tmp_path, fmt):
    out = tmp_path / "r.json"
    line = assert_refused(invoke(*attack_cmd(env, env.foreign[fmt], None, None, "--json", out)), "--direction AtoB", "--direction BtoA",
                          env.foreign[fmt].name, "does not record")
    assert not out.exists()
    assert "left half" in line and "right half" in line

    ok = invoke(*attack_cmd(env, env.foreign[fmt], None, None, "--direction", "BtoA", "--json", out, "-q"))
    assert ok.exit_code == 0, ok.output
    d = json.loads(out.read_text())["data"]
    assert (d["direction"], d["direction_source"]) == ("BtoA", "--direction")


def test_evaluate_and_defend_need_the_flag_too(env, tmp_path):
    pt2, pth = env.foreign["export"], env.foreign["pix2pix"]
    assert_refused(invoke("evaluate", pt2, "--members", env.members, "--nonmembers", env.nonmembers, "--no-kid", "-q"), "--direction")
    out = tmp_path / "s.pt"
    assert_refused(invoke("defend", pt2, "--method", "dmp", "--proxy", env.nonmembers, "--epochs", "1", "--out", out), "--direction")
    assert_refused(invoke("defend", pth, "--method", "gauss", "--sigma", "0.1", "--out", out), "--direction", "pix2pix")
    assert not out.exists()

    ok = invoke("defend", pth, "--method", "gauss", "--sigma", "0.1", "--direction", "BtoA", "--size", "32", "--out", out)
    assert ok.exit_code == 0, ok.output
    assert torch.load(out, weights_only=True)["direction"] == "BtoA"  # recorded: later attacks need no flag
    assert "direction" in ok.stderr and "BtoA (--direction)" in ok.stderr and "32x32 px" in ok.stderr
    again = invoke(*attack_cmd(env, out, None, None, "--json", "-", "-q"))
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["data"]["direction_source"] == "model"


def test_a_flag_that_contradicts_the_recorded_direction_is_refused(env, tmp_path):
    out = tmp_path / "r.json"
    assert_refused(invoke(*attack_cmd(env, None, None, None, "--direction", "BtoA", "--json", out)), "--direction BtoA", "AtoB", env.ckpt.name)
    assert not out.exists()
    same = invoke(*attack_cmd(env, None, None, None, "--direction", "AtoB", "-q"))
    assert same.exit_code == 0, same.output


def test_library_needs_the_direction_too(env):
    with pytest.raises(InputError, match="--direction"):
        attack(env.foreign["export"], env.members, env.nonmembers, AttackConfig(n_bootstrap=0))
    report, _ = attack(env.foreign["export"], env.members, env.nonmembers, AttackConfig(n_bootstrap=0), direction="AtoB")
    assert report["data"]["direction"] == "AtoB"


# --- the console and the report say what was used -----------------------------------------------


def test_attack_and_evaluate_show_direction_and_image_size(env):
    r = invoke(*attack_cmd(env))
    assert r.exit_code == 0, r.output
    assert "direction" in r.stderr and "AtoB (recorded in the model)" in r.stderr
    assert "image size" in r.stderr and "32x32 px (recorded in the model)" in r.stderr
    assert warnings_in(r.stderr) == []

    e = invoke("evaluate", env.foreign["pix2pix"], "--members", env.members, "--nonmembers", env.nonmembers, "--no-kid",
               "--bootstrap", "20", "--direction", "AtoB", "--json", "-")
    assert e.exit_code == 0, e.output
    assert "AtoB (--direction)" in e.stderr and "32x32 px (the images' own)" in e.stderr
    d = json.loads(e.stdout)["data"]
    assert (d["image_size"], d["image_size_source"], d["allow_small"]) == (32, "images", False)
    assert d["members"] == {"path": str(env.members), "count": 10, "resized": None}


def test_train_says_which_direction_it_used(env, tmp_path):
    r = invoke("train", env.members, "--out", tmp_path / "t.pt", "--size", "32", "--ngf", "4", "--ndf", "8", "--epochs", "1", "--batch-size", "5")
    assert r.exit_code == 0, r.output
    assert "direction AtoB (the default; pass --direction BtoA" in r.stderr and "32x32 px" in r.stderr
    r = invoke("train", env.members, "--out", tmp_path / "u.pt", "--size", "32", "--ngf", "4", "--ndf", "8", "--epochs", "1", "--batch-size", "5",
               "--direction", "BtoA")
    assert "direction BtoA (--direction)" in r.stderr


# --- members and non-members must be disjoint -----------------------------------------------------


def test_the_same_folder_as_members_and_non_members_is_refused(env, tmp_path):
    out = tmp_path / "r.json"
    assert_refused(invoke(*attack_cmd(env, None, env.members, env.members, "--json", out)), "10 of the 10 non-members are also members",
                   "same folder", "m000.png")
    assert not out.exists()
    assert_refused(invoke("evaluate", env.ckpt, "--members", env.members, "--nonmembers", env.members, "--no-kid"), "same folder")


def test_a_member_copied_under_another_name_is_found_by_content(env, tmp_path):
    nonmembers = tmp_path / "nonmembers"
    shutil.copytree(env.nonmembers, nonmembers)
    shutil.copy(env.members / "m004.png", nonmembers / "zz_holiday.png")
    line = assert_refused(invoke(*attack_cmd(env, None, None, nonmembers)), "1 of the 11 non-members are also members", "m004.png", "zz_holiday.png")
    assert "same folder" not in line


def test_the_overlap_is_by_decoded_pixels_not_bytes(env, tmp_path):
    # The same image re-encoded (other PNG compression) is the same pair; one changed pixel is not.
    nonmembers = tmp_path / "n"
    shutil.copytree(env.nonmembers, nonmembers)
    arr = np.asarray(Image.open(env.members / "m001.png"))
    Image.fromarray(arr).save(nonmembers / "copy.png", compress_level=0)
    assert (nonmembers / "copy.png").read_bytes() != (env.members / "m001.png").read_bytes()
    assert_refused(invoke(*attack_cmd(env, None, None, nonmembers)), "m001.png", "copy.png")
    changed = arr.copy()
    changed[0, 0, 0] ^= 1
    Image.fromarray(changed).save(nonmembers / "copy.png")
    assert invoke(*attack_cmd(env, None, None, nonmembers, "-q")).exit_code == 0


def test_pair_hashes_see_input_and_target(tmp_path):
    s = load_pairs(write_pairs(tmp_path / "p", 2))
    h = pair_hashes(s)
    s2 = s.subset([0, 1])
    s2.targets = s2.targets.clone()
    s2.targets[1, 0, 0, 0] ^= 1
    assert pair_hashes(s2)[0] == h[0] and pair_hashes(s2)[1] != h[1]


def test_proxy_pairs_must_not_overlap_members_or_non_members(env, tmp_path):
    proxy = write_pairs(tmp_path / "proxy", 10, seed=7, prefix="p")
    shutil.copy(env.nonmembers / "n002.png", proxy / "p_extra.png")
    args = ("evaluate", env.ckpt, "--members", env.members, "--nonmembers", env.nonmembers, "--no-kid", "--bootstrap", "20", "--proxy-pairs", proxy)
    assert_refused(invoke(*args), "1 of the 11 proxy pairs are also non-members", "n002.png", "p_extra.png")
    (proxy / "p_extra.png").unlink()
    shutil.copy(env.members / "m003.png", proxy / "p_extra.png")
    assert_refused(invoke(*args), "proxy pairs are also members", "m003.png")
    (proxy / "p_extra.png").unlink()
    ok = invoke(*args, "--json", "-", "-q")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["proxy_leakage"]["count"] == 10


# --- too few pairs -------------------------------------------------------------------------------


def test_fewer_than_ten_pairs_need_allow_small(env, tmp_path):
    assert MIN_PAIRS == 10
    members = write_pairs(tmp_path / "m", 9, seed=1, prefix="m")
    one = write_pairs(tmp_path / "one", 1, seed=2, prefix="n")
    out = tmp_path / "r.json"
    assert_refused(invoke(*attack_cmd(env, None, members, None, "--json", out)), "only 9 member pair(s)", "--allow-small")
    assert_refused(invoke(*attack_cmd(env, None, None, one, "--json", out)), "only 1 non-member pair(s)", "--allow-small")
    assert_refused(invoke("evaluate", env.ckpt, "--members", members, "--nonmembers", env.nonmembers, "--no-kid"), "--allow-small")
    assert not out.exists()

    ok = invoke(*attack_cmd(env, None, members, one, "--allow-small", "--json", out))
    assert ok.exit_code == 0, ok.output
    assert "9 / 1 (--allow-small)" in ok.stderr
    d = json.loads(out.read_text())["data"]
    assert (d["members"]["count"], d["nonmembers"]["count"], d["allow_small"]) == (9, 1, True)


def test_library_allow_small(env, tmp_path):
    members = write_pairs(tmp_path / "m", 4, seed=1, prefix="m")
    with pytest.raises(DataError, match="only 4 member"):
        attack(env.ckpt, members, env.nonmembers, AttackConfig(n_bootstrap=0))
    report, _ = attack(env.ckpt, members, env.nonmembers, AttackConfig(n_bootstrap=0), allow_small=True)
    assert report["data"]["allow_small"] is True and report["data"]["members"]["count"] == 4
    with pytest.raises(DataError, match="only 4 member"):
        evaluate(env.ckpt, members, env.nonmembers, EvaluateConfig(attack=AttackConfig(n_bootstrap=0), kid=False))
    rep = evaluate(env.ckpt, members, env.nonmembers, EvaluateConfig(attack=AttackConfig(n_bootstrap=0), kid=False), allow_small=True)
    assert rep["data"]["allow_small"] is True


# --- resizing ------------------------------------------------------------------------------------


def test_a_large_resize_is_warned_once_per_set_and_recorded(env, tmp_path):
    small = write_pairs(tmp_path / "small", 10, size=8, seed=1, prefix="s")  # 8 px → the model's 32 px: 4x
    r = invoke(*attack_cmd(env, None, small, None, "--json", tmp_path / "r.json"))
    assert r.exit_code == 0, r.output
    w = warnings_in(r.stderr)
    assert len(w) == 1, r.stderr
    assert "members" in w[0] and str(small) in w[0] and "10 of 10 resized to 32x32 from 8x8" in w[0] and "factor of up to 4" in w[0]
    assert "members resized" in r.stderr  # the table's image-size row says so too
    d = json.loads((tmp_path / "r.json").read_text())["data"]
    assert d["members"]["resized"] == {
        "count": 10, "to": [32, 32], "from_min": [8, 8], "from_max": [8, 8], "sizes": 1, "examples": ["s000.png 8x8"],
        "factor_max": 4.0, "non_square": 0, "mixed_sizes": False, "warned": True,
    }
    assert d["nonmembers"]["resized"] is None

    quiet = invoke(*attack_cmd(env, None, small, None, "-q"))
    assert len(warnings_in(quiet.stderr)) == 1  # a warning changes what the number means: kept under -q


def test_a_small_resize_is_recorded_without_a_warning(env, tmp_path):
    big = write_pairs(tmp_path / "big", 10, size=48, seed=1, prefix="b")  # 1.5x down
    r = invoke(*attack_cmd(env, None, big, None, "--json", "-", "-q"))
    assert r.exit_code == 0, r.output
    assert warnings_in(r.stderr) == []
    res = json.loads(r.stdout)["data"]["members"]["resized"]
    assert (res["count"], res["factor_max"], res["warned"]) == (10, 1.5, False)


def test_stretching_non_square_images_is_warned(env, tmp_path):
    wide = tmp_path / "wide"
    wide.mkdir()
    for i in range(10):
        Image.fromarray(np.full((32, 80, 3), 20 * i, dtype=np.uint8)).save(wide / f"w{i}.png")  # halves 40x32
    r = invoke(*attack_cmd(env, None, None, wide, "--json", "-", "-q"))
    assert r.exit_code == 0, r.output
    w = warnings_in(r.stderr)
    assert len(w) == 1 and w[0].startswith("privaudit: warning: non-members") and "10 stretched from a non-square shape" in w[0]
    res = json.loads(r.stdout)["data"]["nonmembers"]["resized"]
    assert (res["non_square"], res["from_min"], res["factor_max"]) == (10, [40, 32], 1.25)


def test_mixed_sizes_are_recorded_and_warned(env, tmp_path):
    mixed = write_pairs(tmp_path / "mixed", 9, seed=1, prefix="m")
    write_pairs(tmp_path / "one", 1, size=48, seed=5, prefix="z")
    shutil.copy(tmp_path / "one" / "z000.png", mixed / "z000.png")
    r = invoke(*attack_cmd(env, None, mixed, None, "--json", "-", "-q"))
    assert r.exit_code == 0, r.output
    w = warnings_in(r.stderr)
    assert len(w) == 1 and "1 of 10 resized" in w[0] and "2 sizes from 32x32 to 48x48" in w[0] and "mixed sizes" in w[0]
    res = json.loads(r.stdout)["data"]["members"]["resized"]
    assert (res["count"], res["sizes"], res["mixed_sizes"], res["examples"]) == (1, 2, True, ["m000.png 32x32", "z000.png 48x48"])


def test_evaluate_records_and_warns_resizing_too(env, tmp_path):
    small = write_pairs(tmp_path / "small", 10, size=8, seed=1, prefix="s")
    r = invoke("evaluate", env.ckpt, "--members", env.members, "--nonmembers", small, "--no-kid", "--bootstrap", "20", "--json", "-", "-q")
    assert r.exit_code == 0, r.output
    assert len(warnings_in(r.stderr)) == 1 and "non-members" in warnings_in(r.stderr)[0]
    assert json.loads(r.stdout)["data"]["nonmembers"]["resized"]["factor_max"] == 4.0


def _aligned(folder: Path, name: str, w: int, h: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    Image.new("RGB", (w, h), (90, 40, 200)).save(path)
    return path


def test_an_absurd_aspect_ratio_is_refused_not_resized(env, tmp_path):
    members = tmp_path / "m"
    shutil.copytree(env.members, members)
    _aligned(members, "zz_line.png", 100000, 1)
    assert_refused(invoke(*attack_cmd(env, None, members, None)), "zz_line.png", "50000x1", "aspect ratio")


def test_a_tiny_image_is_refused_not_upscaled(env, tmp_path):
    members = tmp_path / "m"
    shutil.copytree(env.members, members)
    _aligned(members, "zz_thumb.png", 8, 4)  # halves 4x4
    assert_refused(invoke(*attack_cmd(env, None, members, None)), "zz_thumb.png", "4x4", "smaller than 8 px")


def _png_claiming(path: Path, width: int, height: int) -> None:
    """A 150-byte PNG whose header claims width x height (a decompression bomb's header; little pixel data)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))


def test_a_decompression_bomb_is_one_data_error_naming_the_file(env, tmp_path):
    members = tmp_path / "m"
    shutil.copytree(env.members, members)
    _png_claiming(members / "zz_bomb.png", 30000, 30000)
    out = tmp_path / "r.json"
    line = assert_refused(invoke(*attack_cmd(env, None, members, None, "--json", out)), "zz_bomb.png", "decompression bomb")
    assert "900000000 pixels" in line
    assert not out.exists()
    with pytest.raises(DataError, match="zz_bomb.png"):
        load_pairs(members)


def test_a_large_image_below_the_bomb_limit_loads_without_pil_warnings(env, tmp_path, monkeypatch):
    # Between MAX_IMAGE_PIXELS and twice that PIL only warns; privaudit decodes it quietly (its resizing
    # is recorded like any other), and beyond twice that refuses it.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1500)  # an aligned 64x32 image has 2048 pixels
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = load_pairs(env.members)
    assert len(s) == 10
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    r = invoke(*attack_cmd(env))
    assert_refused(r, "m000.png", "decompression bomb")
