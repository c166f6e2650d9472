"""Peak memory and images per second of the attack (or a training epoch) with the data in memory
against streamed from disk, on a large synthetic set, in one run.

    python benchmarks/streaming.py                          # 20 000 pairs at 256x256 (JPEG)
    python benchmarks/streaming.py --pairs 4000 --workers 1
    python benchmarks/streaming.py --workload train --pairs 2000 --size 128
    python benchmarks/streaming.py --workload hash --pairs 20000     # reading and hashing only

Writes ``--pairs`` aligned A|B pairs of ``--size`` px (smooth random colour blocks plus noise;
JPEG, or PNG with ``--format png``) to a temporary folder, then runs the workload twice, each time
in a fresh child process: ``Streaming(memory_budget_gb=1e9)`` (everything decoded into memory) and
``Streaming(force=True, workers=--workers)`` (DataLoader workers decode batch by batch).

Workloads:

* ``attack`` (default): ``privaudit.attack`` with a tiny random U-Net (``--ngf``, default 2), members = the first
  half of the pairs, non-members = the second half, ``--bootstrap 0``: reading the sets, the
  disjointness check (content hashes of every pair), the reconstruction losses of every pair, the
  metrics. Streamed, the sets are decoded twice (hashes, then losses).
* ``hash``: what ``attack`` does before it scores: reading both sets (``open_sets``) and the content
  hash of every pair (``pair_hashes``, the disjointness check), no model. Streamed: one decoding pass.
* ``train``: ``privaudit.training.train``, one epoch, U-Net and PatchGAN of width ``--ngf``, batch 16, no
  jitter. Streamed, the pairs are decoded three times (the content hash: inputs, then targets; the epoch).

Each child reports the seconds of the whole call and two peaks of resident memory: the main
process's exact peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``), and the peak of the
whole process tree (the main process and its decoding workers) as the sum of their proportional set
sizes (``Pss`` in ``/proc/PID/smaps_rollup``, pages shared between processes counted once in all),
sampled every 0.1 s. (``RUSAGE_CHILDREN`` would not do: a forked child's peak counts the pages it
shares with its parent, so any ``fork`` of a large process reports the parent's size.) "after
import" is the main process's peak before any data is read (Python, torch and privaudit). Images per
second are the images the workload went through (each pair once) over the seconds of the whole call
(wall clock), and over its CPU seconds (user + system, the main process and its workers: the fairer
figure on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def write_pairs(folder: Path, n: int, size: int, fmt: str, seed: int = 0) -> float:
    """``n`` aligned pairs (input | target) of ``size`` px; returns the bytes written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for i in range(n):
        cells = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        a = np.asarray(Image.fromarray(cells).resize((size, size), Image.BILINEAR)).astype(np.int16)
        a = a + rng.integers(-12, 13, a.shape, dtype=np.int16)
        b = 255 - a[:, ::-1] // 2
        pair = np.concatenate([a, b], axis=1).clip(0, 255).astype(np.uint8)
        path = folder / f"p{i:06d}.{'jpg' if fmt == 'jpeg' else 'png'}"
        Image.fromarray(pair).save(path, quality=90) if fmt == "jpeg" else Image.fromarray(pair).save(path)
        total += path.stat().st_size
    return total


def peak_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # KB on Linux


def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeMemory(threading.Thread):
    """The peak, sampled every ``interval`` s, of the summed PSS of this process and its descendants."""

    def __init__(self, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak_kb, self.halt = interval, 0, threading.Event()

    def sample(self) -> int:
        pids, todo = [], [os.getpid()]
        while todo:
            p = todo.pop()
            pids.append(p)
            todo += _children(p)
        return sum(_pss_kb(p) for p in pids)

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            self.peak_kb = max(self.peak_kb, self.sample())

    def stop(self) -> float:
        self.halt.set()
        self.join()
        return max(self.peak_kb, self.sample()) / 1024


def child(args: argparse.Namespace) -> None:
    """One measurement, in its own process: prints a JSON line."""
    import torch

    from privaudit.data.stream import Streaming

    torch.set_num_threads(args.threads)
    streaming = Streaming(force=True, workers=args.workers) if args.mode == "streamed" else Streaming(memory_budget_gb=1e9)
    data = Path(args.data)
    after_import = peak_mb(resource.RUSAGE_SELF)
    tree = TreeMemory()
    tree.start()
    cpu0 = sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) for f in ("ru_utime", "ru_stime"))
    t0 = time.perf_counter()
    if args.workload == "attack":
        import privaudit
        from privaudit.models.arch import UnetArch
        from privaudit.models.checkpoint import save_checkpoint
        from privaudit.models.networks import UnetGenerator, init_weights

        torch.manual_seed(0)
        arch = UnetArch(input_nc=3, output_nc=3, num_downs=int(np.log2(args.size)), ngf=args.ngf, norm="batch", use_dropout=False)
        g = UnetGenerator(arch)
        init_weights(g)
        model = Path(args.tmp) / "g.pt"
        save_checkpoint(model, generator=g, image_size=args.size, direction="AtoB")
        t0 = time.perf_counter()
        report, _ = privaudit.attack(model, data / "members", data / "nonmembers", privaudit.AttackConfig(n_bootstrap=0, batch_size=args.batch_size),
                                     device="cpu", streaming=streaming)
        images = report["data"]["members"]["count"] + report["data"]["nonmembers"]["count"]
        extra = {"auc": report["attack"]["auc"]}
    elif args.workload == "hash":
        from privaudit.data.checks import pair_hashes
        from privaudit.data.stream import open_sets

        sets = open_sets([(data / "members", "members"), (data / "nonmembers", "non-members")], size=args.size, streaming=streaming)
        digests = [pair_hashes(s) for s in sets]
        images = sum(len(d) for d in digests)
        extra = {"digest": __import__("hashlib").sha256(b"".join(h for d in digests for h in d)).hexdigest()}
    else:
        from privaudit.models.arch import ModelSpec
        from privaudit.training import TrainConfig, train

        res = train(data / "all", Path(args.tmp) / f"t-{args.mode}.pt", size=args.size, model=ModelSpec(ngf=args.ngf),
                    config=TrainConfig(epochs=1, batch_size=16, ndf=args.ngf, augment=False, device="cpu"), streaming=streaming)
        images = res.pairs
        extra = {"G_L1": res.history[-1].losses["G_L1"]}
    seconds = time.perf_counter() - t0
    cpu = sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) for f in ("ru_utime", "ru_stime")) - cpu0
    print(json.dumps({"mode": args.mode, "seconds": seconds, "cpu_seconds": cpu, "images": images, "after_import_mb": after_import,
                      "peak_main_mb": peak_mb(resource.RUSAGE_SELF), "peak_tree_mb": tree.stop(), **extra}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=20_000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--format", choices=("jpeg", "png"), default="jpeg")
    ap.add_argument("--workload", choices=("attack", "hash", "train"), default="attack")
    ap.add_argument("--workers", type=int, default=None, help="decoding workers when streamed (default: privaudit's, min(4, CPUs - 1))")
    ap.add_argument("--batch-size", type=int, default=32, help="the attack's batch")
    ap.add_argument("--ngf", type=int, default=2, help="width of the tiny U-Net (and PatchGAN)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads in each child")
    ap.add_argument("--mmap-threshold", type=int, help="run the children with glibc's MALLOC_MMAP_THRESHOLD_=BYTES (see docs/performance.md)")
    ap.add_argument("--data", help="reuse pairs written by an earlier run (a folder with members/, nonmembers/ and all/)")
    ap.add_argument("--child", choices=("memory", "streamed"), help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(argparse.Namespace(**vars(args), mode=args.child))
        return
    with tempfile.TemporaryDirectory(prefix="privaudit-streaming-") as tmp:
        data = Path(args.data) if args.data else Path(tmp) / "data"
        if not args.data:
            t0 = time.perf_counter()
            half = args.pairs // 2
            size_bytes = write_pairs(data / "members", half, args.size, args.format, seed=1)
            size_bytes += write_pairs(data / "nonmembers", args.pairs - half, args.size, args.format, seed=2)
            (data / "all").mkdir()
            for sub in ("members", "nonmembers"):
                for p in (data / sub).iterdir():
                    os.link(p, data / "all" / f"{sub[0]}{p.name}")
            print(f"wrote {args.pairs} {args.format.upper()} pairs of {args.size}x{args.size} ({size_bytes / 1e9:.2f} GB on disk) in {time.perf_counter() - t0:.0f}s",
                  flush=True)
        decoded = args.pairs * 2 * 3 * args.size * args.size
        rows = []
        for mode in ("memory", "streamed"):
            cmd = [sys.executable, __file__, "--child", mode, "--data", str(data), "--tmp", tmp, "--size", str(args.size), "--workload", args.workload,
                   "--batch-size", str(args.batch_size), "--threads", str(args.threads), "--ngf", str(args.ngf)]
            if args.workers is not None:
                cmd += ["--workers", str(args.workers)]
            env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args.threads), "PRIVAUDIT_NO_PROGRESS": "1"}
            if args.mmap_threshold is not None:
                env["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"failed ({mode}):\n{proc.stderr[-3000:]}")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["wall"] = time.perf_counter() - t0
            rows.append(row)
            print(f"{mode}: done in {row['wall']:.0f}s", flush=True)
    from privaudit.data.stream import resolve_workers  # noqa: E402  (the parent needs no torch until here)

    workers = resolve_workers(args.workers, args.pairs if args.workload == "train" else args.pairs // 2)
    print(f"\n{args.workload}: {args.pairs} pairs at {args.size}x{args.size} ({args.format}), decoded {decoded / 1e9:.2f} GB of uint8 inputs and targets; "
          f"U-Net ngf {args.ngf}; streamed with {workers} decoding worker(s); {args.threads} torch thread(s)"
          + (f"; MALLOC_MMAP_THRESHOLD_={args.mmap_threshold}" if args.mmap_threshold is not None else ""))
    print(f"{'':>9}  {'seconds':>8}  {'images/s':>8}  {'CPU s':>7}  {'images/CPU s':>12}  {'peak RSS main':>13}  {'peak PSS all':>12}  {'after import':>12}")
    for r in rows:
        print(f"{r['mode']:>9}  {r['seconds']:>8.1f}  {r['images'] / r['seconds']:>8.1f}  {r['cpu_seconds']:>7.1f}  {r['images'] / r['cpu_seconds']:>12.1f}  "
              f"{r['peak_main_mb']:>10.0f} MB  {r['peak_tree_mb']:>9.0f} MB  {r['after_import_mb']:>9.0f} MB")
    m, s = rows
    print(f"streamed / in memory: peak RSS (main) {s['peak_main_mb'] / m['peak_main_mb']:.2f}x, peak PSS (all processes) "
          f"{s['peak_tree_mb'] / m['peak_tree_mb']:.2f}x, images/s {m['seconds'] / s['seconds']:.2f}x; "
          f"results equal: {all(m[k] == s[k] for k in ('auc', 'G_L1', 'digest') if k in m)}")


if __name__ == "__main__":
    main()
