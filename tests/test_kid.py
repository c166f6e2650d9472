"""KID / NKID through torch-fidelity, with a random Inception weights file built in tmp_path (no download)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from privaudit.errors import DataError, InputError, WeightsError
from privaudit.evaluation.features import FeatureCache, default_cache_dir
from privaudit.evaluation.inception import INCEPTION_WEIGHTS_FILENAME, WEIGHTS_ENV, resolve_inception_weights, vet_inception_weights
from privaudit.evaluation.kid import compute_kid
from privaudit.io import sha256_file

from inception_helpers import make_random_inception_weights, noisy_copy, smooth_images

pytestmark = pytest.mark.usefixtures("fast_cpu_inception")  # Inception at 75x75 px, one thread (conftest.py)

N = 8


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_random_inception_weights(tmp_path_factory.mktemp("inception") / "random-inception.pth")


@pytest.fixture(scope="module")
def real() -> torch.Tensor:
    return smooth_images(N, 32, seed=0)


@pytest.fixture(scope="module")
def fake(real: torch.Tensor) -> torch.Tensor:
    """A 'decent model': the real images plus noise."""
    return noisy_copy(real, 12.0)


# ------------------------------------------------------------------ finding the weights


@pytest.fixture
def hub_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    return hub


def test_missing_weights_says_which_file_and_where(hub_dir: Path) -> None:
    with pytest.raises(WeightsError) as err:
        resolve_inception_weights(None)
    msg = str(err.value)
    assert INCEPTION_WEIGHTS_FILENAME in msg
    assert str(hub_dir / "checkpoints") in msg
    assert "--inception-weights" in msg and WEIGHTS_ENV in msg
    assert "\n" not in msg


def test_explicit_or_env_file_that_does_not_exist(hub_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(WeightsError, match="nope.pth.*--inception-weights") as err:
        resolve_inception_weights(tmp_path / "nope.pth")
    assert INCEPTION_WEIGHTS_FILENAME in str(err.value)
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "absent.pth"))
    with pytest.raises(WeightsError, match=f"absent.pth.*{WEIGHTS_ENV}"):
        resolve_inception_weights(None)


def test_resolution_order_flag_then_env_then_hub_cache(hub_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flag, env = tmp_path / "flag.pth", tmp_path / "env.pth"
    hub = hub_dir / "checkpoints" / INCEPTION_WEIGHTS_FILENAME
    hub.parent.mkdir(parents=True)
    for p in (flag, env, hub):
        p.write_bytes(b"x")
    monkeypatch.setenv(WEIGHTS_ENV, str(env))
    assert resolve_inception_weights(flag) == flag
    assert resolve_inception_weights(None) == env
    monkeypatch.delenv(WEIGHTS_ENV)
    assert resolve_inception_weights(None) == hub


# ------------------------------------------------------------------ vetting the weights


def test_vet_accepts_the_random_file_and_returns_its_sha(weights: Path) -> None:
    assert vet_inception_weights(weights) == sha256_file(weights)
    assert vet_inception_weights(weights) == sha256_file(weights)  # second time from the per-process cache


def test_vet_accepts_official_layout_without_num_batches_tracked(weights: Path, tmp_path: Path) -> None:
    sd = torch.load(weights, map_location="cpu", weights_only=True)
    plain = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / INCEPTION_WEIGHTS_FILENAME
    torch.save(plain, path)
    assert vet_inception_weights(path) == sha256_file(path)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def test_pickle_that_runs_code_is_refused_and_never_run(weights: Path, tmp_path: Path, real: torch.Tensor) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"fc.weight": _Evil(marker), "fc.bias": torch.zeros(1008)}, evil)
    with pytest.raises(WeightsError, match="refusing"):
        vet_inception_weights(evil)
    with pytest.raises(WeightsError, match="refusing"):
        compute_kid(real, real, weights=evil)
    assert not marker.exists()
    # the trap is real: the load torch-fidelity does itself would have run it
    torch.load(evil, weights_only=False)
    assert marker.exists()


def _edit(sd: dict, how: str) -> object:
    if how == "shape":
        sd["Mixed_6b.branch7x7_2.conv.weight"] = torch.zeros(128, 128, 7, 7)
    elif how == "missing":
        del sd["Mixed_7c.branch_pool.bn.running_var"]
    elif how == "extra":
        sd["head.weight"] = torch.zeros(3)
    elif how == "nan":
        sd["fc.bias"] = sd["fc.bias"].clone()
        sd["fc.bias"][3] = float("nan")
    return sd


@pytest.mark.parametrize(
    ("how", "needle"),
    [
        ("shape", "Mixed_6b.branch7x7_2.conv.weight"),
        ("missing", "Mixed_7c.branch_pool.bn.running_var"),
        ("extra", "head.weight"),
        ("nan", "non-finite"),
    ],
)
def test_weights_that_do_not_fit_name_the_key(weights: Path, tmp_path: Path, how: str, needle: str) -> None:
    sd = dict(torch.load(weights, map_location="cpu", weights_only=True))
    path = tmp_path / f"{how}.pth"
    torch.save(_edit(sd, how), path)
    with pytest.raises(WeightsError, match=needle) as err:
        vet_inception_weights(path)
    assert "\n" not in str(err.value)


def test_not_a_state_dict_or_not_a_torch_file(tmp_path: Path) -> None:
    lst, junk = tmp_path / "list.pth", tmp_path / "junk.pth"
    torch.save([torch.zeros(2)], lst)
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="refusing.*state dict"):
        vet_inception_weights(lst)
    with pytest.raises(WeightsError, match="junk.pth"):
        vet_inception_weights(junk)


# ------------------------------------------------------------------ KID


class _U8(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]


@pytest.mark.slow
def test_kid_equals_torch_fidelity_calculate_metrics(
    weights: Path, real: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch_fidelity
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    monkeypatch.setattr(FeatureExtractorInceptionV3, "INPUT_IMAGE_SIZE", 299)  # the real thing here

    other = smooth_images(N, 32, seed=7)  # not paired with the real images
    ours = compute_kid(other, real, weights=weights, subset_size=6, subsets=40, seed=3)
    theirs = torch_fidelity.calculate_metrics(
        input1=_U8(other),
        input2=_U8(real),
        kid=True,
        kid_subset_size=6,
        kid_subsets=40,
        rng_seed=3,
        feature_extractor_weights_path=str(weights),
        cuda=False,
        cache=False,
        save_cpu_ram=True,
        verbose=False,
    )
    assert math.isfinite(ours.kid) and ours.kid != 0.0 and ours.kid_std > 0
    assert ours.kid == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-6)
    assert ours.kid_std == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-6)
    fe = ours.feature_extractor
    assert fe["name"] == "inception-v3-compat" and fe["feature_layer"] == "2048"
    assert fe["weights_sha256"] == sha256_file(weights)


def test_subset_size_is_clamped_and_reported_and_seed_fixes_the_value(
    weights: Path, real: torch.Tensor, fake: torch.Tensor
) -> None:
    cache = FeatureCache(disk=False)
    assert compute_kid(fake, real, weights=weights, cache=cache).subset_size == N  # default 1000 -> N
    short = compute_kid(fake[:5], real, weights=weights, subset_size=1000, cache=cache)
    assert (short.subset_size, short.subsets) == (5, 100)
    a = compute_kid(fake, real, weights=weights, subset_size=4, seed=11, cache=cache)
    b = compute_kid(fake, real, weights=weights, subset_size=4, seed=11, cache=cache)
    c = compute_kid(fake, real, weights=weights, subset_size=4, seed=12, cache=cache)
    assert a.kid == b.kid and a.kid_std == b.kid_std and (a.subset_size, a.seed) == (4, 11)
    assert c.kid != a.kid


def test_nkid_is_kid_over_black_kid_and_black_is_worse(weights: Path, real: torch.Tensor, fake: torch.Tensor) -> None:
    cache = FeatureCache(disk=False)
    r = compute_kid(fake, real, weights=weights, subset_size=6, subsets=30, seed=5, cache=cache, normalise=True)
    assert r.nkid == pytest.approx(r.kid / r.kid_black, rel=1e-12)
    assert r.kid_black > 0 and r.kid_black > r.kid
    plain = compute_kid(fake, real, weights=weights, subset_size=6, subsets=30, seed=5, cache=cache)
    assert r.kid == plain.kid and r.kid_std == plain.kid_std
    assert (plain.kid_black, plain.kid_black_std, plain.nkid) == (None, None, None)  # not asked to normalise
    black = compute_kid(torch.zeros_like(fake), real, weights=weights, subset_size=6, subsets=30, seed=5, cache=cache, normalise=True)
    assert black.nkid == pytest.approx(1.0, rel=1e-9)
    d = r.as_dict()
    assert {"kid", "kid_std", "kid_black", "nkid", "kid_subset_size", "feature_extractor"} <= set(d)
    assert d["kid_subset_size"] == 6


def test_black_real_images_make_nkid_undefined(weights: Path, fake: torch.Tensor) -> None:
    with pytest.raises(DataError, match="NKID is undefined"):
        compute_kid(fake, torch.zeros_like(fake), weights=weights, cache=FeatureCache(disk=False), normalise=True)


def test_bad_inputs_fail_before_any_work(weights: Path, real: torch.Tensor) -> None:
    with pytest.raises(InputError, match="uint8"):
        compute_kid(real.float(), real, weights=weights)
    with pytest.raises(DataError, match="at least 2"):
        compute_kid(real[:1], real, weights=weights)
    with pytest.raises(InputError, match="subset size"):
        compute_kid(real, real, weights=weights, subset_size=1)
    with pytest.raises(InputError, match="subsets"):
        compute_kid(real, real, weights=weights, subsets=0)


# ------------------------------------------------------------------ feature cache


def test_real_features_are_cached_on_disk_and_reused(
    weights: Path, real: torch.Tensor, fake: torch.Tensor, tmp_path: Path
) -> None:
    root = tmp_path / "features"
    cache = FeatureCache(root)
    first = compute_kid(fake, real, weights=weights, subset_size=6, cache=cache)
    assert (cache.hits, cache.misses) == (0, 1)
    second = compute_kid(fake, real, weights=weights, subset_size=6, cache=cache)
    assert (cache.hits, cache.misses) == (1, 1)
    assert second.kid == first.kid
    auto = compute_kid(fake, real, weights=weights, subset_size=6, cache=cache, device=None)  # CPU here
    assert (cache.hits, auto.kid) == (2, first.kid) or torch.cuda.is_available()
    files = list(root.glob("*.pt"))
    assert len(files) == 1 and not list(root.glob(".*.tmp"))

    fresh = FeatureCache(root)  # a new process: found on disk
    assert compute_kid(fake, real, weights=weights, subset_size=6, cache=fresh).kid == first.kid
    assert (fresh.hits, fresh.misses) == (1, 0)

    files[0].write_bytes(b"garbage")  # a broken cache file is a miss, then rewritten
    broken = FeatureCache(root)
    assert compute_kid(fake, real, weights=weights, subset_size=6, cache=broken).kid == first.kid
    assert (broken.hits, broken.misses) == (0, 1)
    assert torch.load(files[0], weights_only=True).shape == (N, 2048)


def test_cache_key_depends_on_pixels_shape_and_weights() -> None:
    x = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    y = x.clone()
    y[0, 0, 0, 0] = 1
    k = FeatureCache.key(x, "a" * 64)
    assert k == FeatureCache.key(x.clone(), "a" * 64)
    assert k != FeatureCache.key(y, "a" * 64)
    assert k != FeatureCache.key(x, "b" * 64)
    assert k != FeatureCache.key(x.reshape(2, 3, 2, 8), "a" * 64)


def test_default_cache_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert FeatureCache().root == tmp_path / ".cache" / "privaudit" / "features"
    assert FeatureCache(disk=False).root is None
    assert default_cache_dir() == tmp_path / ".cache" / "privaudit" / "features"
