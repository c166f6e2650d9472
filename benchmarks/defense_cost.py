"""Per-epoch cost of the defenses, measured side by side in one run on the same data:

* AKD over regular pix2pix training (same generator, discriminator, batch size and images);
* DP-SGD (Opacus, per-sample gradients for G and D) over the same non-private training
  (same GroupNorm generator, batch size and images).

    python benchmarks/defense_cost.py                          # random 64x64 pairs
    python benchmarks/defense_cost.py --data facades/train --direction BtoA --n 64

Each variant trains ``--epochs`` epochs (the first is a warm-up and not timed); the median epoch
time is reported. AKD's time includes querying the teacher once for the proxy set.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from privaudit.data.images import ImageSet, load_pairs, to_float
from privaudit.defenses.distill import distill
from privaudit.models.arch import UnetArch
from privaudit.models.loaded import LoadedModel
from privaudit.models.networks import UnetGenerator, init_weights
from privaudit.training import TrainConfig, fit


def epoch_times(run, epochs: int) -> float:
    stamps: list[float] = []

    def on_step(epoch: int, step: int, spe: int, losses: dict) -> None:
        if step == spe - 1:
            stamps.append(time.perf_counter())

    t0 = time.perf_counter()
    run(on_step)
    stamps.insert(0, t0)
    per = [b - a for a, b in zip(stamps, stamps[1:])]
    return statistics.median(per[1:] if len(per) > 1 else per)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data")
    ap.add_argument("--direction", default="AtoB")
    ap.add_argument("--n", type=int, default=64, help="pairs (and proxy inputs) per epoch")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--ngf", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=1, help="regular vs AKD")
    ap.add_argument("--dp-batch-size", type=int, default=8, help="DP-SGD vs non-private")
    args = ap.parse_args()

    if args.data:
        pairs = load_pairs(args.data, direction=args.direction, size=args.size).subset(list(range(args.n)))
    else:
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (args.n, 3, args.size, args.size), dtype=torch.uint8, generator=g)
        pairs = ImageSet(x, x.flip(-1).clone(), [str(i) for i in range(args.n)], "random", "aligned")
    tmp = Path(tempfile.mkdtemp())
    depth = 6 if args.size >= 64 else 5
    arch = UnetArch(num_downs=depth, ngf=args.ngf, norm="batch")
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, augment=False, device="auto")
    noop = lambda path, net, epoch: None  # noqa: E731  (checkpoint writes are not what is measured)

    def regular(on_step):
        torch.manual_seed(0)
        G = UnetGenerator(arch)
        init_weights(G)
        fit(G, pairs.inputs, to_float(pairs.targets), cfg, out=tmp / "reg.pt", save_model=noop, on_step=on_step)

    torch.manual_seed(1)
    teacher_net = UnetGenerator(arch).eval()
    teacher = LoadedModel(module=teacher_net, path="teacher", sha256="0" * 64, format="privaudit", arch=arch.to_dict())
    proxy = ImageSet(pairs.inputs, None, pairs.names, "proxy", "inputs")

    def akd(on_step):
        import privaudit.defenses.distill as d

        orig = d.save_checkpoint
        d.save_checkpoint = lambda *a, **k: None
        try:
            distill(teacher, proxy, tmp / "akd.pt", method="akd", arch=arch, cfg=cfg, direction="AtoB", on_step=on_step)
        finally:
            d.save_checkpoint = orig

    t_reg = epoch_times(regular, args.epochs)
    t_akd = epoch_times(akd, args.epochs)
    print(f"{args.n} pairs at {args.size}px, ngf {args.ngf}, threads {torch.get_num_threads()}, device {'cuda' if torch.cuda.is_available() else 'cpu'}")
    print(f"regular pix2pix epoch  {t_reg:.2f}s  (batch {args.batch_size})")
    print(f"AKD epoch              {t_akd:.2f}s")
    print(f"ratio AKD / regular: {t_akd / t_reg:.3f}x")

    try:
        from privaudit.defenses.dpsgd import DPConfig, train_dpsgd
    except ImportError as exc:
        print(f"DP-SGD: not measured ({exc})")
        return
    garch = UnetArch(num_downs=depth, ngf=args.ngf, norm="group")
    dcfg = TrainConfig(epochs=args.epochs, batch_size=args.dp_batch_size, augment=False, device="auto")

    def nonprivate(on_step):
        torch.manual_seed(0)
        G = UnetGenerator(garch)
        init_weights(G)
        fit(G, pairs.inputs, to_float(pairs.targets), dcfg, out=tmp / "np.pt", save_model=noop, on_step=on_step)

    def dpsgd(on_step):
        train_dpsgd(pairs, tmp / "dp.pt", direction="AtoB", arch=garch, cfg=DPConfig(train=dcfg, noise_multiplier=1.0, max_grad_norm=1.0), on_step=on_step)

    t_np = epoch_times(nonprivate, args.epochs)
    t_dp = epoch_times(dpsgd, args.epochs)
    print(f"non-private epoch      {t_np:.2f}s  (GroupNorm, batch {args.dp_batch_size})")
    print(f"DP-SGD epoch           {t_dp:.2f}s  (Opacus, G and D private)")
    print(f"ratio DP-SGD / non-private: {t_dp / t_np:.3f}x")


if __name__ == "__main__":
    main()
