"""Paired image loading: both layouts, direction, resizing, colour modes, and errors that name the
file and the fix."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import pair_arrays
from privaudit.data.images import ImageSet, load_inputs, load_pairs, to_float, to_uint8
from privaudit.errors import DataError, InputError


def _chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a)).permute(2, 0, 1)


# --- layouts and direction -----------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["aligned", "folders"])
def test_layouts_load_the_same_pairs(tmp_path, make_pairs, layout):
    root = make_pairs(tmp_path / layout, 5, layout=layout, seed=3)
    s = load_pairs(root, direction="AtoB")
    assert isinstance(s, ImageSet)
    assert s.layout == layout
    assert len(s) == 5 and s.size == 32
    assert s.inputs.dtype == torch.uint8 and s.inputs.shape == (5, 3, 32, 32)
    assert s.targets is not None and s.targets.shape == (5, 3, 32, 32)
    assert s.names == [f"img{i:03d}.png" for i in range(5)]
    expected = pair_arrays(5, 32, seed=3)
    for i, (a, b) in enumerate(expected):
        assert torch.equal(s.inputs[i], _chw(a))
        assert torch.equal(s.targets[i], _chw(b))


@pytest.mark.parametrize("layout", ["aligned", "folders"])
def test_btoa_swaps_input_and_target(tmp_path, make_pairs, layout):
    root = make_pairs(tmp_path / layout, 3, layout=layout)
    ab = load_pairs(root, direction="AtoB")
    ba = load_pairs(root, direction="BtoA")
    assert torch.equal(ab.inputs, ba.targets)
    assert torch.equal(ab.targets, ba.inputs)
    assert not torch.equal(ab.inputs, ab.targets)


def test_invalid_direction(tmp_path, make_pairs):
    root = make_pairs(tmp_path / "d", 2)
    with pytest.raises(InputError, match="AtoB"):
        load_pairs(root, direction="AtoC")
    with pytest.raises(InputError, match="AtoB"):
        load_inputs(root, direction="atob")


@pytest.mark.parametrize("layout", ["aligned", "folders"])
def test_size_resizes(tmp_path, make_pairs, layout):
    root = make_pairs(tmp_path / layout, 2, size=48, layout=layout)
    s = load_pairs(root, size=32)
    assert s.inputs.shape == (2, 3, 32, 32) and s.targets.shape == (2, 3, 32, 32)
    assert load_pairs(root).size == 48


def test_nonpositive_size_is_refused(tmp_path, make_pairs):
    root = make_pairs(tmp_path / "d", 1)
    with pytest.raises(InputError, match="--size"):
        load_pairs(root, size=0)


def test_float_conversion_round_trip():
    x = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    f = to_float(x)
    assert f.min() == -1.0 and f.max() == 1.0
    assert torch.equal(to_uint8(f), x)


# --- colour modes ------------------------------------------------------------------------------


def test_grayscale_aligned_becomes_rgb(tmp_path):
    root = tmp_path / "gray"
    root.mkdir()
    arr = np.random.default_rng(0).integers(0, 256, (32, 64), dtype=np.uint8)
    Image.fromarray(arr, mode="L").save(root / "g.png")
    s = load_pairs(root)
    assert s.inputs.shape == (1, 3, 32, 32)
    for c in range(3):
        assert torch.equal(s.inputs[0, c], torch.from_numpy(arr[:, :32]))
        assert torch.equal(s.targets[0, c], torch.from_numpy(arr[:, 32:]))


def test_rgba_and_grayscale_folders_become_rgb(tmp_path):
    root = tmp_path / "rgba"
    (root / "A").mkdir(parents=True)
    (root / "B").mkdir()
    rgba = np.random.default_rng(1).integers(0, 256, (32, 32, 4), dtype=np.uint8)
    rgba[..., 3] = 128  # alpha is dropped, not composited
    gray = np.random.default_rng(2).integers(0, 256, (32, 32), dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(root / "A" / "x.png")
    Image.fromarray(gray, mode="L").save(root / "B" / "x.png")
    s = load_pairs(root)
    assert s.inputs.shape == (1, 3, 32, 32) and s.targets.shape == (1, 3, 32, 32)
    assert torch.equal(s.inputs[0], _chw(rgba[..., :3]))
    assert all(torch.equal(s.targets[0, c], torch.from_numpy(gray)) for c in range(3))


def test_single_channel_model_reads_grayscale(tmp_path, make_pairs):
    root = make_pairs(tmp_path / "d", 2)
    s = load_pairs(root, input_nc=1, output_nc=3)
    assert s.inputs.shape == (2, 1, 32, 32) and s.targets.shape == (2, 3, 32, 32)


def test_jpeg_pairs_load(tmp_path):
    root = tmp_path / "jpg"
    root.mkdir()
    a, b = pair_arrays(1)[0]
    Image.fromarray(np.concatenate([a, b], 1)).save(root / "p.jpg", quality=95)
    assert load_pairs(root).inputs.shape == (1, 3, 32, 32)


# --- errors --------------------------------------------------------------------------------------


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_pairs(tmp_path / "nope")
    with pytest.raises(DataError, match="does not exist"):
        load_inputs(tmp_path / "nope")


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="holds no images"):
        load_pairs(tmp_path / "empty")


def test_empty_input_folder_in_ab_layout(tmp_path):
    (tmp_path / "d" / "A").mkdir(parents=True)
    (tmp_path / "d" / "B").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        load_pairs(tmp_path / "d")


def test_file_instead_of_folder(tmp_path):
    f = tmp_path / "file.png"
    f.write_bytes(b"x")
    with pytest.raises(DataError, match="not a folder"):
        load_pairs(f)


def test_non_image_with_png_extension(tmp_path, make_pairs):
    root = make_pairs(tmp_path / "d", 2)
    (root / "zz_notes.png").write_text("this is not an image")
    with pytest.raises(DataError, match="zz_notes.png is not an image"):
        load_pairs(root)


def _encoded(fmt: str) -> bytes:
    a, b = pair_arrays(1)[0]
    buf = io.BytesIO()
    Image.fromarray(np.concatenate([a, b], 1)).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt,ext", [("PNG", ".png"), ("JPEG", ".jpg")])
def test_truncated_image(tmp_path, make_pairs, fmt, ext):
    root = make_pairs(tmp_path / "d", 2)
    data = _encoded(fmt)
    (root / f"zz_cut{ext}").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=f"zz_cut{ext}.*(truncated|not an image)"):
        load_pairs(root)


def test_unmatched_names_in_ab_folders(tmp_path, make_pairs):
    root = make_pairs(tmp_path / "d", 3, layout="folders")
    (root / "B" / "img001.png").rename(root / "B" / "other.png")
    with pytest.raises(DataError, match="no partner") as info:
        load_pairs(root)
    assert "img001.png" in str(info.value) and "other.png" in str(info.value)


def test_different_sizes_need_size(tmp_path, make_pairs):
    root = make_pairs(tmp_path / "d", 2, size=32)
    big = make_pairs(tmp_path / "big", 1, size=48, prefix="big")
    shutil.copy(big / "big000.png", root / "big000.png")
    with pytest.raises(DataError, match="--size"):
        load_pairs(root)
    assert load_pairs(root, size=32).inputs.shape == (3, 3, 32, 32)


def test_non_square_images_need_size(tmp_path):
    root = tmp_path / "wide"
    root.mkdir()
    Image.fromarray(np.zeros((32, 96, 3), dtype=np.uint8)).save(root / "w.png")  # halves 48x32
    with pytest.raises(DataError, match="not square"):
        load_pairs(root)
    assert load_pairs(root, size=32).size == 32


def test_odd_width_aligned_image(tmp_path):
    root = tmp_path / "odd"
    root.mkdir()
    Image.fromarray(np.zeros((32, 65, 3), dtype=np.uint8)).save(root / "odd.png")
    with pytest.raises(DataError, match="odd.png is 65x32.*two halves"):
        load_pairs(root)


# --- inputs only ---------------------------------------------------------------------------------


def test_load_inputs_aligned_never_returns_targets(tmp_path, make_pairs):
    root = make_pairs(tmp_path / "d", 4)
    pairs = load_pairs(root)
    s = load_inputs(root)
    assert s.targets is None
    assert s.layout == "aligned"
    assert torch.equal(s.inputs, pairs.inputs)
    sb = load_inputs(root, direction="BtoA", layout="aligned")
    assert sb.targets is None and torch.equal(sb.inputs, pairs.targets)


@pytest.mark.parametrize("damage", ["delete", "corrupt"])
def test_load_inputs_ab_reads_only_the_input_folder(tmp_path, make_pairs, damage):
    root = make_pairs(tmp_path / "d", 3, layout="folders")
    expected = load_pairs(root).inputs
    for f in (root / "B").iterdir():
        if damage == "delete":
            f.unlink()
        else:
            f.write_bytes(b"\x89PNG garbage")
    s = load_inputs(root)
    assert s.targets is None and s.layout == "folders"
    assert torch.equal(s.inputs, expected)


def test_load_inputs_btoa_reads_only_b(tmp_path, make_pairs):
    root = make_pairs(tmp_path / "d", 2, layout="folders")
    expected = load_pairs(root, direction="BtoA").inputs
    for f in (root / "A").iterdir():
        f.write_bytes(b"garbage")
    s = load_inputs(root, direction="BtoA")
    assert torch.equal(s.inputs, expected)


def test_load_inputs_folders_layout_without_b(tmp_path, make_pairs):
    # A proxy set may come as A/ only: an explicit ``folders`` layout needs just the input folder.
    root = make_pairs(tmp_path / "d", 2, layout="folders")
    expected = load_pairs(root).inputs
    shutil.rmtree(root / "B")
    s = load_inputs(root, layout="folders")
    assert s.layout == "folders" and torch.equal(s.inputs, expected)
    with pytest.raises(DataError, match="does not exist"):
        load_inputs(root, direction="BtoA", layout="folders")


def test_load_inputs_plain_images(tmp_path):
    root = tmp_path / "plain"
    root.mkdir()
    for i in range(2):
        Image.fromarray(pair_arrays(1, seed=i)[0][0]).save(root / f"{i}.png")
    s = load_inputs(root)
    assert s.layout == "inputs" and s.inputs.shape == (2, 3, 32, 32) and s.targets is None


def test_load_inputs_invalid_layout(tmp_path, make_pairs):
    root = make_pairs(tmp_path / "d", 1)
    with pytest.raises(InputError, match="layout"):
        load_inputs(root, layout="pairs")


def test_subset_keeps_names_and_targets(tmp_path, make_pairs):
    s = load_pairs(make_pairs(tmp_path / "d", 4))
    sub = s.subset([3, 1])
    assert sub.names == ["img003.png", "img001.png"]
    assert torch.equal(sub.inputs[0], s.inputs[3]) and torch.equal(sub.targets[1], s.targets[1])
