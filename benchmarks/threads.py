"""Intra-op threads on a shared CPU: training and attack time, idle and beside a busy process.

    python benchmarks/threads.py                    # the whole table (about 3-5 minutes on 2 cores)
    python benchmarks/threads.py --epochs 4 --modes default,auto

Each configuration runs in a fresh subprocess, because OpenMP reads its settings when torch loads:

* ``default``: torch's own choice (one thread per physical core), no environment variable set;
* ``omp1``:    ``OMP_NUM_THREADS=1``;
* ``passive``: torch's default thread count with ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep at barriers);
* ``free``:    ``privaudit.threads.configure_threads(None)`` alone: as many threads as cores were free
               at the start (the cores this process may use minus the busy ones), never more than torch's;
* ``auto``:    what the ``privaudit`` command does: ``free`` plus ``OMP_WAIT_POLICY=PASSIVE`` set before
               torch loads (``privaudit.threads.prepare_openmp``, run by importing ``privaudit.cli.app``).

Conditions: ``idle``; ``busy``, beside a competitor that starts ``--warmup`` seconds before each run;
``late``, a competitor that starts once the run has chosen its threads (a job that arrives mid-run).
``--competitor python`` (default) is one process spinning in a pure-Python loop, ``--competitor torch``
one single-threaded torch job doing matrix products. The workload: ``train_regular`` (pix2pix, GAN + L1) on procedural facades, then the
reconstruction-loss attack (``run_attack``, repeated ``--rounds`` times) on members versus non-members. The table gives seconds, each mode's ratio to ``omp1`` in the same condition, and the
busy/idle ratio; the 1-minute load average seen at each start is printed beside it (other jobs on
the machine count, so an "idle" run is only as idle as the machine was).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODES = ("default", "omp1", "passive", "free", "auto")
CONDITIONS = ("idle", "busy", "late")
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "PRIVAUDIT_THREADS")


def _load1() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


# ----------------------------------------------------------------------------- the measured child


def child(args: argparse.Namespace) -> None:
    """One configuration: thread setup (before torch), training, attack; prints one JSON line."""
    load_at_start = _load1()
    chosen = None
    if args.mode == "auto":
        import privaudit.cli.app  # noqa: F401  (exactly as the command line: its import prepares OpenMP, then loads torch)
    import torch

    if args.mode in ("auto", "free"):
        from privaudit.threads import configure_threads

        chosen = configure_threads(None)

    print("READY", flush=True)  # the parent starts a "late" competitor now

    from privaudit.attacks.reconstruction import AttackConfig, run_attack
    from privaudit.data.images import load_pairs
    from privaudit.models.checkpoint import load_model
    from privaudit.models.arch import ModelSpec
    from privaudit.training import TrainConfig, train

    data, work = Path(args.data), Path(args.work)
    spec = ModelSpec(ngf=args.ngf, norm="batch", use_dropout=True)
    cfg = TrainConfig(epochs=args.epochs, batch_size=4, augment=False, ndf=args.ngf, seed=0, device="cpu")
    t0 = time.perf_counter()
    train(data / "train", work / "teacher.pt", direction="BtoA", size=args.size, model=spec, config=cfg)
    train_s = time.perf_counter() - t0

    model = load_model(work / "teacher.pt", device="cpu", seed=0)
    m = load_pairs(data / "train", direction="BtoA", size=args.size, what="members")
    n = load_pairs(data / "test", direction="BtoA", size=args.size, what="non-members")
    acfg = AttackConfig(batch_size=8, seed=0, n_bootstrap=200)
    t0 = time.perf_counter()
    for _ in range(args.rounds):
        auc = run_attack(model, m, n, acfg).metrics.auc
    attack_s = time.perf_counter() - t0
    print(json.dumps({
        "mode": args.mode, "threads": torch.get_num_threads(), "train_s": train_s, "attack_s": attack_s,
        "auc": auc, "load1": load_at_start, "choice": None if chosen is None else chosen.describe(),
    }))


# ----------------------------------------------------------------------------- the parent


def competitor(kind: str) -> subprocess.Popen:
    if kind == "python":
        code = "while True: pass"
    else:
        code = ("import torch; torch.set_num_threads(1); a = torch.randn(256, 256)\n"
                "while True: a = (a @ a).tanh()")
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_mode(mode: str, cond: str, args: argparse.Namespace, data: Path, work: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if mode == "omp1":
        env["OMP_NUM_THREADS"] = "1"
    elif mode == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--mode", mode, "--data", str(data), "--work", str(work),
           "--epochs", str(args.epochs), "--size", str(args.size), "--ngf", str(args.ngf), "--rounds", str(args.rounds)]
    comp = None
    if cond == "busy":
        comp = competitor(args.competitor)
        time.sleep(args.warmup)
    try:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.strip() == "READY" and cond == "late":
                comp = competitor(args.competitor)
        err = proc.stderr.read() if proc.stderr else ""
        if proc.wait() != 0:
            raise SystemExit(f"{mode} ({cond}) failed:\n{err}")
    finally:
        if comp is not None:
            comp.kill()
            comp.wait()
    return json.loads(lines[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, from {', '.join(MODES)}")
    p.add_argument("--conditions", default=",".join(CONDITIONS), help=f"comma-separated, from {', '.join(CONDITIONS)}")
    p.add_argument("--competitor", choices=("python", "torch"), default="python")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds the competitor runs before each busy run")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--ngf", type=int, default=16)
    p.add_argument("--rounds", type=int, default=6, help="times the attack is repeated (it takes well under a second once)")
    p.add_argument("--pairs", type=int, default=16, help="training pairs (members) and test pairs (non-members) each")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    # the child's arguments
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return

    modes = [m for m in args.modes.split(",") if m]
    conditions = [c for c in args.conditions.split(",") if c]
    bad = [m for m in modes if m not in MODES] + [c for c in conditions if c not in CONDITIONS]
    if bad:
        raise SystemExit(f"unknown mode or condition: {', '.join(bad)}")
    sys.path.insert(0, str(ROOT))
    from privaudit.demo import DemoConfig, build_data

    print(f"cores usable: {len(os.sched_getaffinity(0))} (os.cpu_count {os.cpu_count()}); python {sys.version.split()[0]}", flush=True)
    results: dict[str, dict[str, dict]] = {c: {} for c in conditions}
    with tempfile.TemporaryDirectory(prefix="privaudit-threads-") as tmp:
        data = Path(tmp) / "data"
        build_data(data, DemoConfig(size=args.size, n_train=args.pairs, n_proxy=1, n_test=args.pairs))
        t_all = time.perf_counter()
        for cond in conditions:
            for mode in modes:
                work = Path(tmp) / f"{cond}-{mode}"
                work.mkdir()
                r = run_mode(mode, cond, args, data, work)
                results[cond][mode] = r
                print(f"{cond:4s} {mode:8s} threads {r['threads']}  train {r['train_s']:6.1f}s  attack {r['attack_s']:6.1f}s  "
                      f"load1 {r['load1']:.2f}" + (f"  [{r['choice']}]" if r["choice"] else ""), flush=True)
        total = time.perf_counter() - t_all

    print(f"\nprivaudit threads benchmark: {args.pairs} pairs at {args.size}px, ngf {args.ngf}, {args.epochs} epochs; "
          f"attack x{args.rounds}; competitor: {args.competitor}; total {total:.0f}s\n")
    head = f"{'condition':9s} {'mode':8s} {'threads':>7s} {'train s':>8s} {'attack s':>8s} {'total s':>8s} {'vs omp1':>8s} {'vs idle':>9s} {'load1':>6s}"
    print(head)
    print("-" * len(head))
    for cond in conditions:
        base = results[cond].get("omp1")
        for mode in modes:
            r = results[cond][mode]
            tot = r["train_s"] + r["attack_s"]
            vs = f"{tot / (base['train_s'] + base['attack_s']):.2f}x" if base else "-"
            idle = results.get("idle", {}).get(mode)
            bi = f"{tot / (idle['train_s'] + idle['attack_s']):.2f}x" if cond != "idle" and idle else "-"
            print(f"{cond:9s} {mode:8s} {r['threads']:7d} {r['train_s']:8.1f} {r['attack_s']:8.1f} {tot:8.1f} {vs:>8s} {bi:>9s} {r['load1']:6.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
