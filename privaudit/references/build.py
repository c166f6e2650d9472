"""``build_references``: train K reference models that replay a target model's recipe on samples of
population data, and write their manifest (the library entry of ``privaudit references``).

Offline (default): each reference trains on a random sample of the population as large as the
target's training set (all of it when the population is smaller); the population must hold none of
the target's training pairs (checked by content: the training set at the path the target records,
verified against its recorded content hash, and any ``exclude`` folders). Online: the population
holds the audited members and non-members; each sample is IN for exactly K/2 references (LiRA's
random halves), and the halves are balanced so every reference trains on about N/2 pairs.

A defended target is replayed as its pipeline: a reference teacher trained on the sample with the
teacher's recipe, then the same defense with the recorded parameters, through the public entries
``privaudit.training.train`` and ``privaudit.defenses.defend``. Reference teachers are cached under
``OUT/teachers/<recipe_key>-<sample_key>.pt`` (or ``teacher_cache``), so AKD and DMP references of
one teacher can share them.

Layout of OUT: ``ref-000.pt`` ... one checkpoint per reference, ``teachers/`` (pipelines), and the
manifest ``references.json`` (``MANIFEST_SCHEMA``), rewritten atomically after every finished
reference. A rerun with the same settings reuses finished references (sha256 checked), continues a
killed one from its resume state, and (offline) may raise ``count`` to add references.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from privaudit import __version__, defaults, distributed
from privaudit.data.images import ImageSet, data_fingerprint
from privaudit.data.stream import StreamedSet, Streaming, concat, open_inputs, open_pairs, open_sets
from privaudit.errors import CheckpointError, DataError, InputError, PrivauditError, check_seed
from privaudit.io import atomic_copy, check_dir_creatable, check_dir_writable, sha256_file, utc_now, write_json
from privaudit.accel import resolve_accel
from privaudit.device import resolve_device
from privaudit.models.arch import ArchOverrides
from privaudit.models.checkpoint import load_model, safe_torch_load
from privaudit.references.recipe import Recipe, RecipeFlags, read_recipe

MANIFEST = "references.json"
MANIFEST_SCHEMA = "privaudit.references/1"
TEACHERS = "teachers"
MODES = ("offline", "online")
# Settings a rerun into the same OUT must share with the run that started it.
SETTINGS = ("target_sha256", "recipe_key", "mode", "seed", "population_key")

# How long a rank that finished its share of the references waits for the others (torch's default of
# 30 minutes is shorter than one full-size reference).
REFERENCE_WAIT_S = 7 * 24 * 3600

OnProgress = Callable[[int, int, int, int], None]
"""``on_progress(done_refs, total_refs, epoch, epochs)``: references finished, and epochs finished of
the current reference's ``epochs`` (its whole pipeline: teacher and student); called at every
training step, when a reference starts, and once at the end."""


def reference_name(k: int) -> str:
    return f"ref-{k:03d}.pt"


def hex_hashes(images: ImageSet | StreamedSet) -> list[str]:
    """Per-pair content hashes (blake2b of the decoded input and target), as hex."""
    from privaudit.data.checks import pair_hashes

    return [h.hex() for h in pair_hashes(images)]


@dataclass
class Population:
    """The population pairs at the recipe's size and direction, without duplicates, in the order of
    their content hashes (so a sample does not depend on how the folders were split)."""

    pairs: ImageSet | StreamedSet
    hashes: list[str]
    folders: list[dict[str, Any]]
    duplicates: int

    def key(self) -> str:
        return hashlib.blake2b("".join(self.hashes).encode(), digest_size=16).hexdigest()


@dataclass
class BuildResult:
    """What ``build_references`` did: the manifest written, which references it trained and which
    it reused, the reference teachers it trained and reused, and the seconds it took."""

    out: Path
    manifest: dict[str, Any]
    recipe: Recipe
    trained: list[int] = field(default_factory=list)
    reused: list[int] = field(default_factory=list)
    teachers_trained: int = 0
    teachers_reused: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


def build_references(
    model: str | Path,
    *,
    population: Sequence[str | Path],
    count: int,
    out: str | Path,
    online: bool = False,
    proxy: str | Path | None = None,
    teacher: str | Path | None = None,
    teacher_cache: str | Path | None = None,
    exclude: Sequence[str | Path] = (),
    flags: RecipeFlags | None = None,
    seed: int = defaults.SEED,
    device: str = "auto",
    precision: str = defaults.PRECISION,
    deterministic: bool = defaults.DETERMINISTIC,
    on_progress: OnProgress | None = None,
    on_warning: Callable[[str], None] | None = None,
    streaming: Streaming | None = None,
) -> BuildResult:
    """Train ``count`` reference models of ``model``'s recipe into ``out`` (see the module docstring).

    ``population``: folders of pairs; ``online``: they hold the audited members and non-members, each
    sample IN for exactly count/2 references (``count`` even, at least 2). ``proxy``: the proxy
    inputs of an akd/dmp pipeline. ``teacher``: the teacher of an older defended checkpoint that does
    not record its teacher's recipe. ``teacher_cache``: where reference teachers are cached
    (default ``out/teachers``). ``exclude``: folders of the target's members, for a target whose
    training set cannot be found at its recorded path (offline). ``flags``: the recipe of a model
    that does not record it. Reference k is seeded with ``seed + k`` (its sample and its training).
    ``device``, ``precision`` (auto, fp32, bf16) and ``deterministic``: how the references train
    (``privaudit.accel``); no part of the recipe (a DP-SGD replay stays fp32). ``streaming``: when
    the population (and the proxy, the members' folders) are streamed from disk rather than read
    whole into memory (default ``Streaming()``: above the memory budget); the references are the
    same either way.

    Raises a ``PrivauditError`` before anything is written for bad settings, a population that
    overlaps the target's members (offline; ``DataError``), or an ``out`` holding the references of
    another model or other settings.
    """
    t0 = time.perf_counter()
    warnings_: list[str] = []

    def warn(line: str) -> None:
        warnings_.append(line)
        if on_warning is not None:
            on_warning(line)

    # --- settings, before anything is read
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InputError(f"--count must be at least 1 (reference models to train), not {count}")
    if online and (count < 2 or count % 2):
        raise InputError(f"--online needs an even --count of at least 2 (each sample is IN for exactly half of the references), not {count}")
    check_seed(seed)
    check_seed(seed + count - 1)
    streaming = streaming or Streaming()
    streaming.validate()
    # an unknown or absent device, or a precision it cannot run, fails here, before anything is read or written
    resolve_accel(resolve_device(device), precision, deterministic=deterministic)
    if not population:
        raise InputError("--population DIR is required: folders of pairs from the target's distribution to train the references on")
    if online and exclude:
        raise InputError("--exclude is for offline references (whose population must hold none of the members); with --online the audited members "
                         "belong in the population: drop --exclude")
    out = Path(out)
    check_dir_creatable(out, what="--out folder", files=(MANIFEST,))
    cache = Path(teacher_cache) if teacher_cache is not None else out / TEACHERS
    if teacher_cache is not None:
        check_dir_creatable(cache, what="--teacher-cache folder")

    # --- the target and its recipe (load_model vets every file before anything runs)
    flags = flags or RecipeFlags()
    target = load_model(model, device="cpu", overrides=ArchOverrides())
    if teacher is not None and not Path(teacher).is_file():
        raise InputError(f"--teacher {teacher} {'is a folder' if Path(teacher).is_dir() else 'does not exist'}; give the teacher model file")
    teacher_model = load_model(teacher, device="cpu", overrides=ArchOverrides()) if teacher is not None else None
    with distributed.local():  # each reference trains in one process: its recorded batch need not divide by torchrun's count
        recipe = read_recipe(target, flags=flags, teacher=teacher_model)
    if target.training is not None and target.training.get("complete") is False:
        warn(f"{target.path} is an unfinished model (epoch {target.training.get('epochs_done')} of {target.training.get('epochs_total')}); "
             "references replay its full recipe")
    proxy_info = _check_proxy(recipe, proxy, streaming)

    # --- the population, and (offline) the members it must not hold
    pop = read_population(population, recipe, streaming)
    excluded: list[dict[str, Any]] = []
    members_in_population = None
    if not online:
        member_hashes, excluded = _member_hashes(recipe, exclude, target.path, streaming=streaming)
        _check_no_members(pop, member_hashes, excluded, target.path)
    else:
        member_hashes, _ = _member_hashes(recipe, (), target.path, required=False, streaming=streaming)
        if member_hashes is not None:
            members_in_population = len(member_hashes & set(pop.hashes))
            if members_in_population == 0:
                warn(f"--online: the population holds none of the {recipe.root.train_count} pairs {target.path} was trained on; online LiRA "
                     "scores the audited samples in the population, so include the members")
    n = len(pop.hashes)
    if not online and n < recipe.train_count:
        warn(f"the population holds {n} pairs, fewer than the {recipe.train_count} {target.path} was trained on: every reference trains on all {n}")
    if online and n < 2:
        raise DataError(f"--online needs at least 2 population pairs to split in halves; the population holds {n}")
    if online and abs(n / 2 - recipe.train_count) > 0.25 * recipe.train_count:
        warn(f"--online: each reference trains on about {n // 2} pairs (half the population of {n}), {target.path} on {recipe.train_count}; "
             f"references of the same size need about {2 * recipe.train_count} population pairs")

    samples = _samples(n, count, online=online, sample_size=min(recipe.train_count, n), seed=seed)
    manifest = _manifest_head(target, recipe, online=online, count=count, seed=seed, pop=pop, excluded=excluded, proxy=proxy_info,
                              cache=cache if teacher_cache is not None else None, members_in_population=members_in_population)
    previous = _previous(out, manifest)

    # --- from here on, files are written. Under torchrun, rank r trains references r, r + N, ...
    # (each one alone: ``distributed.local``), rank 0 writes the manifest, and once more after all
    # ranks are done, with every rank's references.
    world, rank = distributed.launcher_world_size(), distributed.launcher_rank()
    main = rank == 0
    if main:
        check_dir_writable(out, what="--out folder")
    done: dict[int, dict[str, Any]] = {}
    result = BuildResult(out=out, manifest=manifest, recipe=recipe, warnings=warnings_)
    for entry in previous:
        k = entry["index"]
        path = out / entry["file"]
        if (k < count and entry["file"] == reference_name(k) and entry.get("pairs") == [pop.hashes[i] for i in samples[k]] and path.is_file()
                and sha256_file(path) == entry.get("sha256")):
            done[k] = entry
    if main:
        _write_manifest(out, manifest, done)
    replayer = _Replayer(proxy=Path(proxy) if proxy is not None else None, device=distributed.local_device(device), cache=cache, result=result,
                         share=teacher_cache is not None, precision=precision, deterministic=deterministic, streaming=streaming)
    mine = [k for k in range(count) if k % world == rank]
    with distributed.session(torch.device("cpu"), timeout_s=REFERENCE_WAIT_S):
        with distributed.local():
            for k in mine:
                sample = pop.pairs.subset(samples[k])
                sample.path = f"population sample {k} of {out / MANIFEST}"
                path = out / reference_name(k)
                if k in done:
                    result.reused.append(k)
                    replayer.share_copy(recipe, sample, path, seed + k)
                    continue
                if on_progress is not None:
                    on_progress(len(done), count, 0, recipe.epochs)
                t_ref = time.perf_counter()
                replayer.run(recipe, sample, path, seed + k, progress=_progress(on_progress, len(done), count, recipe.epochs))
                teacher_rec = dict(replayer.last_teacher.get("teacher") or {})
                if teacher_rec and Path(teacher_rec["file"]).parent == out / TEACHERS:
                    teacher_rec["file"] = f"{TEACHERS}/{Path(teacher_rec['file']).name}"  # inside OUT: relative, so the folder can move
                done[k] = {"index": k, "file": path.name, "sha256": sha256_file(path), "seed": seed + k, "count": len(sample),
                           "seconds": round(time.perf_counter() - t_ref, 3), **({"teacher": teacher_rec} if teacher_rec else {}),
                           "pairs": [pop.hashes[i] for i in samples[k]]}
                result.trained.append(k)
                if main:
                    _write_manifest(out, manifest, done)
        if world > 1:
            _merge_ranks(done, result, manifest, out, main)
    if on_progress is not None:
        on_progress(count, count, 0, recipe.epochs)
    result.manifest = {**manifest, "references": [done[k] for k in sorted(done)]}
    result.seconds = time.perf_counter() - t0
    return result


# ----------------------------------------------------------------------------------------------
# population, members, samples


def read_population(folders: Sequence[str | Path], recipe: Recipe, streaming: Streaming | None = None) -> Population:
    """Every pair in ``folders`` at the recipe's size and direction, without duplicates (by content),
    sorted by content hash; streamed from disk when ``streaming`` says so (judged on all folders together;
    segmentation pairs are read into memory)."""
    root = recipe.root
    if root.task == "segmentation":
        sets = [_read_like_root(Path(folder), root, "population", None) for folder in folders]
    else:
        sets = open_sets([(folder, "population") for folder in folders], direction=root.direction, size=root.image_size, input_nc=root.arch.input_nc,
                         output_nc=root.arch.output_nc, streaming=streaming)
    hashes, info = [], []
    for folder, s in zip(folders, sets):
        hashes.extend(hex_hashes(s))
        info.append({"path": str(folder), "count": len(s)})
    names = [str(Path(s.path) / name) for s in sets for name in s.names]
    first: dict[str, int] = {}
    for i, h in enumerate(hashes):
        first.setdefault(h, i)
    order = sorted(first.values(), key=lambda i: hashes[i])
    pairs: ImageSet | StreamedSet
    if all(isinstance(s, StreamedSet) for s in sets):
        pairs = concat(sets, order, path="population", layout="population", names=names)  # type: ignore[arg-type]
    else:
        inputs = torch.cat([s.inputs for s in sets])  # type: ignore[union-attr]
        targets = torch.cat([s.targets for s in sets])  # type: ignore[union-attr, misc]
        pairs = ImageSet(inputs=inputs[order], targets=targets[order], names=[names[i] for i in order], path="population", layout="population")
    return Population(pairs=pairs, hashes=[hashes[i] for i in order], folders=info, duplicates=len(hashes) - len(first))


def _member_hashes(recipe: Recipe, exclude: Sequence[str | Path], who: str, *, required: bool = True,
                   streaming: Streaming | None = None) -> tuple[set[str] | None, list[dict[str, Any]]]:
    """The content hashes of the target's training pairs: the set at the path the target (or, for a
    pipeline, its teacher) records, when it is still there and its content hash matches, plus the
    ``exclude`` folders. Raises ``InputError`` naming ``--exclude`` when neither is available."""
    root = recipe.root
    ts = root.trained_on
    hashes: set[str] = set()
    sources: list[dict[str, Any]] = []
    why = f"{who} does not record where its training pairs are"
    if ts is not None and ts.path:
        p = Path(ts.path)
        if not p.is_dir():
            why = f"{who}'s training pairs are not at the path it records ({ts.path}: no such folder)"
        else:
            try:
                pairs = _read_like_root(p, root, "training data", streaming)
            except PrivauditError as exc:
                pairs, why = None, f"{who}'s training pairs at {ts.path} cannot be read ({exc})"
            if pairs is not None:
                if ts.sha256 and data_fingerprint(pairs) == ts.sha256:
                    hashes.update(hex_hashes(pairs))
                    sources.append({"path": ts.path, "count": len(pairs), "verified": True, "from": "recorded training set"})
                else:
                    why = f"{ts.path} no longer holds the pairs {who} was trained on (their content hash differs from the recorded one)"
    for e in exclude:
        pairs = _read_like_root(Path(e), root, "--exclude", streaming)
        hashes.update(hex_hashes(pairs))
        sources.append({"path": str(e), "count": len(pairs), "verified": bool(ts and ts.sha256 and data_fingerprint(pairs) == ts.sha256),
                        "from": "--exclude"})
    if not sources:
        if not required:
            return None, []
        raise InputError(f"{why}, so the population cannot be checked to hold none of them; pass --exclude MEMBERS (the pairs it was trained on), "
                         "or use --online")
    return hashes, sources


def _read_like_root(path: Path, root: Recipe, what: str, streaming: Streaming | None) -> ImageSet | StreamedSet:
    if root.task == "segmentation":  # A/ photos and B/ label maps
        from privaudit.references.segmentation import read_pairs

        return read_pairs(path, root, what)
    return open_pairs(path, direction=root.direction, size=root.image_size, input_nc=root.arch.input_nc, output_nc=root.arch.output_nc, what=what,
                      streaming=streaming)


def _check_no_members(pop: Population, members: set[str] | None, sources: list[dict[str, Any]], who: str) -> None:
    shared = [i for i, h in enumerate(pop.hashes) if members and h in members]
    if shared:
        where = " and ".join(s["path"] for s in sources)
        raise DataError(f"{len(shared)} of the {len(pop.hashes)} population pairs are pairs {who} was trained on (as in {where}), e.g. {pop.pairs.names[shared[0]]}; "
                        "offline references must not train on the members: remove them from --population, or use --online")


def balanced_assignment(n: int, k: int, seed: int) -> np.ndarray:
    """(n, k) bool, True where sample i is IN for reference j: every sample IN for exactly k/2
    references (per sample a random half, as in LiRA), then balanced by random swaps within
    samples so that each reference holds floor(n/2) or ceil(n/2) samples."""
    rng = np.random.default_rng(seed)
    inside = rng.random((n, k)).argsort(axis=1) < k // 2
    while True:
        sizes = inside.sum(axis=0)
        hi, lo = int(sizes.argmax()), int(sizes.argmin())
        if sizes[hi] - sizes[lo] <= 1:
            return inside
        rows = np.flatnonzero(inside[:, hi] & ~inside[:, lo])
        r = int(rng.choice(rows))
        inside[r, hi], inside[r, lo] = False, True


def _samples(n: int, count: int, *, online: bool, sample_size: int, seed: int) -> list[list[int]]:
    """Indices (into the hash-sorted population) each reference trains on, sorted."""
    if online:
        inside = balanced_assignment(n, count, seed)
        return [np.flatnonzero(inside[:, k]).tolist() for k in range(count)]
    return [sorted(np.random.default_rng(seed + k).choice(n, size=sample_size, replace=False).tolist()) for k in range(count)]


def sample_key(hashes: Sequence[str], seed: int) -> str:
    """16 hex digits naming a training sample and its seed (the reference-teacher cache's key)."""
    return hashlib.blake2b(("".join(sorted(hashes)) + f"/{seed}").encode(), digest_size=8).hexdigest()


# ----------------------------------------------------------------------------------------------
# proxy, manifest


def _check_proxy(recipe: Recipe, proxy: str | Path | None, streaming: Streaming | None = None) -> dict[str, Any] | None:
    if not recipe.needs_proxy:
        if proxy is not None:
            raise InputError(f"--proxy is for akd and dmp pipelines; this model is a {recipe.kind} model: drop --proxy")
        return None
    student = recipe if recipe.kind in ("akd", "dmp") else recipe.teacher
    while student is not None and student.kind not in ("akd", "dmp"):
        student = student.teacher
    assert student is not None and student.params is not None
    if proxy is None:
        raise InputError(f"this model is an {student.kind} student distilled on {student.params['proxy_count']} proxy inputs; pass --proxy DIR with "
                         "the same proxy set, so each reference pipeline distils on it too")
    if student.task == "segmentation":
        from privaudit.references.segmentation import read_proxy

        inputs = read_proxy(proxy, student)
    else:
        inputs = open_inputs(proxy, direction=student.direction, size=student.image_size, input_nc=student.arch.input_nc,
                             layout=student.params["proxy_layout"], what="--proxy", streaming=streaming)
    if len(inputs) != student.params["proxy_count"]:
        raise DataError(f"--proxy {proxy} holds {len(inputs)} inputs, but the model was distilled on {student.params['proxy_count']}; "
                        "give the same proxy set")
    return {"path": str(proxy), "count": len(inputs), "sha256": data_fingerprint(inputs)}



def _manifest_head(target: Any, recipe: Recipe, *, online: bool, count: int, seed: int, pop: Population, excluded: list[dict[str, Any]],
                   proxy: dict[str, Any] | None, cache: Path | None, members_in_population: int | None) -> dict[str, Any]:
    return {
        "schema": MANIFEST_SCHEMA,
        "tool": {"name": "privaudit", "version": __version__},
        "created": utc_now(),
        "target": {"path": target.path, "sha256": target.sha256, "format": target.format, "recipe": recipe.to_dict()},
        "mode": "online" if online else "offline",
        "count": count,
        "seed": seed,
        "population": {"folders": pop.folders, "count": len(pop.hashes), "duplicates": pop.duplicates, "key": pop.key(),
                       **({"members": members_in_population} if members_in_population is not None else {})},
        "excluded": excluded,
        "proxy": proxy,
        "teacher_cache": str(cache) if cache is not None else None,
        "references": [],
    }


def _settings(m: dict[str, Any]) -> dict[str, Any]:
    t = m.get("target") or {}
    return {"target_sha256": t.get("sha256"), "recipe_key": (t.get("recipe") or {}).get("recipe_key"), "mode": m.get("mode"), "seed": m.get("seed"),
            "population_key": (m.get("population") or {}).get("key")}


SETTING_NAMES = {"target_sha256": "another MODEL", "recipe_key": "another recipe", "mode": "another mode (--online)", "seed": "another --seed",
                 "population_key": "another --population"}


def _previous(out: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The finished references of an earlier run into ``out`` with the same settings; refuses other settings."""
    path = out / MANIFEST
    if not path.exists():
        return []
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not a readable references manifest ({type(exc).__name__}); choose another --out, or delete it") from None
    if not isinstance(old, dict) or old.get("schema") != MANIFEST_SCHEMA:
        raise InputError(f"{path} is not a {MANIFEST_SCHEMA} manifest; choose another --out")
    a, b = _settings(old), _settings(manifest)
    differ = [SETTING_NAMES[k] for k in SETTINGS if a[k] != b[k]]
    if differ:
        raise InputError(f"{out} holds references built for {', '.join(differ)} ({(old.get('target') or {}).get('path')}, seed {old.get('seed')}); "
                         "choose another --out (pass --teacher-cache to share reference teachers between folders)")
    old_count = old.get("count")
    if isinstance(old_count, int) and old_count != manifest["count"] and (manifest["mode"] == "online" or manifest["count"] < old_count):
        raise InputError(f"{out} holds {'online ' if manifest['mode'] == 'online' else ''}references built with --count {old_count}; pass --count {old_count}"
                         + (" (online halves depend on the count)" if manifest["mode"] == "online" else " or more") + ", or choose another --out")
    refs = old.get("references")
    return [r for r in refs if isinstance(r, dict) and isinstance(r.get("index"), int) and isinstance(r.get("file"), str)] if isinstance(refs, list) else []


def _merge_ranks(done: dict[int, dict[str, Any]], result: BuildResult, head: dict[str, Any], out: Path, main: bool) -> None:
    """Under torchrun: every rank's finished references into ``done`` and ``result`` of every rank,
    and rank 0 writes the whole manifest; the others wait until it is written."""
    mine = {"done": {str(k): v for k, v in done.items()}, "trained": result.trained, "reused": result.reused,
            "teachers_trained": result.teachers_trained, "teachers_reused": result.teachers_reused}
    parts = distributed.gather_json(mine)
    result.trained, result.reused, result.teachers_trained, result.teachers_reused = [], [], 0, 0
    for part in parts:
        done.update({int(k): v for k, v in part["done"].items()})
        result.trained += part["trained"]
        result.reused += part["reused"]
        result.teachers_trained += part["teachers_trained"]
        result.teachers_reused += part["teachers_reused"]
    result.trained.sort()
    result.reused.sort()
    if main:
        _write_manifest(out, head, done)
    distributed.barrier()


def _write_manifest(out: Path, head: dict[str, Any], done: dict[int, dict[str, Any]]) -> None:
    write_json(out / MANIFEST, {**head, "references": [done[k] for k in sorted(done)]})


def _progress(on_progress: OnProgress | None, done: int, total: int, epochs: int) -> Callable[[int], None]:
    def report(epoch: int) -> None:
        if on_progress is not None:
            on_progress(done, total, epoch, epochs)

    return report


# ----------------------------------------------------------------------------------------------
# replaying a recipe


class _Replayer:
    """Trains one reference of a recipe on a sample, through ``training.train`` and ``defenses.defend``."""

    def __init__(self, *, proxy: Path | None, device: str, cache: Path, result: BuildResult, share: bool = False, precision: str = defaults.PRECISION,
                 deterministic: bool = defaults.DETERMINISTIC, streaming: Streaming | None = None) -> None:
        self.proxy, self.device, self.cache, self.result, self.share = proxy, device, cache, result, share
        self.run_settings: dict[str, Any] = {"device": device, "precision": precision, "deterministic": deterministic}
        self.streaming = streaming
        self.last_teacher: dict[str, Any] = {}

    def run(self, recipe: Recipe, sample: ImageSet | StreamedSet, out: Path, seed: int, *, progress: Callable[[int], None], offset: int = 0) -> None:
        """Write ``out``: ``recipe`` replayed on ``sample`` with ``seed``; ``progress(epoch)`` counts the pipeline's epochs from ``offset``.

        With ``share`` (an explicit teacher cache), a plain pix2pix reference is the same model as
        the reference teacher an AKD or DMP pipeline of that teacher trains on the same sample with
        the same seed: it is taken from the cache when there, and put there when trained."""
        self.last_teacher = {}
        if _finished(out, recipe, sample, seed):
            self.share_copy(recipe, sample, out, seed)
            return
        if self._shared(recipe):
            cached = self.teacher_path(recipe, sample, seed)
            if _finished(cached, recipe, sample, seed):
                atomic_copy(cached, out)
                self.result.teachers_reused += 1
                return
        if recipe.teacher is not None:
            t_path = self.teacher_path(recipe.teacher, sample, seed)
            if _finished(t_path, recipe.teacher, sample, seed):
                self.result.teachers_reused += 1
            else:
                check_dir_writable(t_path.parent, what="--teacher-cache folder")
                inner = _Replayer(proxy=self.proxy, cache=self.cache, result=self.result, streaming=self.streaming, **self.run_settings)
                inner.run(recipe.teacher, sample, t_path, seed, progress=progress, offset=offset)
                self.result.teachers_trained += 1
            teacher_sha = sha256_file(t_path)
            self.last_teacher = {"teacher": {"file": str(t_path), "sha256": teacher_sha, "recipe_key": recipe.teacher.recipe_key()}}
            offset += recipe.teacher.epochs
        else:
            t_path = None
        self._step(recipe, sample, out, seed, t_path, progress=progress, offset=offset)
        self.share_copy(recipe, sample, out, seed)

    def _shared(self, recipe: Recipe) -> bool:
        return self.share and recipe.kind == "pix2pix" and recipe.teacher is None

    def share_copy(self, recipe: Recipe, sample: ImageSet, out: Path, seed: int) -> None:
        """With ``share``: a copy of the finished plain reference ``out`` in the teacher cache, for the pipelines of its recipe."""
        if not self._shared(recipe) or not out.is_file():
            return
        cached = self.teacher_path(recipe, sample, seed)
        if not _finished(cached, recipe, sample, seed):
            check_dir_writable(cached.parent, what="--teacher-cache folder")
            atomic_copy(out, cached)

    def teacher_path(self, teacher: Recipe, sample: ImageSet | StreamedSet, seed: int) -> Path:
        return self.cache / f"{teacher.recipe_key()}-{sample_key(hex_hashes(sample), seed)}.pt"

    def _step(self, recipe: Recipe, sample: ImageSet | StreamedSet, out: Path, seed: int, teacher: Path | None, *, progress: Callable[[int], None], offset: int) -> None:
        from privaudit import training
        from privaudit.defenses import defend
        from privaudit.defenses.distill import DistillOptions
        from privaudit.defenses.dpsgd import DPSGDOptions
        from privaudit.defenses.gauss import GaussOptions
        from privaudit.models.arch import ModelSpec
        from privaudit.training.pix2pix import PLAIN_OBJECTIVE
        from privaudit.training.resume import discard_state, state_path

        def on_step(epoch: int, step: int, steps: int, losses: dict[str, float]) -> None:
            progress(offset + epoch + (step == steps - 1))  # epochs finished, counting this one at its last step

        def attempt(resume: bool) -> None:
            if recipe.task == "segmentation":
                from privaudit.references.segmentation import replay

                replay(recipe, sample, out, seed, teacher, proxy=self.proxy, device=self.device, resume=resume, on_step=on_step)
            elif recipe.kind == "pix2pix":
                a = recipe.arch
                cfg = replace(recipe.training, seed=seed, **self.run_settings)  # type: ignore[type-var]
                training.train(sample, out, direction=recipe.direction, size=recipe.image_size,
                               model=ModelSpec(num_downs=a.num_downs, ngf=a.ngf, norm=a.norm, use_dropout=a.use_dropout), config=cfg, resume=resume,
                               on_step=on_step)
            elif recipe.kind == "dpsgd":
                t, p, a = recipe.training, recipe.params, recipe.arch
                assert t is not None and p is not None
                _replayable(t, "dpsgd")
                options = DPSGDOptions(epochs=t.epochs, decay_epochs=t.decay_epochs, batch_size=t.batch_size, lr=t.lr, lambda_l1=t.lambda_l1, augment=t.augment,
                                       ndf=t.ndf, ngf=a.ngf, num_downs=a.num_downs, noise_multiplier=p["noise_multiplier"], max_grad_norm=p["max_grad_norm"],
                                       target_epsilon=None, delta=p["delta"], accountant=p["accountant"])
                defend("dpsgd", out=out, train_data=sample, options=options, direction=recipe.direction, size=recipe.image_size, seed=seed,
                       resume=resume, on_step=on_step, on_warning=lambda line: None, **self.run_settings)
            elif recipe.kind in ("akd", "dmp"):
                t, a, ta = recipe.training, recipe.arch, recipe.teacher.arch  # type: ignore[union-attr]
                assert t is not None and recipe.params is not None
                _replayable(t, recipe.kind)
                same = a == (replace(ta, norm="batch") if ta.norm == "group" else ta)
                if not same and a.use_dropout is not True:
                    raise InputError(f"the {recipe.kind} student's U-Net has no dropout while its teacher's has, which privaudit defend cannot replay")
                dd, obj = recipe.params.get("distill_data") or {}, recipe.params.get("objective") or {}
                options = DistillOptions(epochs=t.epochs, decay_epochs=t.decay_epochs, batch_size=t.batch_size, lr=t.lr, lambda_l1=t.lambda_l1,
                                         augment=t.augment, ndf=t.ndf, ngf=None if same else a.ngf, num_downs=None if same else a.num_downs,
                                         norm=None if same else a.norm, proxy_layout=recipe.params["proxy_layout"],
                                         # the student's distillation set and objective as recorded (absent: the AKD paper's, as before)
                                         input_kind=dd.get("input_kind", "auto"), augment_copies=dd.get("augment_copies", 0),
                                         augment_ops=tuple(dd["augment_ops"]) if dd.get("augment_ops") else None, recombine=dd.get("recombine", "none"),
                                         recombine_copies=dd.get("recombine_copies") or 1, **{**PLAIN_OBJECTIVE, **obj})
                defend(recipe.kind, out=out, teacher=teacher, proxy=self.proxy, options=options, size=recipe.image_size, seed=seed,
                       resume=resume, on_step=on_step, on_warning=lambda line: None, streaming=self.streaming, **self.run_settings)
            elif recipe.kind == "gauss":
                assert recipe.params is not None
                defend("gauss", out=out, teacher=teacher, options=GaussOptions(sigma=recipe.params["sigma"]), size=recipe.image_size, seed=seed,
                       on_warning=lambda line: None, **self.run_settings)
            else:  # read_recipe admits no other kind
                raise InputError(f"cannot replay a {recipe.kind} recipe")

        if state_path(out).exists():
            try:
                attempt(resume=True)
                return
            except (InputError, CheckpointError):
                # A resume state of other settings (or a broken one) is only a cache: start this reference afresh.
                discard_state(out)
        attempt(resume=False)


def _replayable(cfg: Any, kind: str) -> None:
    """``privaudit defend`` fixes Adam's β1 and the adversarial loss; a recorded config that changed them cannot be replayed through it."""
    if cfg.beta1 != defaults.BETA1 or (kind == "dpsgd" and cfg.adversarial is not True):
        raise InputError(f"the {kind} model was trained with settings privaudit defend cannot set (beta1 {cfg.beta1:g}, adversarial {cfg.adversarial}); "
                         "its references cannot be replayed")


def _finished(path: Path, recipe: Recipe, sample: ImageSet | StreamedSet, seed: int) -> bool:
    """Whether ``path`` already holds a finished replay of ``recipe`` on ``sample`` with ``seed``
    (a run killed after its last epoch was saved, or a cached reference teacher)."""
    if not path.is_file():
        return False
    try:
        ckpt = safe_torch_load(path, what="checkpoint")
    except CheckpointError:
        return False
    if not isinstance(ckpt, dict) or not (ckpt.get("training") or {}).get("complete"):
        return False
    defense = ckpt.get("defense") or {}
    prov = ckpt.get("provenance") or {}
    if defense.get("method", "none") != ("none" if recipe.kind in ("pix2pix", "segmentation") else recipe.kind) or ckpt.get("arch") != recipe.arch.to_dict():
        return False
    if recipe.task == "segmentation" and recipe.kind in ("segmentation", "dpsgd"):
        return (prov.get("trained_on") or {}).get("sha256") == data_fingerprint(sample) and (prov.get("training") or {}).get("seed") == seed
    if recipe.kind in ("pix2pix", "dpsgd"):
        trained = prov.get("training") or {}
        cfg_seed = trained.get("seed") if recipe.kind == "pix2pix" else (trained.get("train") or {}).get("seed")
        return (prov.get("trained_on") or {}).get("sha256") == data_fingerprint(sample) and cfg_seed == seed
    return False  # a pipeline's last step is cheap next to its teacher, and its teacher is cached
