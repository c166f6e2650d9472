"""Attack time over bare generator inference on the same images, measured side by side.

    python benchmarks/attack_overhead.py                               # random U-Net and images
    python benchmarks/attack_overhead.py --model teacher.pt \
        --members facades/train --nonmembers facades/test --direction BtoA

"Bare inference" is the generator's forward pass over the same uint8 batches (converted to
[-1, 1]) under ``torch.inference_mode``; "attack" is ``reconstruction_losses`` on members and
non-members plus ``attack_metrics`` (ROC, bootstrap CI with 1000 resamples). Data loading is
excluded from both. Rounds alternate the two and the median of each is reported.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from privaudit.attacks.api import load_audit_sets
from privaudit.attacks.metrics import attack_metrics
from privaudit.attacks.reconstruction import AttackConfig, reconstruction_losses
from privaudit.data.images import ImageSet, to_float
from privaudit.models.arch import UnetArch
from privaudit.models.checkpoint import load_model
from privaudit.models.loaded import LoadedModel
from privaudit.models.networks import UnetGenerator


def bare(model: LoadedModel, sets: list[ImageSet], batch_size: int) -> None:
    with torch.inference_mode():
        for s in sets:
            for i in range(0, len(s), batch_size):
                model.module(to_float(s.inputs[i : i + batch_size]).to(model.device))


def attack(model: LoadedModel, m: ImageSet, n: ImageSet, cfg: AttackConfig) -> float:
    lm = reconstruction_losses(model, m, cfg)
    ln = reconstruction_losses(model, n, cfg)
    return attack_metrics(-lm, -ln, n_bootstrap=cfg.n_bootstrap, seed=cfg.seed).auc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--members")
    ap.add_argument("--nonmembers")
    ap.add_argument("--direction", default=None)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--ngf", type=int, default=32)
    ap.add_argument("--n-members", type=int, default=400)
    ap.add_argument("--n-nonmembers", type=int, default=106)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    if args.model:
        model = load_model(args.model)
        sets = load_audit_sets(model, args.members, args.nonmembers, direction=args.direction, size=args.size)
        m, n = sets.members, sets.nonmembers
    else:
        torch.manual_seed(0)
        net = UnetGenerator(UnetArch(num_downs=6, ngf=args.ngf)).eval()
        model = LoadedModel(module=net, path="random-unet", sha256="", format="privaudit", arch=net.arch.to_dict())
        g = torch.Generator().manual_seed(0)

        def rand(k: int) -> ImageSet:
            x = torch.randint(0, 256, (k, 3, args.size, args.size), dtype=torch.uint8, generator=g)
            y = torch.randint(0, 256, (k, 3, args.size, args.size), dtype=torch.uint8, generator=g)
            return ImageSet(x, y, [str(i) for i in range(k)], "random", "aligned")

        m, n = rand(args.n_members), rand(args.n_nonmembers)
    cfg = AttackConfig(batch_size=args.batch_size)
    bare(model, [m, n], args.batch_size)  # warm-up
    t_bare, t_attack = [], []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        bare(model, [m, n], args.batch_size)
        t_bare.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        auc = attack(model, m, n, cfg)
        t_attack.append(time.perf_counter() - t0)
    b, a = statistics.median(t_bare), statistics.median(t_attack)
    print(f"model {model.path}  images {len(m)}+{len(n)} at {m.size}px  batch {args.batch_size}  threads {torch.get_num_threads()}  device {model.device}")
    print(f"bare inference  median {b:.3f}s  ({1000 * b / (len(m) + len(n)):.2f} ms/image)")
    print(f"attack          median {a:.3f}s  (AUC {auc:.4f})")
    print(f"ratio attack / bare inference: {a / b:.3f}x")


if __name__ == "__main__":
    main()
