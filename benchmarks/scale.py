"""Data-parallel training: images per second for one process against N processes under torchrun.

    python benchmarks/scale.py                      # 1 vs 2 processes, gloo on the CPU (about a minute on 2 cores)
    python benchmarks/scale.py --nproc 4 --device cuda --size 256 --pairs 400 --batch-size 16

Writes ``--pairs`` procedural pairs, then runs ``privaudit train`` with the same global
``--batch-size`` once as one process and once under ``python -m torch.distributed.run
--standalone --nproc_per_node N`` (gloo on the CPU, NCCL on CUDA), each in a fresh subprocess,
and prints the training seconds the command reports (process-group start included, torch import
excluded), images per second (pairs × epochs / seconds) and the wall time of the whole command.
On the CPU each process gets ``--threads`` intra-op threads (default 1), so N processes use N cores.
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
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_pairs(data, args.pairs, args.size)
        common = ["train", str(data), "--direction", "AtoB", "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--ngf", str(args.ngf),
                  "--ndf", str(args.ngf), "--norm", "instance", "--no-augment", "--device", args.device]
        rows = []
        for n in (1, args.nproc):
            out = Path(tmp) / f"g{n}.pt"
            launcher = [sys.executable, "-m", "privaudit"] if n == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n), "-m", "privaudit"]
            secs, wall = run([*launcher, *common, "--out", str(out)], args.threads)
            rows.append((n, secs, args.pairs * args.epochs / secs, wall))
    print(f"{args.pairs} pairs at {args.size}px, ngf {args.ngf}, {args.epochs} epochs, global batch {args.batch_size}, device {args.device}, {args.threads} thread(s) per process")
    print(f"{'processes':>9}  {'train s':>8}  {'images/s':>8}  {'speed-up':>8}  {'wall s':>7}")
    for n, secs, ips, wall in rows:
        print(f"{n:>9}  {secs:>8.1f}  {ips:>8.1f}  {ips / rows[0][2]:>8.2f}  {wall:>7.1f}")


if __name__ == "__main__":
    main()
