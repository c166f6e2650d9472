"""Reading image pairs the way pix2pix does, with errors that name the file and the fix.

Two layouts are accepted for a data PATH:

* a folder of *aligned* images, each the input and the target side by side (``A|B``);
  ``direction`` ``AtoB`` takes the left half as the input, ``BtoA`` the right half;
* a folder holding ``A/`` and ``B/`` with the same file names.

Images are kept as uint8 tensors (N, C, H, W); ``to_float`` maps them to [-1, 1] as pix2pix's
``Normalize((0.5,)*3, (0.5,)*3)`` does. Every decoded image is checked before it is resized
(``ResizeLog``): too small, too elongated or too large to decode safely is refused, naming the file;
what resizing did is summarised on the ImageSet for the report.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from privaudit.errors import DataError, InputError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp")
DIRECTIONS = ("AtoB", "BtoA")
# An image side below MIN_SIDE px, or longer than MAX_ASPECT times the other side, is refused rather
# than resized: what comes out of such a resize is not the image the model was trained on.
MIN_SIDE = 8
MAX_ASPECT = 4.0
# Resizing by more than this factor (up or down) is recorded and warned about, as is any stretching
# of a non-square image and a set of mixed sizes: each can change the attack's scores.
RESIZE_WARN_FACTOR = 2.0


@dataclass
class ImageSet:
    """Inputs and (for pairs) targets as uint8 tensors (N, C, H, W), with their file names."""

    inputs: torch.Tensor
    targets: torch.Tensor | None
    names: list[str]
    path: str
    layout: str
    # What resizing did to the folder this set was read from (``ResizeLog.summary``; a subset keeps
    # its parent's): None when no image was resized.
    resized: dict[str, Any] | None = None

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def size(self) -> int:
        return int(self.inputs.shape[-1])

    def resize_warning(self, what: str) -> str | None:
        """One line when resizing this set could change the scores (see ``resize_warning``), else None."""
        return resize_warning(self.resized, what=what, path=self.path, count=len(self))

    def subset(self, idx: list[int] | torch.Tensor) -> "ImageSet":
        index = torch.as_tensor(idx, dtype=torch.long)
        return ImageSet(
            inputs=self.inputs[index],
            targets=None if self.targets is None else self.targets[index],
            names=[self.names[i] for i in index.tolist()],
            path=self.path,
            layout=self.layout,
            resized=self.resized,
        )


def data_fingerprint(images: ImageSet) -> str:
    """Content hash of an image set (inputs and targets), to tie a resumed run to its data."""
    import hashlib

    h = hashlib.sha256()
    h.update(images.inputs.numpy().tobytes())
    if images.targets is not None:
        h.update(images.targets.numpy().tobytes())
    return h.hexdigest()


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float32 [-1, 1]."""
    return x.float().div_(127.5).sub_(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] → uint8 [0, 255] (rounded, clamped)."""
    return ((x.clamp(-1, 1) + 1.0) * 127.5).round_().to(torch.uint8)


def check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise InputError(f"invalid --direction {direction!r}; use AtoB (left half is the input) or BtoA (right half is the input)")
    return direction


def _list_images(folder: Path, what: str) -> list[Path]:
    if not folder.exists():
        raise DataError(f"{what} folder {folder} does not exist; check the path")
    if not folder.is_dir():
        raise DataError(f"{what} path {folder} is not a folder; give a folder of images")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)
    if not files:
        raise DataError(f"{what} folder {folder} holds no images ({', '.join(IMG_EXTENSIONS)}); point it at a folder of images")
    return files


def _open(path: Path, mode: str) -> Image.Image:
    try:
        # PIL warns (once per size) between MAX_IMAGE_PIXELS and twice that; such an image is decoded
        # and its resizing is recorded like any other, so the warning would only be noise.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            im.load()
            if mode == "L":
                return im.convert("L")
            # RGBA, palette and grayscale images all become RGB, as in pix2pix.
            return im.convert("RGB")
    except UnidentifiedImageError:
        raise DataError(f"{path} is not an image file; remove it from the folder") from None
    except Image.DecompressionBombError as exc:
        raise DataError(
            f"{path} is too large to decode safely ({str(exc).strip().rstrip('.')[:120]}); it may be a decompression bomb: remove it, "
            "or shrink it to the size the model takes"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path} cannot be decoded ({str(exc).strip()[:100]}); the file is truncated or corrupt, replace or remove it") from None


def _to_tensor(im: Image.Image) -> torch.Tensor:
    arr = np.asarray(im, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def _resize(im: Image.Image, size: int | None) -> Image.Image:
    if size is None or im.size == (size, size):
        return im
    return im.resize((size, size), Image.BICUBIC)


class ResizeLog:
    """Checks the shape of every decoded image, resizes it to ``size`` and keeps what a report needs.

    Refuses (DataError) an image with a side below MIN_SIDE or an aspect ratio beyond MAX_ASPECT,
    whatever ``size`` is: such a file is a mistake in the data, not something to stretch.
    """

    def __init__(self, size: int | None) -> None:
        self.size = size
        self.first_of_size: dict[tuple[int, int], str] = {}  # (w, h) -> first file with that size
        self.resized = 0  # pairs (or inputs) with at least one side resized
        self.non_square = 0  # of those, the ones stretched because a side was not square
        self.factor_max = 1.0

    def fit(self, im: Image.Image, path: Path, *, half: bool = False) -> tuple[Image.Image, bool, bool]:
        """(image resized to size×size, whether it was resized, whether it was stretched)."""
        w, h = im.size
        what = f"{path} ({'each half ' if half else ''}{w}x{h})"
        if max(w, h) > MAX_ASPECT * max(min(w, h), 1):
            raise DataError(
                f"{what} has an aspect ratio of {max(w, h) / max(min(w, h), 1):.0f}:1; squashing it into a square image would not be the "
                f"image the model saw (at most {MAX_ASPECT:g}:1 is resized): crop it or remove it"
            )
        if min(w, h) < MIN_SIDE:
            raise DataError(f"{what} is smaller than {MIN_SIDE} px on a side, too small to audit: remove it or replace it with the full-size image")
        self.first_of_size.setdefault((w, h), path.name)
        if self.size is None or (w, h) == (self.size, self.size):
            return im, False, False
        s = self.size
        self.factor_max = max(self.factor_max, s / w, w / s, s / h, h / s)
        return _resize(im, s), True, w != h

    def count(self, resized: bool, stretched: bool) -> None:
        self.resized += int(resized)
        self.non_square += int(stretched)

    def summary(self) -> dict[str, Any] | None:
        """What the report records under ``data.<set>.resized``; None when nothing was resized."""
        if not self.resized:
            return None
        sizes = sorted(self.first_of_size, key=lambda wh: (wh[0] * wh[1], wh))
        mixed = len(sizes) > 1
        return {
            "count": self.resized,
            "to": [self.size, self.size],
            "from_min": list(sizes[0]),
            "from_max": list(sizes[-1]),
            "sizes": len(sizes),
            "examples": [f"{self.first_of_size[wh]} {wh[0]}x{wh[1]}" for wh in sizes[:3]],
            "factor_max": round(self.factor_max, 3),
            "non_square": self.non_square,
            "mixed_sizes": mixed,
            "warned": self.factor_max > RESIZE_WARN_FACTOR or self.non_square > 0 or mixed,
        }


def resize_warning(r: dict[str, Any] | None, *, what: str, path: str, count: int) -> str | None:
    """One line for a set of ``count`` images at ``path`` whose resizing (``ResizeLog.summary``) could
    change the scores, else None."""
    if not r or not r.get("warned"):
        return None
    lo, hi = r["from_min"], r["from_max"]
    sizes = f"{lo[0]}x{lo[1]}" if lo == hi else f"{r['sizes']} sizes from {lo[0]}x{lo[1]} to {hi[0]}x{hi[1]}"
    why = []
    if r["factor_max"] > RESIZE_WARN_FACTOR:
        why.append(f"by a factor of up to {r['factor_max']:.3g}")
    if r["non_square"]:
        why.append(f"{r['non_square']} stretched from a non-square shape")
    if r["mixed_sizes"]:
        why.append("mixed sizes")
    to = r["to"]
    return (f"{what} ({path}): {r['count']} of {count} resized to {to[0]}x{to[1]} from {sizes} ({', '.join(why)}); "
            "the scores describe the resized images: check the data and --size")


def _check_size(size: int | None) -> None:
    if size is not None and size < 1:
        raise InputError(f"--size must be a positive number of pixels, not {size}")


def _stack(tensors: list[torch.Tensor], names: list[str], folder: Path) -> torch.Tensor:
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        by_shape: dict[tuple, str] = {}
        for t, n in zip(tensors, names):
            by_shape.setdefault(tuple(t.shape), n)
        examples = ", ".join(f"{n} {s[2]}x{s[1]}" for s, n in list(by_shape.items())[:2])
        raise DataError(f"images in {folder} differ in size ({examples}); pass --size PX to resize them all")
    return torch.stack(tensors)


def _layout(folder: Path) -> str:
    return "folders" if (folder / "A").is_dir() and (folder / "B").is_dir() else "aligned"


def load_pairs(
    path: str | Path,
    *,
    direction: str = "AtoB",
    size: int | None = None,
    input_nc: int = 3,
    output_nc: int = 3,
    what: str = "data",
) -> ImageSet:
    """Load (input, target) pairs from an aligned folder or an ``A/`` + ``B/`` folder.

    ``size``: resize each side to size×size (bicubic); None keeps the images' own size, which must
    then be square and the same for all images.
    """
    check_direction(direction)
    _check_size(size)
    folder = Path(path)
    mode_in, mode_out = ("L" if input_nc == 1 else "RGB"), ("L" if output_nc == 1 else "RGB")
    layout = _layout(folder) if folder.is_dir() else "aligned"
    inputs: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    log = ResizeLog(size)
    if layout == "folders":
        src, dst = ("A", "B") if direction == "AtoB" else ("B", "A")
        src_files = _list_images(folder / src, what)
        dst_list = _list_images(folder / dst, what)
        for files in (src_files, dst_list):
            stems = [p.stem for p in files]
            dup = next((s for s in stems if stems.count(s) > 1), None)
            if dup is not None:
                raise DataError(f"{files[0].parent} holds two images named {dup!r} (different extensions); keep one, pairs are matched by name")
        dst_files = {p.stem: p for p in dst_list}
        src_stems = {p.stem for p in src_files}
        unmatched = [p.name for p in src_files if p.stem not in dst_files] + [p.name for s, p in dst_files.items() if s not in src_stems]
        if unmatched:
            raise DataError(
                f"{len(unmatched)} file(s) in {folder}/A and {folder}/B have no partner with the same name "
                f"(e.g. {', '.join(unmatched[:3])}); every input needs a target of the same name"
            )
        names = [p.name for p in src_files]
        for p in src_files:
            x, rx, sx = log.fit(_open(p, mode_in), p)
            y, ry, sy = log.fit(_open(dst_files[p.stem], mode_out), dst_files[p.stem])
            log.count(rx or ry, sx or sy)
            inputs.append(_to_tensor(x))
            targets.append(_to_tensor(y))
    else:
        files = _list_images(folder, what)
        names = [p.name for p in files]
        for p in files:
            a, b = _split_aligned(_open(p, "RGB"), p)
            x, y = (a, b) if direction == "AtoB" else (b, a)
            x, rx, sx = log.fit(x.convert(mode_in), p, half=True)
            y, ry, sy = log.fit(y.convert(mode_out), p, half=True)
            log.count(rx or ry, sx or sy)
            inputs.append(_to_tensor(x))
            targets.append(_to_tensor(y))
    x_t = _stack(inputs, names, folder)
    _require_square(x_t, folder)
    y_t = _stack(targets, names, folder)
    if y_t.shape[-2:] != x_t.shape[-2:]:
        src, dst = (f"{folder}/A", f"{folder}/B") if direction == "AtoB" else (f"{folder}/B", f"{folder}/A")
        raise DataError(
            f"the inputs in {src} are {x_t.shape[-1]}x{x_t.shape[-2]} but the targets in {dst} are {y_t.shape[-1]}x{y_t.shape[-2]}; "
            "pass --size PX to resize both alike"
        )
    return ImageSet(inputs=x_t, targets=y_t, names=names, path=str(folder), layout=layout, resized=log.summary())


def load_inputs(
    path: str | Path,
    *,
    direction: str = "AtoB",
    size: int | None = None,
    input_nc: int = 3,
    layout: str = "auto",
    what: str = "proxy",
) -> ImageSet:
    """Load *inputs only*: the target half or folder is never decoded into memory.

    ``layout``: ``aligned`` (A|B images, only the input half is kept), ``folders`` (only ``A/``
    for AtoB or ``B/`` for BtoA is read), ``inputs`` (each file is one input image) or ``auto``
    (``folders`` if A/ and B/ exist; else ``aligned`` if every image is twice as wide as high; else
    ``inputs``).
    """
    check_direction(direction)
    _check_size(size)
    folder = Path(path)
    mode = "L" if input_nc == 1 else "RGB"
    if layout not in ("auto", "aligned", "folders", "inputs"):
        raise InputError(f"invalid proxy layout {layout!r}; use auto, aligned, folders or inputs")
    log = ResizeLog(size)
    # An explicit ``folders`` layout needs only the input folder (a proxy set may come as A/ alone).
    if layout == "folders" or (layout == "auto" and folder.is_dir() and _layout(folder) == "folders"):
        folder_in = folder / ("A" if direction == "AtoB" else "B")
        files = _list_images(folder_in, what)
        imgs = []
        for p in files:
            im, resized, stretched = log.fit(_open(p, mode), p)
            log.count(resized, stretched)
            imgs.append(_to_tensor(im))
        used = "folders"
    else:
        files = _list_images(folder, what)
        pil = [_open(p, "RGB") for p in files]
        if layout == "auto":
            layout = "aligned" if all(im.width == 2 * im.height for im in pil) else "inputs"
        imgs = []
        for im, p in zip(pil, files):
            if layout == "aligned":
                a, b = _split_aligned(im, p)
                im = a if direction == "AtoB" else b
                del a, b  # the target half is dropped here, before any resizing or storage
            im, resized, stretched = log.fit(im.convert(mode), p, half=layout == "aligned")
            log.count(resized, stretched)
            imgs.append(_to_tensor(im))
        used = layout
    names = [p.name for p in files]
    x_t = _stack(imgs, names, folder)
    _require_square(x_t, folder)
    return ImageSet(inputs=x_t, targets=None, names=names, path=str(folder), layout=used, resized=log.summary())


def _split_aligned(im: Image.Image, p: Path) -> tuple[Image.Image, Image.Image]:
    w, h = im.size
    if w < 2 or w % 2:
        raise DataError(
            f"{p} is {w}x{h}, which cannot be split into two halves (A|B); aligned images hold input and target side by side, "
            "or use a folder with A/ and B/"
        )
    half = w // 2
    return im.crop((0, 0, half, h)), im.crop((half, 0, w, h))


def _require_square(x: torch.Tensor, folder: Path) -> None:
    if x.shape[-1] != x.shape[-2]:
        raise DataError(f"images in {folder} are {x.shape[-1]}x{x.shape[-2]}, not square; pass --size PX to resize them")
