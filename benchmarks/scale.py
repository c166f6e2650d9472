"""Data-parallel training: images per second for one process against N processes under torchrun,
and in memory against streamed from disk (``--stream``), in one run.

    python benchmarks/scale.py                      # 1 vs 2 processes, gloo on the CPU (about a minute on 2 cores)
    python benchmarks/scale.py --nproc 4 --device cuda --size 256 --pairs 400 --batch-size 16

Writes ``--pairs`` procedural pairs, then runs ``privaudit train`` with the same global
``--batch-size`` once as one process and once under ``python -m torch.distributed.run
--standalone --nproc_per_node N`` (gloo on the CPU, NCCL on CUDA), each in a fresh subprocess,
and prints the training seconds the command reports (process-group start included, torch import
excluded), images per second (pairs × epochs / seconds) and the wall time of the whole command.
On the CPU each process gets ``--threads`` intra-op threads (default 1), so N processes use N cores.

The GPU path (docs/performance.md), on a CUDA GPU only; elsewhere they say they are skipped:

    python benchmarks/scale.py --gpu-precision      # fp32 against bf16 + channels_last, 256 px, ngf 64
    python benchmarks/scale.py --paper-akd          # the paper-scale AKD run: 256 px, 200 epochs, 100 proxy images
    python benchmarks/scale.py --paper-akd --akd-epochs 10   # shortened; prints the projection to 200 epochs

``--gpu-precision`` trains a pix2pix model (``privaudit.training.train``, batch ``--gpu-batch-size``,
default 1 as in the paper) on ``--gpu-pairs`` procedural pairs at ``--gpu-size`` px with ngf/ndf
``--gpu-ngf``, once with ``--precision fp32`` and once with bf16 (channels_last comes with it), and
prints the training images per second of the epochs after the first (the first carries cuDNN's
autotuning and the allocator's warm-up) and the inference images per second of the reconstruction
loss pass (``iter_outputs``, batch 32) side by side. ``--paper-akd`` trains a teacher for
``--teacher-epochs`` (not part of the figure), then times ``privaudit.defend("akd")`` with
``--proxy`` proxy inputs, batch 1, ``--akd-epochs`` epochs, in ``--akd-precision``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def write_pairs(root: Path, n: int, size: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        b = (255 - a) // 2 + rng.integers(0, 64, (size, size, 3), dtype=np.uint8)
        Image.fromarray(np.concatenate([a, b], axis=1)).save(root / f"p{i:05d}.png")


def run(cmd: list[str], threads: int) -> tuple[float, float]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PRIVAUDIT_NO_PROGRESS": "1", "PYTHONPATH": str(ROOT)}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(k, None)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    m = re.search(r"for \d+ epochs in ([0-9.]+)s", proc.stderr)
    if not m:
        sys.exit(f"no training time in the output of {' '.join(cmd)}:\n{proc.stderr[-2000:]}")
    return float(m.group(1)), wall


# ---------------------------------------------------------------------------------------------
# the GPU path: fp32 against bf16 + channels_last, and the paper-scale AKD run


def gpu_available(device: str) -> str | None:
    """None when ``device`` is a usable CUDA device, else why the GPU modes are skipped."""
    import torch

    if not device.startswith("cuda"):
        return f"--gpu-device {device} is no CUDA device"
    if not torch.cuda.is_available():
        return "no CUDA GPU here (torch.cuda.is_available() is False)"
    return None


def _epoch_clock(times: list[float]):
    """An ``on_step`` that records the time at the end of every epoch (after the GPU finished it)."""
    import torch

    def on_step(epoch: int, step: int, steps: int, losses: dict[str, float]) -> None:
        if step == steps - 1:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter())

    return on_step


def _steady_rate(start: float, ends: list[float], images_per_epoch: int) -> tuple[float, float]:
    """(images/s over the epochs after the first, or over the only one; seconds of the first epoch)."""
    first = ends[0] - start
    if len(ends) < 2:
        return images_per_epoch / first, first
    return images_per_epoch * (len(ends) - 1) / (ends[-1] - ends[0]), first


def bench_precision(args: argparse.Namespace, tmp: Path) -> None:
    import torch

    from privaudit.errors import InputError
    from privaudit.models.arch import ModelSpec
    from privaudit.models.checkpoint import load_model
    from privaudit.models.inference import iter_outputs
    from privaudit.training import TrainConfig, train
    from privaudit.data.images import load_pairs

    data = tmp / "gpu-pairs"
    write_pairs(data, args.gpu_pairs, args.gpu_size)
    pairs = load_pairs(data, direction="AtoB")
    rows = []
    for precision in ("fp32", "bf16"):
        cfg = TrainConfig(epochs=args.gpu_epochs, batch_size=args.gpu_batch_size, ndf=args.gpu_ngf, augment=True, device=args.gpu_device, precision=precision)
        ends: list[float] = []
        out = tmp / f"{precision}.pt"
        try:
            t0 = time.perf_counter()
            train(pairs, out, direction="AtoB", model=ModelSpec(ngf=args.gpu_ngf, norm="batch"), config=cfg, on_step=_epoch_clock(ends))
        except InputError as exc:
            rows.append((precision, None, None, None, str(exc)))
            continue
        train_ips, first = _steady_rate(t0, ends, len(pairs))
        model = load_model(out, device=args.gpu_device, precision=precision)
        with torch.inference_mode():
            for _ in iter_outputs(model, pairs.inputs[:32], batch_size=32):  # warm-up: autotuning, allocator
                pass
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t1 = time.perf_counter()
            for _ in range(args.gpu_rounds):
                for _ in iter_outputs(model, pairs.inputs, batch_size=32):
                    pass
            if torch.cuda.is_available():
                torch.cuda.synchronize()
        infer_ips = args.gpu_rounds * len(pairs) / (time.perf_counter() - t1)
        label = "bf16 + channels_last" if model.runtime.channels_last else model.runtime.precision
        rows.append((label, train_ips, infer_ips, first, model.runtime.note))
    name = torch.cuda.get_device_name(torch.device(args.gpu_device)) if torch.cuda.is_available() else args.gpu_device
    print(f"{name}: {len(pairs)} pairs at {args.gpu_size}px, ngf/ndf {args.gpu_ngf}, batch {args.gpu_batch_size}, {args.gpu_epochs} epochs "
          f"(training img/s over epochs 2-{args.gpu_epochs}); inference: {args.gpu_rounds} passes, batch 32")
    print(f"{'precision':<22}  {'train img/s':>11}  {'infer img/s':>11}  {'setup+1st s':>11}")
    for label, tr, inf, first, note in rows:
        if tr is None:
            print(f"{label:<22}  {'n/a':>11}  {'n/a':>11}  {'':>11}  {note}")
        else:
            print(f"{label:<22}  {tr:>11.1f}  {inf:>11.1f}  {first:>11.2f}" + (f"  ({note})" if note else ""))
    done = [r for r in rows if r[1] is not None]
    if len(done) == 2:
        print(f"{'speed-up':<22}  {done[1][1] / done[0][1]:>10.2f}x  {done[1][2] / done[0][2]:>10.2f}x")


def bench_paper_akd(args: argparse.Namespace, tmp: Path) -> None:
    import torch

    from privaudit.defenses import defend
    from privaudit.defenses.distill import DistillOptions
    from privaudit.models.arch import ModelSpec
    from privaudit.training import TrainConfig, train

    teacher_data, proxy = tmp / "teacher-pairs", tmp / "proxy"
    write_pairs(teacher_data, args.proxy, args.gpu_size, seed=1)
    write_pairs(proxy, args.proxy, args.gpu_size, seed=2)
    teacher = tmp / "teacher.pt"
    t0 = time.perf_counter()
    train(teacher_data, teacher, direction="AtoB", model=ModelSpec(ngf=args.gpu_ngf, norm="batch"),
          config=TrainConfig(epochs=args.teacher_epochs, ndf=args.gpu_ngf, device=args.gpu_device, precision=args.akd_precision))
    teacher_s = time.perf_counter() - t0
    ends: list[float] = []
    t0 = time.perf_counter()
    res = defend("akd", out=tmp / "akd.pt", teacher=teacher, proxy=proxy, options=DistillOptions(epochs=args.akd_epochs, batch_size=1, ndf=args.gpu_ngf),
                 device=args.gpu_device, precision=args.akd_precision, on_step=_epoch_clock(ends))
    wall = time.perf_counter() - t0
    ckpt = torch.load(tmp / "akd.pt", weights_only=True)
    runtime = ckpt["provenance"]["runtime"]
    rate, first = _steady_rate(t0, ends, args.proxy)
    name = torch.cuda.get_device_name(torch.device(args.gpu_device)) if torch.cuda.is_available() else args.gpu_device
    print(f"{name}: AKD, {args.proxy} proxy images at {args.gpu_size}px, ngf/ndf {args.gpu_ngf}, batch 1, {args.akd_epochs} epochs, "
          f"precision {runtime['precision']} (asked {runtime['requested_precision']}), channels_last {runtime['channels_last']}")
    print(f"teacher ({args.teacher_epochs} epoch(s), not counted): {teacher_s:.1f}s")
    print(f"AKD wall time: {wall:.1f}s (defend reports {res.seconds:.1f}s; setup and first epoch {first:.2f}s, then {rate:.1f} img/s, "
          f"{args.proxy / rate:.2f}s per epoch)")
    if args.akd_epochs < 200:
        projected = (wall - (ends[-1] - ends[0])) + (200 - 1) * args.proxy / rate if len(ends) > 1 else wall * 200 / args.akd_epochs
        print(f"projected to the paper's 200 epochs: {projected:.0f}s ({projected / 60:.1f} min), from the measured per-epoch time")


def gpu_modes(args: argparse.Namespace) -> None:
    why = gpu_available(args.gpu_device) if not args.allow_cpu else None
    modes = [m for m, on in (("--gpu-precision", args.gpu_precision), ("--paper-akd", args.paper_akd)) if on]
    if why:
        print(f"skipped {' and '.join(modes)}: {why}; the GPU path only runs on a CUDA GPU")
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.gpu_precision:
            bench_precision(args, Path(tmp))
        if args.paper_akd:
            bench_paper_akd(args, Path(tmp))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8, help="the global batch")
    ap.add_argument("--ngf", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads per process")
    ap.add_argument("--workers", type=int, default=1, help="decoding worker processes of the streamed run")
    gpu = ap.add_argument_group("the GPU path (CUDA only; skipped elsewhere)")
    gpu.add_argument("--gpu-precision", action="store_true", help="fp32 against bf16 + channels_last: training and inference images/s")
    gpu.add_argument("--paper-akd", action="store_true", help="wall time of the paper-scale AKD run (shorten with --akd-epochs, --proxy)")
    gpu.add_argument("--gpu-device", default="cuda")
    gpu.add_argument("--gpu-size", type=int, default=256)
    gpu.add_argument("--gpu-ngf", type=int, default=64, help="generator and discriminator width")
    gpu.add_argument("--gpu-pairs", type=int, default=100)
    gpu.add_argument("--gpu-epochs", type=int, default=3, help="--gpu-precision: epochs (the first is not timed)")
    gpu.add_argument("--gpu-batch-size", type=int, default=1)
    gpu.add_argument("--gpu-rounds", type=int, default=3, help="--gpu-precision: inference passes over the pairs")
    gpu.add_argument("--akd-epochs", type=int, default=200)
    gpu.add_argument("--proxy", type=int, default=100, help="--paper-akd: proxy images (and the teacher's pairs)")
    gpu.add_argument("--teacher-epochs", type=int, default=1, help="--paper-akd: the teacher's epochs (not timed)")
    gpu.add_argument("--akd-precision", default="auto", choices=("auto", "fp32", "bf16"))
    gpu.add_argument("--allow-cpu", action="store_true", help=argparse.SUPPRESS)  # runs the GPU modes' code on --gpu-device cpu (a check of this script)
    args = ap.parse_args()
    if args.gpu_precision or args.paper_akd:
        sys.path.insert(0, str(ROOT))
        gpu_modes(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_pairs(data, args.pairs, args.size)
        common = ["train", str(data), "--direction", "AtoB", "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--ngf", str(args.ngf),
                  "--ndf", str(args.ngf), "--norm", "instance", "--no-augment", "--device", args.device]
        rows = []
        one = [sys.executable, "-m", "privaudit"]
        runs = [(1, "in memory", one, []),
                (args.nproc, "in memory", [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.nproc), "-m", "privaudit"], []),
                (1, f"streamed, {args.workers} worker(s)", one, ["--stream", "--workers", str(args.workers)])]
        for k, (n, how, launcher, extra) in enumerate(runs):
            out = Path(tmp) / f"g{k}.pt"
            secs, wall = run([*launcher, *common, *extra, "--out", str(out)], args.threads)
            rows.append((n, how, secs, args.pairs * args.epochs / secs, wall))
    print(f"{args.pairs} pairs at {args.size}px, ngf {args.ngf}, {args.epochs} epochs, global batch {args.batch_size}, device {args.device}, {args.threads} thread(s) per process")
    print(f"{'processes':>9}  {'data':<22}  {'train s':>8}  {'images/s':>8}  {'ratio':>6}  {'wall s':>7}")
    for n, how, secs, ips, wall in rows:
        print(f"{n:>9}  {how:<22}  {secs:>8.1f}  {ips:>8.1f}  {ips / rows[0][3]:>6.2f}  {wall:>7.1f}")
    print("ratio: images/s over the one-process in-memory run; peak memory in and out of memory: benchmarks/streaming.py")


if __name__ == "__main__":
    main()
