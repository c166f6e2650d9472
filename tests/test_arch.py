"""The U-Net's rules, each written once in privaudit/models/arch.py: image size vs depth, norm
layers, what a file may record and what a flag may override (InputError for flags, CheckpointError
for a file)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from privaudit.errors import CheckpointError, InputError
from privaudit.models.arch import (NORMS, ArchOverrides, ModelSpec, UnetArch, check_norm, check_size, default_num_downs, private_arch,
                                   student_norm)
from privaudit.models.networks import get_norm_layer

# --- image size vs depth -----------------------------------------------------------------------


@pytest.mark.parametrize("size, num_downs", [(32, 5), (64, 5), (64, 6), (256, 8), (512, 8)])
def test_sizes_that_fit(size, num_downs):
    assert check_size(size, num_downs) == size


@pytest.mark.parametrize(
    "size, num_downs, new, message",
    [
        (48, 5, False, "image size 48 is not a positive multiple of 32 (a U-Net with 5 downsamplings); pass --size 32 or --size 64"),
        (7, 5, False, "image size 7 is not a positive multiple of 32 (a U-Net with 5 downsamplings); pass --size 32"),
        (0, 5, False, "image size 0 is not a positive multiple of 32 (a U-Net with 5 downsamplings); pass --size 32"),
        (-5, 6, False, "image size -5 is not a positive multiple of 64 (a U-Net with 6 downsamplings); pass --size 64"),
        (32, 6, True, "image size 32 is not a positive multiple of 64 (a U-Net with 6 downsamplings); pass --size 64 or change --num-downs"),
    ],
)
def test_sizes_that_do_not_fit_say_which_would(size, num_downs, new, message):
    with pytest.raises(InputError) as info:
        check_size(size, num_downs, new=new)
    assert str(info.value) == message


@pytest.mark.parametrize("size, depth", [(32, 5), (64, 6), (128, 7), (256, 8), (512, 8), (1024, 8)])
def test_default_depth_is_pix2pix_s(size, depth):
    assert default_num_downs(size) == depth


@pytest.mark.parametrize("size, hint", [(7, "--size 32"), (0, "--size 32"), (48, "--size 32 or --size 64"), (300, "--size 256 or --size 512")])
def test_default_depth_refuses_sizes_it_cannot_take(size, hint):
    with pytest.raises(InputError, match=f"pass {hint} or change --num-downs"):
        default_num_downs(size)


def test_model_spec_builds_the_default_depth_and_checks_a_given_one():
    assert ModelSpec(ngf=4).build(64, 1, 3) == UnetArch(input_nc=1, output_nc=3, num_downs=6, ngf=4, norm="batch", use_dropout=True)
    with pytest.raises(InputError, match="positive multiple of 128"):
        ModelSpec(num_downs=7, ngf=4).build(64)
    with pytest.raises(InputError, match=r"num_downs=4 \(--num-downs\) is too small"):
        ModelSpec(num_downs=4, ngf=4).build(64)
    with pytest.raises(InputError, match=r"ngf=0 \(--ngf\) must be at least 1"):
        ModelSpec(ngf=0).build(64)


# --- norm layers -------------------------------------------------------------------------------


def test_norm_flags_offer_group_to_dp_sgd_only():
    assert check_norm("instance") == "instance"
    with pytest.raises(InputError) as info:
        check_norm("group", role="for the student")
    assert str(info.value) == "invalid norm layer 'group' (--norm for the student); use batch, instance or none"
    assert check_norm("group", choices=NORMS) == "group"
    with pytest.raises(InputError, match="use batch, instance, none or group"):
        get_norm_layer("layer")


def test_dp_sgd_and_student_norms():
    assert private_arch(UnetArch(num_downs=5, ngf=4, norm="batch")) == UnetArch(num_downs=5, ngf=4, norm="group")
    assert [student_norm(n) for n in NORMS] == ["batch", "instance", "none", "batch"]


# --- a file's record (CheckpointError) vs a flag's override (InputError) ------------------------

RECORD = {"type": "unet", "input_nc": 3, "output_nc": 3, "num_downs": 5, "ngf": 4, "norm": "batch", "use_dropout": True}


def test_a_record_round_trips():
    assert UnetArch.from_dict(RECORD).to_dict() == RECORD


@pytest.mark.parametrize(
    "change, needle",
    [({"num_downs": 3}, "num_downs=3"), ({"ngf": 0}, "ngf=0"), ({"norm": "layer"}, "'layer'"), ({"output_nc": 0}, "3->0"), ({"ngf": "wide"}, "incomplete")],
)
def test_an_impossible_record_is_a_checkpoint_error_naming_the_file(change, needle):
    with pytest.raises(CheckpointError) as info:
        UnetArch.from_dict({**RECORD, **change}, "m.pt")
    assert str(info.value).startswith("m.pt") and needle in str(info.value)


def test_overrides_change_only_what_they_name_and_are_checked_as_flags():
    arch = UnetArch.from_dict(RECORD)
    assert ArchOverrides().apply(arch) is arch
    assert ArchOverrides(ngf=8, use_dropout=False).apply(arch) == UnetArch(num_downs=5, ngf=8, norm="batch", use_dropout=False)
    with pytest.raises(InputError, match=r"num_downs=0 \(--num-downs\)"):
        ArchOverrides(num_downs=0).apply(arch)
    with pytest.raises(InputError, match="'layer'"):
        ArchOverrides(norm="layer").apply(arch)


def test_the_rules_import_no_torch():
    code = "import sys, privaudit.models.arch; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
