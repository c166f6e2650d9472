"""Paired image datasets (aligned A|B, or A/ + B/ folders) and input-only proxy sets, in memory
(``ImageSet``) or streamed from disk (``StreamedSet``, ``privaudit.data.stream``)."""

from privaudit.data.images import DIRECTIONS, ImageSet, load_inputs, load_pairs, to_float, to_uint8
from privaudit.data.stream import StreamedSet, Streaming, open_inputs, open_pairs

__all__ = ["DIRECTIONS", "ImageSet", "StreamedSet", "Streaming", "load_inputs", "load_pairs", "open_inputs", "open_pairs", "to_float", "to_uint8"]
