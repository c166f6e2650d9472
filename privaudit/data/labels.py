"""Segmentation data: photos in ``A/`` and label maps in ``B/`` with the same file names.

A label map holds one class index per pixel: a palette PNG (its pixel values are the indices; the
palette only colours them for viewing) or a greyscale PNG of indices. Values ``0 .. C-1`` are
classes, ``ignore_index`` (default 255) marks unlabelled pixels; any other value is refused,
naming the file. A colour (RGB) label map is read only with a palette that maps its colours to
indices (a model's recorded palette); without one it is refused, since its colours are not indices.
Label maps are resized with nearest neighbour only (any other filter invents classes at edges);
JPEG label maps are refused (lossy compression changes indices).

Label maps are kept as uint8 tensors (N, 1, H, W) in the ``targets`` of an ``ImageSet``, so the
set checks (disjointness, content hashes, counts) work on segmentation sets unchanged.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from privaudit.data.images import ImageSet, ResizeLog, _check_size, _list_images, _open, _to_tensor
from privaudit.defaults import IGNORE_INDEX
from privaudit.errors import DataError, InputError

LAYOUT = "segmentation"
MAX_CLASSES = 255  # labels are stored as uint8, with room for an ignore value
LOSSY = (".jpg", ".jpeg", ".webp")
Palette = list[tuple[int, int, int]]


def check_num_classes(num_classes: int, *, flag: str = "--num-classes") -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 2 <= num_classes <= MAX_CLASSES:
        raise InputError(f"{flag} must be a whole number from 2 to {MAX_CLASSES}, not {num_classes}")
    return num_classes


def check_ignore_index(ignore_index: int) -> int:
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int) or not 0 <= ignore_index <= 255:
        raise InputError(f"--ignore-index must be a label value from 0 to 255 (255 is the usual), not {ignore_index}")
    return ignore_index


def _open_label(path: Path) -> Image.Image:
    """The label file decoded in its own mode (never converted: a palette image's values are indices)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        im.load()
        return im
    except UnidentifiedImageError:
        raise DataError(f"{path} is not an image file; remove it from the folder") from None
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path} is too large to decode safely ({str(exc).strip().rstrip('.')[:120]}); remove it or shrink it") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path} cannot be decoded ({str(exc).strip()[:100]}); the file is truncated or corrupt, replace or remove it") from None


def label_array(im: Image.Image, path: Path, *, palette: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """The (H, W) class-index array of a decoded label map (int64).

    Palette (``P``) and greyscale (``L``, ``I;16``, ``I``, ``1``) images give their pixel values;
    colour images are mapped through ``palette`` (colour k → index k), every colour must be in it.
    """
    mode = im.mode
    if mode in ("P", "L", "1", "I", "I;16", "I;16B", "I;16L"):
        return np.asarray(im).astype(np.int64)
    if mode in ("LA", "PA"):
        return np.asarray(im)[..., 0].astype(np.int64)
    if mode in ("RGB", "RGBA"):
        rgb = np.asarray(im.convert("RGB")).astype(np.int64)
        if not palette:
            raise DataError(
                f"{path} is a colour (RGB) label map and no palette maps its colours to class indices; save the label maps as palette PNGs "
                "or greyscale PNGs whose pixel values are the class indices"
            )
        codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        table = {(int(r) << 16) | (int(g) << 8) | int(b): k for k, (r, g, b) in enumerate(palette)}
        out = np.full(codes.shape, -1, dtype=np.int64)
        for code, k in table.items():
            out[codes == code] = k
        if (out < 0).any():
            y, x = np.argwhere(out < 0)[0]
            r, g, b = (int(v) for v in rgb[y, x])
            raise DataError(f"{path} holds the colour {r}:{g}:{b} (at x={x}, y={y}), which is not in the palette of {len(palette)} classes; "
                            "fix the label map, or save it as a palette or greyscale PNG of class indices")
        return out
    raise DataError(f"{path} is a {mode} image, not a label map; save it as a palette PNG or greyscale PNG whose pixel values are class indices")


def read_palette(path: Path, num_classes: int) -> Palette | None:
    """The first ``num_classes`` colours of a palette PNG, or None for a greyscale or colour file."""
    im = _open_label(path)
    if im.mode != "P" or im.getpalette() is None:
        return None
    flat = im.getpalette()[: 3 * num_classes]
    flat += [0] * (3 * num_classes - len(flat))
    return [(flat[3 * k], flat[3 * k + 1], flat[3 * k + 2]) for k in range(num_classes)]


def check_labels(labels: np.ndarray, path: Path, *, num_classes: int | None, ignore_index: int) -> None:
    """DataError naming the file when a value is neither a class (< C) nor ``ignore_index``, or when
    no pixel is labelled at all."""
    valid = labels != ignore_index
    if num_classes is not None:
        bad = valid & ((labels < 0) | (labels >= num_classes))
        if bad.any():
            y, x = np.argwhere(bad)[0]
            values = sorted({int(v) for v in np.unique(labels[bad])})[:5]
            raise DataError(
                f"{path} holds label value {labels[y, x]} (at x={x}, y={y}; values found: {', '.join(map(str, values))}), but the model has "
                f"{num_classes} classes (0..{num_classes - 1}) and --ignore-index is {ignore_index}; pass the right --num-classes or --ignore-index"
            )
    elif (labels > 255).any() or (labels < 0).any():
        raise DataError(f"{path} holds label values outside 0..255; privaudit reads at most {MAX_CLASSES} classes")
    if not valid.any():
        raise DataError(f"{path} has no labelled pixel (every pixel is the ignore index {ignore_index}); remove it, or check --ignore-index")


def _resize_labels(labels: np.ndarray, size: int | None) -> np.ndarray:
    if size is None or labels.shape == (size, size):
        return labels
    return np.asarray(Image.fromarray(labels.astype(np.uint8), mode="L").resize((size, size), Image.NEAREST))


def _pairs(folder: Path, what: str) -> tuple[list[Path], dict[str, Path]]:
    if not (folder / "A").is_dir() or not (folder / "B").is_dir():
        if not folder.exists():
            raise DataError(f"{what} folder {folder} does not exist; check the path")
        if not folder.is_dir():
            raise DataError(f"{what} path {folder} is not a folder; give a folder holding A/ (photos) and B/ (label maps)")
        raise DataError(f"{what} folder {folder} has no A/ and B/ subfolders; segmentation data is A/ (photos) and B/ (label maps) with the same file names")
    photos = _list_images(folder / "A", what)
    labels = _list_images(folder / "B", what)
    for files in (photos, labels):
        stems = [p.stem for p in files]
        dup = next((s for s in stems if stems.count(s) > 1), None)
        if dup is not None:
            raise DataError(f"{files[0].parent} holds two images named {dup!r} (different extensions); keep one, pairs are matched by name")
    by_stem = {p.stem: p for p in labels}
    photo_stems = {p.stem for p in photos}
    unmatched = [p.name for p in photos if p.stem not in by_stem] + [p.name for s, p in by_stem.items() if s not in photo_stems]
    if unmatched:
        raise DataError(f"{len(unmatched)} file(s) in {folder}/A and {folder}/B have no partner with the same name (e.g. {', '.join(unmatched[:3])}); "
                        "every photo needs a label map of the same name")
    lossy = [by_stem[p.stem].name for p in photos if by_stem[p.stem].suffix.lower() in LOSSY]
    if lossy:
        raise DataError(f"{folder}/B/{lossy[0]} is a JPEG/WebP label map: lossy compression changes class indices; save the label maps as PNG")
    return photos, by_stem


def load_segmentation_pairs(
    path: str | Path,
    *,
    num_classes: int | None,
    size: int | None = None,
    ignore_index: int = IGNORE_INDEX,
    palette: Sequence[Sequence[int]] | None = None,
    what: str = "data",
) -> ImageSet:
    """Photos ``A/`` (RGB, uint8 (N, 3, H, W)) and label maps ``B/`` (class indices, uint8 (N, 1, H, W)).

    ``size``: resize photos (bicubic) and label maps (nearest) to size×size; None keeps their own
    size, which must then be square and the same for all. A photo and its label map must have the
    same size before resizing. ``num_classes`` None skips the class check (values up to 255).
    """
    _check_size(size)
    check_ignore_index(ignore_index)
    if num_classes is not None:
        check_num_classes(num_classes)
    folder = Path(path)
    photos, by_stem = _pairs(folder, what)
    log = ResizeLog(size)
    inputs: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    names = [p.name for p in photos]
    for p in photos:
        lp = by_stem[p.stem]
        photo = _open(p, "RGB")
        label_im = _open_label(lp)
        if photo.size != label_im.size:
            raise DataError(f"{lp} is {label_im.size[0]}x{label_im.size[1]} but its photo {p} is {photo.size[0]}x{photo.size[1]}; "
                            "a label map must have its photo's size")
        labels = label_array(label_im, lp, palette=palette)
        check_labels(labels, lp, num_classes=num_classes, ignore_index=ignore_index)
        x, resized, stretched = log.fit(photo, p)
        log.count(resized, stretched)
        labels = _resize_labels(labels, size)
        if size is not None:
            check_labels(labels, lp, num_classes=num_classes, ignore_index=ignore_index)  # nearest keeps values; a tiny region may vanish
        inputs.append(_to_tensor(x))
        targets.append(torch.from_numpy(labels.astype(np.uint8)).unsqueeze(0))
    x_t = _stack(inputs, names, folder / "A")
    _require_square(x_t, folder / "A")
    y_t = torch.stack(targets)
    return ImageSet(inputs=x_t, targets=y_t, names=names, path=str(folder), layout=LAYOUT, resized=log.summary())


def folder_palette(path: str | Path, num_classes: int) -> Palette | None:
    """The palette of the first label map in ``path/B`` (None when it is no palette PNG)."""
    labels = _list_images(Path(path) / "B", "data")
    return read_palette(labels[0], num_classes) if labels else None


def is_segmentation_folder(path: str | Path) -> bool:
    """Whether ``path`` holds A/ and B/ (the layout segmentation data takes)."""
    p = Path(path)
    return (p / "A").is_dir() and (p / "B").is_dir()


def _stack(tensors: list[torch.Tensor], names: list[str], folder: Path) -> torch.Tensor:
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        by_shape: dict[tuple, str] = {}
        for t, n in zip(tensors, names):
            by_shape.setdefault(tuple(t.shape), n)
        examples = ", ".join(f"{n} {s[2]}x{s[1]}" for s, n in list(by_shape.items())[:2])
        raise DataError(f"images in {folder} differ in size ({examples}); pass --size PX to resize them all")
    return torch.stack(tensors)


def _require_square(x: torch.Tensor, folder: Path) -> None:
    if x.shape[-1] != x.shape[-2]:
        raise DataError(f"images in {folder} are {x.shape[-1]}x{x.shape[-2]}, not square; pass --size PX to resize them")
