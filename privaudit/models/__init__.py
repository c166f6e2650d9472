"""Generators, discriminators and checkpoint I/O."""

from privaudit.models.checkpoint import LoadedModel, load_model, save_checkpoint
from privaudit.models.networks import NLayerDiscriminator, UnetArch, UnetGenerator

__all__ = ["LoadedModel", "load_model", "save_checkpoint", "NLayerDiscriminator", "UnetArch", "UnetGenerator"]
