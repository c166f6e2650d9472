"""Options shared by several commands, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

Direction = Annotated[Optional[str], typer.Option("--direction", help="AtoB: left half (or A/) is the input; BtoA: right half (or B/). A privaudit checkpoint records it (a contradicting flag is refused); a pix2pix .pth, .pt2 or TorchScript model does not, so it is required there.")]
AllowSmall = Annotated[bool, typer.Option("--allow-small", help="Accept fewer than 10 members or non-members (the AUC is then a rough estimate; the report records it).")]
Size = Annotated[Optional[int], typer.Option("--size", help="Resize images to SIZE×SIZE. Default: the size recorded in a privaudit checkpoint, else the images' own size.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed for every random choice (same seed, same report).")]
Device = Annotated[str, typer.Option("--device", help="auto (CUDA when available), cpu or cuda.")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")]
JsonOut = Annotated[Optional[Path], typer.Option("--json", help="Write the JSON report to FILE ('-' for stdout).")]
NumDowns = Annotated[Optional[int], typer.Option("--num-downs", help="U-Net depth (downsamplings); inferred from a pix2pix state_dict when omitted.")]
Ngf = Annotated[Optional[int], typer.Option("--ngf", help="U-Net width (filters in the first layer); inferred when omitted.")]
Norm = Annotated[Optional[str], typer.Option("--norm", help="batch, instance or none; inferred when omitted.")]
Dropout = Annotated[Optional[bool], typer.Option("--dropout/--no-dropout", help="Whether the U-Net has dropout (cannot be seen in a state_dict; pix2pix's default is on).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or tables.")]
KeepState = Annotated[bool, typer.Option("--keep-state", help="Keep the resume state OUT.state (several times the model's size) after the run finishes, so that --resume with a larger --epochs can extend it later.")]
