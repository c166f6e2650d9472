"""Options shared by several commands, and the choices of every option that takes one of a few
words, declared once.

A choice option is a ``StrEnum``, so ``--help`` lists its values and Click refuses any other in one
line (exit 2). The commands receive plain strings (``guarded`` converts them), so no Enum reaches the
library or a checkpoint. Defaults come from ``privaudit.defaults``.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Optional

import typer


class DirectionChoice(StrEnum):
    AtoB = "AtoB"
    BtoA = "BtoA"


class NormChoice(StrEnum):
    batch = "batch"
    instance = "instance"
    none = "none"


class LossChoice(StrEnum):
    l1 = "l1"
    l2 = "l2"


class MethodChoice(StrEnum):
    akd = "akd"
    dmp = "dmp"
    gauss = "gauss"
    dpsgd = "dpsgd"
    argmax = "argmax"


class TaskChoice(StrEnum):
    translation = "translation"
    segmentation = "segmentation"


class ArchChoice(StrEnum):
    """``models.segnets.SEG_ARCHS`` (written out here: the CLI imports no torch at start-up)."""

    unet = "unet"
    fcn_resnet50 = "fcn_resnet50"
    fcn_resnet101 = "fcn_resnet101"
    deeplabv3_resnet50 = "deeplabv3_resnet50"
    deeplabv3_resnet101 = "deeplabv3_resnet101"
    deeplabv3_mobilenet_v3_large = "deeplabv3_mobilenet_v3_large"
    lraspp_mobilenet_v3_large = "lraspp_mobilenet_v3_large"


class NormalizeChoice(StrEnum):
    imagenet = "imagenet"
    symmetric = "symmetric"
    unit = "unit"


class LabelScoreChoice(StrEnum):
    accuracy = "accuracy"
    iou = "iou"


class PrecisionChoice(StrEnum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


class LayoutChoice(StrEnum):
    auto = "auto"
    aligned = "aligned"
    folders = "folders"
    inputs = "inputs"


class InputKindChoice(StrEnum):
    auto = "auto"
    labels = "labels"
    photos = "photos"


class RecombineChoice(StrEnum):
    none = "none"
    auto = "auto"
    cutpaste = "cutpaste"
    mixup = "mixup"
    cutmix = "cutmix"


Direction = Annotated[Optional[DirectionChoice], typer.Option("--direction", help="AtoB: left half (or A/) is the input; BtoA: right half (or B/). A privaudit checkpoint records it (a contradicting flag is refused); a pix2pix .pth, .pt2 or TorchScript model does not, so it is required there.")]
AllowSmall = Annotated[bool, typer.Option("--allow-small", help="Accept fewer than 10 members or non-members (the AUC is then a rough estimate; the report records it).")]
Size = Annotated[Optional[int], typer.Option("--size", help="Resize images to SIZE×SIZE. Default: the size recorded in a privaudit checkpoint, else the images' own size.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed for every random choice (same seed, same report).")]
Device = Annotated[str, typer.Option("--device", help="auto (CUDA when available), cpu, cuda or cuda:N.")]
Precision = Annotated[PrecisionChoice, typer.Option("--precision", help="auto: bf16 autocast (with channels_last) on a CUDA GPU with native bf16, fp32 elsewhere; fp32: IEEE float32 (TF32 off); bf16: insist on autocast (CUDA only). Losses are float32 either way; DP-SGD always runs fp32. Recorded in the checkpoint or report.")]
Deterministic = Annotated[bool, typer.Option("--deterministic", help="On CUDA: deterministic algorithms instead of cuDNN autotuning, so a rerun with the same seed repeats bit for bit on the same GPU and software (slower). Nothing changes on the CPU, which is deterministic already.")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")]
JsonOut = Annotated[Optional[Path], typer.Option("--json", help="Write the JSON report to FILE ('-' for stdout).")]
NumDowns = Annotated[Optional[int], typer.Option("--num-downs", help="U-Net depth (downsamplings); inferred from a pix2pix state_dict when omitted.")]
Ngf = Annotated[Optional[int], typer.Option("--ngf", help="U-Net width (filters in the first layer); inferred when omitted.")]
Norm = Annotated[Optional[NormChoice], typer.Option("--norm", help="The U-Net's norm layer; inferred when omitted.")]
Dropout = Annotated[Optional[bool], typer.Option("--dropout/--no-dropout", help="Whether the U-Net has dropout (cannot be seen in a state_dict; pix2pix's default is on).")]
# Streamed data (privaudit.data.stream): train, defend, attack, evaluate, references
Stream = Annotated[bool, typer.Option("--stream", help="Read the data from disk batch by batch (DataLoader workers decode on the fly) even when it would fit --memory-budget; the results are the same.")]
MemoryBudget = Annotated[Optional[float], typer.Option("--memory-budget", metavar="GB", help="Stream data sets whose decoded images take more than GB gigabytes (default: 25% of this machine's memory, shared among torchrun's processes on it).")]
Workers = Annotated[Optional[int], typer.Option("--workers", metavar="N", help="Worker processes that decode streamed data (default: min(4, CPUs - 1), none for sets under 64 images; 0: the main process).")]

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or tables.")]
KeepState = Annotated[bool, typer.Option("--keep-state", help="Keep the resume state OUT.state (several times the model's size) after the run finishes, so that --resume with a larger --epochs can extend it later.")]

# The attack's options (privaudit attack, and the attack inside privaudit evaluate)
Loss = Annotated[LossChoice, typer.Option("--loss", help="Reconstruction loss (l1 is the paper's); segmentation models use the cross-entropy.")]
Stochastic = Annotated[bool, typer.Option("--stochastic", help="Keep dropout on (pix2pix's test-time noise z) and average --samples draws.")]
Samples = Annotated[int, typer.Option("--samples", help="Dropout draws averaged per image with --stochastic.")]
Bootstrap = Annotated[int, typer.Option("--bootstrap", help="Bootstrap resamples for the AUC's 95% interval (0: none).")]
References = Annotated[Optional[Path], typer.Option("--references", help="Folder of reference models for MODEL (privaudit references --out): also run every calibrated attack they support (calibrated, LiRA offline/online) and the distribution check; the report becomes privaudit.report/2.")]

# Segmentation (--task segmentation; implied by --arch, --num-classes, --normalize, --ignore-index or a segmentation checkpoint)
Task = Annotated[Optional[TaskChoice], typer.Option("--task", help="translation (pix2pix generators) or segmentation. Default: what the model records; segmentation when --arch or --num-classes is given.")]
Arch = Annotated[Optional[ArchChoice], typer.Option("--arch", help="Segmentation network: unet, or a torchvision architecture (randomly initialised; a state_dict needs it).")]
NumClasses = Annotated[Optional[int], typer.Option("--num-classes", help="Segmentation: the number of classes C (label values 0..C-1).")]
Normalize = Annotated[Optional[NormalizeChoice], typer.Option("--normalize", help="Segmentation input normalisation: imagenet (torchvision's), symmetric ([-1, 1], the U-Net's) or unit ([0, 1]). Default: recorded in the checkpoint, else the architecture's.")]
IgnoreIndex = Annotated[Optional[int], typer.Option("--ignore-index", help="Segmentation: the label value of unlabelled pixels, left out of losses and metrics (default: the model's, else 255).")]
LabelScore = Annotated[LabelScoreChoice, typer.Option("--label-score", help="Segmentation, the label-only attack's per-image score: pixel accuracy or iou.")]
Shadow = Annotated[Optional[Path], typer.Option("--shadow", help="Segmentation, the loss-map attack: a shadow model trained like the target on the attacker's own data (with --shadow-members and --shadow-nonmembers).")]
ShadowMembers = Annotated[Optional[Path], typer.Option("--shadow-members", help="The shadow model's training pairs (A/ photos, B/ label maps).")]
ShadowNonmembers = Annotated[Optional[Path], typer.Option("--shadow-nonmembers", help="Pairs the shadow model never saw.")]
LossmapEpochs = Annotated[int, typer.Option("--lossmap-epochs", help="Training epochs of the loss-map attack's CNN.")]
LossmapSize = Annotated[int, typer.Option("--lossmap-size", help="Side of the loss maps the loss-map attack's CNN reads (average-pooled).")]


def segmentation_flags(*, task=None, arch=None, num_classes=None, normalize=None, ignore_index=None):
    """(task, SegSpec or None) from the shared segmentation flags (the library imports torch: call inside a command)."""
    from privaudit.models.segnets import SegSpec

    spec = SegSpec(arch=arch, num_classes=num_classes, normalize=normalize, ignore_index=ignore_index)
    return task, (spec if spec.given else None)
