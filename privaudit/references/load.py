"""Reading reference models back for the calibrated attacks: ``load_references`` validates a folder
written by ``build_references`` against the audited model, and ``References`` gives the attacks
what they need: each reference's reconstruction loss on each pair, (N, K), and which reference
trained on which pair (IN), (N, K) bool, as ``privaudit.attacks.calibrated`` takes them.

Every check refuses with one line naming the file and the fix (``CheckpointError``, exit 2): a
manifest of another schema, a reference file whose sha256 differs from the manifest's, a file that
would run code when loaded (``load_model``'s vetting), references of another architecture, image
size or direction than the audited model, an unfinished build, references of another model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from privaudit.errors import CheckpointError, InputError, PrivauditError
from privaudit.io import sha256_file
from privaudit.references.build import MANIFEST, MANIFEST_SCHEMA, hex_hashes

if TYPE_CHECKING:
    from privaudit.attacks.reconstruction import AttackConfig
    from privaudit.data.images import ImageSet
    from privaudit.models.loaded import LoadedModel

# A manifest lists per-pair hashes for every reference: tens of MB at most for large populations.
MAX_MANIFEST_BYTES = 256 << 20
# What each attack needs of every audited sample: (at least this many IN, at least this many OUT) references.
NEEDS = {"loss": (0, 0), "reference-only": (0, 1), "calibrated": (0, 1), "lira-offline": (0, 2), "lira-online": (2, 2)}
ATTACKS = tuple(NEEDS)


@dataclass(frozen=True)
class Reference:
    """One reference model of a manifest: its file, sha256, seed and the pair hashes it trained on."""

    index: int
    path: Path
    sha256: str
    seed: int
    pairs: frozenset[str]


@dataclass
class References:
    """The reference models of a folder, validated against the audited model.

    ``mode`` offline|online; ``recipe`` the manifest's target recipe (dict); ``target_matches``
    False when they were built for another model file with the same recipe (``notes`` says so).
    """

    folder: Path
    manifest: dict[str, Any]
    refs: list[Reference]
    mode: str
    image_size: int
    direction: str
    arch: dict[str, Any]
    recipe: dict[str, Any]
    target_matches: bool = True
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.refs)

    def describe(self) -> dict[str, Any]:
        """For a report: where the references are and what they replay."""
        return {"path": str(self.folder), "mode": self.mode, "count": len(self.refs), "seed": self.manifest.get("seed"),
                "recipe_key": self.recipe.get("recipe_key"), "kind": self.recipe.get("kind"), "target_matches": self.target_matches}

    def check_images(self, images: "ImageSet") -> None:
        if images.size != self.image_size:
            raise InputError(f"the references in {self.folder} were trained at {self.image_size} px but the images are {images.size} px; "
                             f"read them at --size {self.image_size}")

    def inside(self, images: "ImageSet") -> np.ndarray:
        """(N, K) bool: True where reference k trained on pair i (matched by content hash)."""
        self.check_images(images)
        hashes = hex_hashes(images)
        return np.array([[h in r.pairs for r in self.refs] for h in hashes], dtype=bool).reshape(len(hashes), len(self.refs))

    def losses(self, images: "ImageSet", config: "AttackConfig", *, device: str | None = None,
               on_reference: Callable[[int, int], None] | None = None) -> np.ndarray:
        """(N, K) float: each reference's reconstruction loss on each pair (``config``: loss, stochastic
        draws, batch size, seed, exactly as for the target)."""
        return self.losses_many([images], config, device=device, on_reference=on_reference)[0]

    def losses_many(self, sets: Sequence["ImageSet"], config: "AttackConfig", *, device: str | None = None,
                    on_reference: Callable[[int, int], None] | None = None, precision: str = "fp32", deterministic: bool = False) -> list[np.ndarray]:
        """``losses`` for several sets, loading each reference once: one (N_i, K) array per set.
        ``precision``/``deterministic``: how the references run (``privaudit.accel``), the target's."""
        from privaudit.attacks.reconstruction import reconstruction_losses  # moves with the attacks restructure
        from privaudit.models.checkpoint import load_model

        for images in sets:
            self.check_images(images)
        out = [np.zeros((len(s), len(self.refs)), dtype=np.float64) for s in sets]
        for k, ref in enumerate(self.refs):
            model = load_model(ref.path, device=device, seed=config.seed, precision=precision, deterministic=deterministic)
            if model.sha256 != ref.sha256:
                raise CheckpointError(f"{ref.path} changed since its references were checked (sha256 differs from {self.folder / MANIFEST}); rebuild it")
            self._check_model(model)
            for i, images in enumerate(sets):
                if model.task == "segmentation":  # the per-image cross-entropy (attacks.segmentation)
                    from privaudit.models.seginference import segment

                    out[i][:, k] = segment(model, images, batch_size=config.batch_size, seed=config.seed).ce
                else:
                    out[i][:, k] = reconstruction_losses(model, images, config)
            del model
            if on_reference is not None:
                on_reference(k + 1, len(self.refs))
        return out

    def counts(self, images: "ImageSet") -> tuple[np.ndarray, np.ndarray]:
        """(IN count, OUT count) per pair, each (N,)."""
        inside = self.inside(images)
        return inside.sum(axis=1), (~inside).sum(axis=1)

    def supports(self, attack: str, images: "ImageSet | None" = None) -> str | None:
        """None when ``attack`` can run on these references (for every pair of ``images``, when given);
        else why not, in one line that says how many references are needed."""
        if attack not in NEEDS:
            raise InputError(f"unknown attack {attack!r}; choose one of {', '.join(ATTACKS)}")
        need_in, need_out = NEEDS[attack]
        if need_in == 0 and need_out == 0:
            return None
        k = len(self.refs)
        if images is None:
            n_in = np.array([k // 2 if self.mode == "online" else 0])
            n_out = np.array([k - n_in[0]])
        else:
            n_in, n_out = self.counts(images)
        short_in = int((n_in < need_in).sum())
        short_out = int((n_out < need_out).sum())
        if not short_in and not short_out:
            return None
        where = f"{self.folder} ({self.mode}, {k} reference{'s' if k != 1 else ''})"
        if need_in:
            if self.mode != "online":
                return f"{attack} needs references that trained on the audited samples: build them with --online --count {2 * need_in} or more; {where} are offline"
            lacking = int(((n_in < need_in) | (n_out < need_out)).sum())
            many = f"{lacking} of the {len(n_in)} samples lack them" if images is not None else f"each sample is IN for {k // 2}"
            return (f"{attack} needs every sample IN for at least {need_in} references and OUT for at least {need_out}; {many} in {where}: "
                    f"build with --online --count {2 * max(need_in, need_out)} or more, with the members and non-members in --population")
        many = f"{short_out} of the {len(n_out)} samples have fewer" if images is not None else f"each sample has {int(n_out[0])}"
        fix = f"--count {need_out} or more" if self.mode == "offline" else f"--online --count {2 * need_out} or more"
        return f"{attack} needs at least {need_out} OUT reference{'s' if need_out > 1 else ''} per sample; {many} in {where}: build with {fix}"

    def check_supports(self, attack: str, images: "ImageSet | None" = None) -> None:
        """``InputError`` with ``supports``'s reason when ``attack`` cannot run."""
        reason = self.supports(attack, images)
        if reason:
            raise InputError(reason)

    def supported(self, images: "ImageSet | None" = None) -> list[str]:
        """The attacks these references support (``loss`` always)."""
        return [a for a in ATTACKS if self.supports(a, images) is None]

    def _check_model(self, model: "LoadedModel") -> None:
        p = model.path
        if model.arch != self.arch:
            raise CheckpointError(f"{p} is a {_arch(model.arch)}, not the {_arch(self.arch)} its manifest records; rebuild the references")
        if model.image_size != self.image_size or model.direction != self.direction:
            raise CheckpointError(f"{p} was trained at {model.image_size} px {model.direction}, not the {self.image_size} px {self.direction} its manifest "
                                  "records; rebuild the references")


def _arch(a: dict[str, Any]) -> str:
    if a.get("type") != "unet":
        return f"{a.get('type')} model"
    return f"U-Net(num_downs={a.get('num_downs')}, ngf={a.get('ngf')}, norm={a.get('norm')}, dropout={a.get('use_dropout')}, {a.get('input_nc')}→{a.get('output_nc')})"


def _rebuild(folder: Path) -> str:
    return f"rebuild them with the privaudit references command that made {folder} (finished references are reused)"


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of a references folder, its schema and structure checked (``CheckpointError``)."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.exists():
        raise CheckpointError(f"references folder {folder} does not exist; build references with privaudit references MODEL --population DIR --out {folder}")
    if not folder.is_dir():
        raise CheckpointError(f"--references {folder} is not a folder; give the folder privaudit references wrote (it holds {MANIFEST})")
    if not path.is_file():
        raise CheckpointError(f"{folder} holds no {MANIFEST}; build references with privaudit references MODEL --population DIR --out {folder}")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise CheckpointError(f"{path} is larger than {MAX_MANIFEST_BYTES >> 20} MiB, too large for a references manifest; {_rebuild(folder)}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not readable JSON ({type(exc).__name__}); {_rebuild(folder)}") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != MANIFEST_SCHEMA:
        schema = manifest.get("schema") if isinstance(manifest, dict) else type(manifest).__name__
        raise CheckpointError(f"{path} is not a {MANIFEST_SCHEMA} manifest (schema {schema!r}); {_rebuild(folder)}")
    target = manifest.get("target")
    recipe = target.get("recipe") if isinstance(target, dict) else None
    refs = manifest.get("references")
    if not isinstance(recipe, dict) or not isinstance(refs, list) or manifest.get("mode") not in ("offline", "online") or not isinstance(manifest.get("count"), int):
        raise CheckpointError(f"{path} is malformed (target.recipe, mode, count or references missing); {_rebuild(folder)}")
    return manifest


def _reference(folder: Path, entry: Any, manifest_path: Path) -> Reference:
    ok = (isinstance(entry, dict) and isinstance(entry.get("index"), int) and isinstance(entry.get("file"), str) and isinstance(entry.get("sha256"), str)
          and isinstance(entry.get("seed"), int) and isinstance(entry.get("pairs"), list) and all(isinstance(h, str) for h in entry["pairs"]))
    if not ok:
        raise CheckpointError(f"{manifest_path} lists a malformed reference {str(entry)[:60]!r}; {_rebuild(folder)}")
    name = entry["file"]
    if Path(name).name != name or name in ("", ".", ".."):
        raise CheckpointError(f"{manifest_path} names the reference file {name!r}, which is not a file in {folder}; {_rebuild(folder)}")
    path = folder / name
    if not path.is_file():
        raise CheckpointError(f"reference {path} is missing; {_rebuild(folder)}")
    if sha256_file(path) != entry["sha256"]:
        raise CheckpointError(f"{path} does not match {manifest_path} (its sha256 differs): the file was changed or replaced; {_rebuild(folder)}")
    return Reference(index=entry["index"], path=path, sha256=entry["sha256"], seed=entry["seed"], pairs=frozenset(entry["pairs"]))


def load_references(folder: str | Path, target: "LoadedModel", *, direction: str | None = None, image_size: int | None = None) -> References:
    """The references in ``folder`` for the audited ``target``, validated (see the module docstring).

    ``direction`` and ``image_size`` are the audit's (for a model that does not record them, e.g.
    an exported one); by default the target's own. Each reference file is sha256-checked against
    the manifest and loaded once through ``load_model`` (which refuses a file that would run code)
    to check its architecture, image size and direction against the target's.
    """
    from privaudit.models.checkpoint import load_model
    from privaudit.references.recipe import read_recipe

    folder = Path(folder)
    manifest = read_manifest(folder)
    mpath = folder / MANIFEST
    recipe = manifest["target"]["recipe"]
    entries = manifest["references"]
    if len(entries) < manifest["count"]:
        raise CheckpointError(f"{folder} holds {len(entries)} of the {manifest['count']} references it was built for (the run was interrupted); "
                              "finish it by running the same privaudit references command again (finished references are reused)")
    refs = [_reference(folder, e, mpath) for e in entries]
    if sorted(r.index for r in refs) != list(range(len(refs))):
        raise CheckpointError(f"{mpath} lists references out of order or twice; {_rebuild(folder)}")
    refs.sort(key=lambda r: r.index)
    want_size = image_size or target.image_size
    want_direction = direction or target.direction
    first: LoadedModel | None = None
    for ref in refs:
        model = load_model(ref.path, device="cpu")
        if model.sha256 != ref.sha256:
            raise CheckpointError(f"{ref.path} changed while it was read (sha256 differs from {mpath}); {_rebuild(folder)}")
        if model.task != target.task:
            raise CheckpointError(f"{ref.path} is a {model.task} model but {target.path} is a {target.task} model; build references for {target.path} "
                                  "with privaudit references")
        if target.arch.get("type") in ("unet", "torchvision") and model.arch != target.arch:
            raise CheckpointError(f"{ref.path} is a {_arch(model.arch)} but {target.path} is a {_arch(target.arch)}: these references replay another "
                                  f"model; build references for {target.path} with privaudit references")
        if want_size is not None and model.image_size != want_size:
            raise CheckpointError(f"{ref.path} was trained at {model.image_size} px but {target.path} is audited at {want_size} px; build references "
                                  f"for {target.path} with privaudit references")
        if want_direction is not None and model.direction != want_direction:
            raise CheckpointError(f"{ref.path} translates {model.direction} but {target.path} is audited {want_direction}; build references for "
                                  f"{target.path} with privaudit references")
        if first is not None and (model.arch, model.image_size, model.direction) != (first.arch, first.image_size, first.direction):
            raise CheckpointError(f"{ref.path} differs from {first.path} in architecture, image size or direction; {_rebuild(folder)}")
        first = first or model
    assert first is not None
    notes: list[str] = []
    matches = manifest["target"].get("sha256") == target.sha256
    if not matches:
        key = None
        try:
            key = read_recipe(target).recipe_key()
        except PrivauditError:  # a model that records no recipe cannot share one
            key = None
        if key is None or key != recipe.get("recipe_key"):
            raise CheckpointError(f"{folder} holds references built for {manifest['target'].get('path')} (sha256 {str(manifest['target'].get('sha256'))[:12]}…), "
                                  f"whose recipe {target.path} does not share; build references for {target.path} with privaudit references")
        notes.append(f"the references in {folder} were built for {manifest['target'].get('path')}, another file with the same recipe as {target.path}")
    return References(folder=folder, manifest=manifest, refs=refs, mode=manifest["mode"], image_size=int(first.image_size or 0),
                      direction=first.direction if first.direction is None else str(first.direction), arch=first.arch, recipe=recipe,  # type: ignore[arg-type]
                      target_matches=matches, notes=notes)
