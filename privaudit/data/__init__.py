"""Paired image datasets (aligned A|B, or A/ + B/ folders) and input-only proxy sets."""

from privaudit.data.images import DIRECTIONS, ImageSet, load_inputs, load_pairs, to_float, to_uint8

__all__ = ["DIRECTIONS", "ImageSet", "load_inputs", "load_pairs", "to_float", "to_uint8"]
