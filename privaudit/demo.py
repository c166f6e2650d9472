"""The built-in demo: a procedural label → photo data set, and the whole pipeline on it.

The data are facade-like: a label map of rectangles (wall, windows, door, balcony, sky) and a
"photo" rendered from it with per-image random colours, textures, lighting and noise. The photo
is not a function of the label map, so a generator can only match its training targets by
memorising them, which is what makes such models leak. No third-party data is used.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from privaudit.io import atomic_path

# label colours (the label map is what the user draws; the photo is what the model must produce)
CLASSES = {
    "sky": (70, 130, 180),
    "wall": (128, 64, 128),
    "window": (0, 0, 230),
    "door": (220, 20, 60),
    "balcony": (250, 170, 30),
}


def _facade(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One (photo, label) pair, uint8 H×W×3 each."""
    s = size
    cls = np.zeros((s, s), dtype=np.int64)  # 0 sky, 1 wall, 2 window, 3 door, 4 balcony
    roof = int(rng.integers(s // 10, s // 4))
    cls[roof:, :] = 1
    rows, cols = int(rng.integers(2, 5)), int(rng.integers(2, 5))
    cell_h, cell_w = (s - roof) / (rows + 0.6), s / cols
    for r in range(rows):
        for c in range(cols):
            h, w = int(cell_h * rng.uniform(0.35, 0.6)), int(cell_w * rng.uniform(0.3, 0.6))
            y0 = roof + int(r * cell_h + rng.uniform(0.15, 0.3) * cell_h)
            x0 = int(c * cell_w + (cell_w - w) / 2 + rng.integers(-1, 2))
            cls[y0 : y0 + h, max(x0, 0) : x0 + w] = 2
            if rng.random() < 0.3:
                cls[y0 + h : y0 + h + max(1, s // 32), max(x0 - 1, 0) : x0 + w + 1] = 4
    dw, dh = int(s * rng.uniform(0.12, 0.2)), int(s * rng.uniform(0.18, 0.28))
    dx = int(rng.integers(0, s - dw))
    cls[s - dh :, dx : dx + dw] = 3
    label = np.array(list(CLASSES.values()), dtype=np.uint8)[cls]

    # the photo: random palette per image, texture, a lighting gradient and sensor noise
    palette = rng.uniform(30, 230, size=(5, 3))
    photo = palette[cls]
    yy, xx = np.mgrid[0:s, 0:s] / s
    texture = rng.normal(0, 1, (s // 4 + 1, s // 4 + 1))
    texture = np.kron(texture, np.ones((4, 4)))[:s, :s]
    photo += 18 * texture[..., None] * (cls[..., None] == 1)
    light = 1.0 + rng.uniform(-0.35, 0.35) * (xx - 0.5) + rng.uniform(-0.35, 0.35) * (yy - 0.5)
    photo = photo * light[..., None] + rng.normal(0, 6, photo.shape)
    return np.clip(photo, 0, 255).astype(np.uint8), label


def make_facades(n: int, *, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` procedural pairs: (photos, labels) as uint8 (n, 3, size, size). Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    photos, labels = zip(*(_facade(rng, size) for _ in range(n)))
    to_t = lambda arrs: torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    return to_t(photos), to_t(labels)


def write_aligned(folder: Path, photos: torch.Tensor, labels: torch.Tensor, prefix: str, *, on_image: Callable[[], None] | None = None) -> None:
    """Write pairs in the pix2pix aligned format: photo (A) on the left, label (B) on the right.
    ``on_image()`` is called after each file written."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(photos.shape[0]):
        ab = torch.cat([photos[i], labels[i]], dim=2).permute(1, 2, 0).numpy()
        with atomic_path(folder / f"{prefix}_{i:04d}.png") as tmp:
            Image.fromarray(ab).save(tmp, format="PNG")
        if on_image:
            on_image()


@dataclass(frozen=True)
class DemoConfig:
    size: int = 32
    n_train: int = 48
    n_proxy: int = 48
    n_test: int = 48
    ngf: int = 16
    teacher_epochs: int = 150
    student_epochs: int = 20
    batch_size: int = 4
    seed: int = 0
    max_auc: float = 0.6

    @classmethod
    def quick(cls) -> "DemoConfig":
        """A toy run for the test suite (seconds, not minutes)."""
        return cls(n_train=12, n_proxy=12, n_test=12, ngf=4, teacher_epochs=20, student_epochs=4)


def build_data(root: Path, cfg: DemoConfig, *, on_image: Callable[[], None] | None = None) -> dict[str, Path]:
    """Write train (members), proxy and test (non-members) folders under ``root``; disjoint seeds.
    ``on_image()`` is called after each image written."""
    paths = {}
    for i, (name, n) in enumerate((("train", cfg.n_train), ("proxy", cfg.n_proxy), ("test", cfg.n_test))):
        photos, labels = make_facades(n, size=cfg.size, seed=cfg.seed * 1000 + i)
        write_aligned(root / name, photos, labels, name, on_image=on_image)
        paths[name] = root / name
    return paths


def write_splits(root: Path, n: int, *, size: int = 32, seed: int = 0, splits: tuple[str, ...] = ("train", "val", "test")) -> Path:
    """Toy aligned data sets for the benchmarks' ``--quick`` runs: ``n`` procedural facade pairs
    (photo | label) in each of ``root/<split>`` (seeds ``seed``, ``seed + 1``, ...: disjoint splits).
    A split folder already there is kept as it is, so that a resumed run reads the same data."""
    for i, split in enumerate(splits):
        if not (root / split).is_dir():
            photos, labels = make_facades(n, size=size, seed=seed + i)
            write_aligned(root / split, photos, labels, split)
    return root


STAGES = ("data", "teacher", "akd", "evaluate:teacher", "evaluate:akd")


@dataclass(frozen=True)
class StageProgress:
    """Progress within one stage of the demo (one of :data:`STAGES`), for a progress bar.

    ``done`` of ``total`` units: images written (data), training steps (teacher, akd: epochs × batches
    per epoch), images through the generator (evaluate: members then non-members). Training stages
    also give the 0-based ``epoch`` of ``epochs``, the 0-based ``step`` of ``steps_per_epoch`` and the
    epoch's running mean ``losses``.
    """

    stage: str
    done: int
    total: int
    losses: dict[str, float] = field(default_factory=dict)
    epoch: int | None = None
    epochs: int | None = None
    step: int | None = None
    steps_per_epoch: int | None = None


def stage_totals(cfg: DemoConfig) -> dict[str, int]:
    """The units of work of each stage (see :class:`StageProgress`)."""
    steps = lambda n: math.ceil(n / cfg.batch_size)  # noqa: E731
    return {
        "data": cfg.n_train + cfg.n_proxy + cfg.n_test,
        "teacher": cfg.teacher_epochs * steps(cfg.n_train),
        "akd": cfg.student_epochs * steps(cfg.n_proxy),
        "evaluate:teacher": cfg.n_train + cfg.n_test,
        "evaluate:akd": cfg.n_train + cfg.n_test,
    }


def run_demo(
    out: Path,
    cfg: DemoConfig,
    *,
    on_stage: Callable[[str, str, int], None] | None = None,
    on_progress: Callable[[StageProgress], None] | None = None,
) -> dict[str, Any]:
    """The whole pipeline: data → teacher → attack → AKD → evaluate both → comparison → gate.

    ``on_stage(stage, text, total)`` is called when a stage of :data:`STAGES` starts (``text``: what it
    does, one line; ``total``: its units of work), ``on_progress(StageProgress)`` as the work goes on;
    the last call of a stage has ``done == total``. Returns a summary; writes everything under ``out``.
    """
    from privaudit import defenses, training
    from privaudit.attacks.reconstruction import AttackConfig
    from privaudit.defenses.distill import DistillOptions
    from privaudit.report.markdown import to_markdown
    from privaudit.report.plots import save_figure, tradeoff_figure
    from privaudit.report.tables import row
    from privaudit.evaluation.evaluate import EvaluateConfig, evaluate
    from privaudit.evaluation.inception import resolve_inception_weights
    from privaudit.errors import WeightsError
    from privaudit.io import atomic_write_text, write_json
    from privaudit.models.arch import ModelSpec
    from privaudit.data.checks import MIN_PAIRS

    totals = stage_totals(cfg)
    emit = on_progress or (lambda p: None)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def stage(key: str, text: str) -> None:
        if on_stage:
            on_stage(key, text, totals[key])

    def counter(key: str) -> Callable[[int], None]:
        done = 0

        def advance(k: int = 1) -> None:
            nonlocal done
            done += k
            emit(StageProgress(key, done, totals[key]))

        return advance

    def steps(key: str, epochs: int) -> Callable[[int, int, int, dict[str, float]], None]:
        def on_step(epoch: int, step: int, steps_per_epoch: int, losses: dict[str, float]) -> None:
            emit(StageProgress(key, epoch * steps_per_epoch + step + 1, epochs * steps_per_epoch, dict(losses), epoch, epochs, step, steps_per_epoch))

        return on_step

    def lap(name: str, start: float) -> None:
        timings[name] = round(time.perf_counter() - start, 2)

    s = time.perf_counter()
    stage("data", "building the procedural data set")
    data = build_data(out / "data", cfg, on_image=counter("data"))
    lap("data", s)

    s = time.perf_counter()
    stage("teacher", f"training the teacher ({cfg.teacher_epochs} epochs on {cfg.n_train} private pairs)")
    tcfg = training.TrainConfig(epochs=cfg.teacher_epochs, batch_size=cfg.batch_size, augment=False, ndf=max(cfg.ngf, 8), seed=cfg.seed)
    training.train(data["train"], out / "teacher.pt", direction="BtoA", size=cfg.size, model=ModelSpec(ngf=cfg.ngf), config=tcfg,
                   on_step=steps("teacher", cfg.teacher_epochs))
    lap("teacher", s)

    s = time.perf_counter()
    stage("akd", f"distilling the AKD paper's student ({cfg.student_epochs} epochs on {cfg.n_proxy} proxy inputs)")
    # the student copies the teacher's U-Net; the paper's student (a tour of seconds, counted in epochs of
    # the proxy inputs), not defend --method akd's default, which trains 4 augmented copies of each
    options = DistillOptions.paper(epochs=cfg.student_epochs, batch_size=cfg.batch_size, augment=False, ndf=max(cfg.ngf, 8))
    defenses.defend("akd", out=out / "akd.pt", teacher=out / "teacher.pt", proxy=data["proxy"], options=options, direction="BtoA", size=cfg.size,
                    seed=cfg.seed, on_step=steps("akd", cfg.student_epochs))
    lap("akd", s)

    try:
        resolve_inception_weights(None)
        kid = True
    except WeightsError:
        kid = False
    ecfg = EvaluateConfig(attack=AttackConfig(seed=cfg.seed), kid=kid, kid_subsets=20)
    reports = {}
    s = time.perf_counter()
    for name in ("teacher", "akd"):
        stage(f"evaluate:{name}", f"attacking and evaluating {name}" + (" (then KID)" if kid else ""))
        # A tiny DemoConfig (tests) audits fewer pairs than a real audit accepts; the report says so.
        rep = evaluate(out / f"{name}.pt", data["train"], data["test"], ecfg, direction="BtoA", on_batch=counter(f"evaluate:{name}"),
                       allow_small=min(cfg.n_train, cfg.n_test) < MIN_PAIRS)
        write_json(out / f"{name}.json", rep)
        reports[name] = rep
    lap("evaluate", s)

    rows = [row(n, r) for n, r in reports.items()]
    atomic_write_text(out / "comparison.md", to_markdown(rows, title="privaudit demo: teacher versus AKD student"))
    save_figure(tradeoff_figure(rows), out / "tradeoff.png")
    summary = {
        "out": str(out),
        "kid": kid,
        "teacher_auc": reports["teacher"]["attack"]["auc"],
        "akd_auc": reports["akd"]["attack"]["auc"],
        "teacher_l1": reports["teacher"]["utility"]["l1"],
        "akd_l1": reports["akd"]["utility"]["l1"],
        "max_auc": cfg.max_auc,
        "timings_s": timings,
        "wall_s": round(time.perf_counter() - t0, 1),
        "rows": rows,
    }
    atomic_write_text(out / "summary.json", json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=2) + "\n")
    return summary
