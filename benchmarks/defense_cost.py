"""Per-epoch cost of the defenses, measured side by side in one run on the same data:

* AKD over regular pix2pix training (same generator, discriminator, batch size and images);
* DP-SGD (Opacus, per-sample gradients for G and D) over the same non-private training
  (same GroupNorm generator, batch size and images).

    python benchmarks/defense_cost.py                          # random 64x64 pairs
    python benchmarks/defense_cost.py --data facades/train --direction BtoA --n 64

Each variant trains ``--epochs`` epochs (the first is a warm-up and not timed) through the library's
public entries, ``privaudit.training.train`` and ``privaudit.defenses.defend``, exactly as the
commands do (checkpoint and resume state written after every epoch, for every variant alike); the
median epoch time is reported. AKD's first epoch includes querying the teacher once for the proxy set.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from privaudit.data.images import load_pairs
from privaudit.defenses import defend
from privaudit.defenses.distill import DistillOptions
from privaudit.defenses.dpsgd import DPSGDOptions
from privaudit.demo import write_aligned
from privaudit.models.checkpoint import save_checkpoint
from privaudit.models.arch import ModelSpec, UnetArch
from privaudit.models.networks import UnetGenerator
from privaudit.training import TrainConfig, train


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

    tmp = Path(tempfile.mkdtemp())
    # the pairs every variant reads, aligned input|target: the first --n of --data, or random ones
    if args.data:
        pairs = load_pairs(args.data, direction=args.direction, size=args.size).subset(list(range(args.n)))
        x, y = pairs.inputs, pairs.targets
    else:
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (args.n, 3, args.size, args.size), dtype=torch.uint8, generator=g)
        y = x.flip(-1).clone()
    data = tmp / "pairs"
    write_aligned(data, x, y, "p")
    depth = 6 if args.size >= 64 else 5
    arch = UnetArch(num_downs=depth, ngf=args.ngf, norm="batch")
    torch.manual_seed(1)
    save_checkpoint(tmp / "teacher.pt", generator=UnetGenerator(arch).eval(), image_size=args.size, direction="AtoB")
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, augment=False)

    def regular(on_step):
        train(data, tmp / "reg.pt", size=args.size, model=ModelSpec(num_downs=depth, ngf=args.ngf), config=cfg, on_step=on_step)

    def akd(on_step):  # the student copies the teacher's U-Net
        options = DistillOptions(epochs=args.epochs, batch_size=args.batch_size, augment=False)
        defend("akd", out=tmp / "akd.pt", teacher=tmp / "teacher.pt", proxy=data, options=options, size=args.size, on_step=on_step)

    t_reg = epoch_times(regular, args.epochs)
    t_akd = epoch_times(akd, args.epochs)
    print(f"{args.n} pairs at {args.size}px, ngf {args.ngf}, threads {torch.get_num_threads()}, device {'cuda' if torch.cuda.is_available() else 'cpu'}")
    print(f"regular pix2pix epoch  {t_reg:.2f}s  (batch {args.batch_size})")
    print(f"AKD epoch              {t_akd:.2f}s")
    print(f"ratio AKD / regular: {t_akd / t_reg:.3f}x")

    try:
        import opacus  # noqa: F401
    except ImportError as exc:
        print(f"DP-SGD: not measured ({exc})")
        return
    dcfg = TrainConfig(epochs=args.epochs, batch_size=args.dp_batch_size, augment=False)

    def nonprivate(on_step):
        train(data, tmp / "np.pt", size=args.size, model=ModelSpec(num_downs=depth, ngf=args.ngf, norm="group"), config=dcfg, on_step=on_step)

    def dpsgd(on_step):
        options = DPSGDOptions(epochs=args.epochs, batch_size=args.dp_batch_size, augment=False, ngf=args.ngf, num_downs=depth, noise_multiplier=1.0,
                               max_grad_norm=1.0)
        defend("dpsgd", out=tmp / "dp.pt", train_data=data, options=options, size=args.size, on_step=on_step)

    t_np = epoch_times(nonprivate, args.epochs)
    t_dp = epoch_times(dpsgd, args.epochs)
    print(f"non-private epoch      {t_np:.2f}s  (GroupNorm, batch {args.dp_batch_size})")
    print(f"DP-SGD epoch           {t_dp:.2f}s  (Opacus, G and D private)")
    print(f"ratio DP-SGD / non-private: {t_dp / t_np:.3f}x")


if __name__ == "__main__":
    main()
