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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

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

    @property
    def has_targets(self) -> bool:
        return self.targets is not None

    @property
    def input_nc(self) -> int:
        return int(self.inputs.shape[1])

    @property
    def output_nc(self) -> int | None:
        return None if self.targets is None else int(self.targets.shape[1])

    def batches(self, batch_size: int, *, want_x: bool = True, want_y: bool = True) -> Iterator[tuple[slice, torch.Tensor | None, torch.Tensor | None]]:
        """(slice, uint8 inputs, uint8 targets or None) for consecutive batches, as a ``StreamedSet`` yields them."""
        for start in range(0, len(self), batch_size):
            sl = slice(start, min(start + batch_size, len(self)))
            yield sl, self.inputs[sl] if want_x else None, self.targets[sl] if want_y and self.targets is not None else None

    def take(self, index_batches: list[torch.Tensor], *, seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """(uint8 inputs, uint8 targets or None) of each batch of indices, in order (``seed``: unused in memory)."""
        for idx in index_batches:
            yield self.inputs[idx], None if self.targets is None else self.targets[idx]

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


def data_fingerprint(images: Any) -> str:
    """Content hash of an image set (inputs and targets), to tie a resumed run to its data: sha256
    of the decoded uint8 inputs, then targets. A ``StreamedSet`` computes the same hash in passes."""
    import hashlib

    if not isinstance(images, ImageSet):
        return images.fingerprint()
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


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """PIL's failures on ``path`` as one DataError that names the file and the fix."""
    try:
        # PIL warns (once per size) between MAX_IMAGE_PIXELS and twice that; such an image is decoded
        # and its resizing is recorded like any other, so the warning would only be noise.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except UnidentifiedImageError:
        raise DataError(f"{path} is not an image file; remove it from the folder") from None
    except Image.DecompressionBombError as exc:
        raise DataError(
            f"{path} is too large to decode safely ({str(exc).strip().rstrip('.')[:120]}); it may be a decompression bomb: remove it, "
            "or shrink it to the size the model takes"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path} cannot be decoded ({str(exc).strip()[:100]}); the file is truncated or corrupt, replace or remove it") from None


def _open(path: Path, mode: str) -> Image.Image:
    with _reading(path), Image.open(path) as im:
        im.load()
        if mode == "L":
            return im.convert("L")
        # RGBA, palette and grayscale images all become RGB, as in pix2pix.
        return im.convert("RGB")


def _probe(path: Path) -> tuple[int, int]:
    """An image's (width, height) from its header, without decoding its pixels; the errors of ``_open``."""
    with _reading(path), Image.open(path) as im:
        return im.size


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

    def check(self, w: int, h: int, path: Path, *, half: bool = False) -> tuple[bool, bool]:
        """Check an image (or half) of w×h px and record its size: (whether it is resized, whether stretched)."""
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
            return False, False
        s = self.size
        self.factor_max = max(self.factor_max, s / w, w / s, s / h, h / s)
        return True, w != h

    def fit(self, im: Image.Image, path: Path, *, half: bool = False) -> tuple[Image.Image, bool, bool]:
        """(image resized to size×size, whether it was resized, whether it was stretched)."""
        resized, stretched = self.check(*im.size, path, half=half)
        return (_resize(im, self.size) if resized else im), resized, stretched

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


def _layout(folder: Path) -> str:
    return "folders" if (folder / "A").is_dir() and (folder / "B").is_dir() else "aligned"


# What one item of a set is made of (``Item``'s first field):
#   "aligned"   one A|B file, split in halves;
#   "pair"      an input file and a target file of the same name (A/ and B/), each opened in its mode;
#   "input"     one input file opened in its mode (the input folder of a proxy set);
#   "input-rgb" one input file opened as RGB, then converted (a folder of plain input images).
Item = tuple[str, str, "str | None"]


@dataclass(frozen=True)
class Decode:
    """How an item becomes tensors: the direction of aligned files, the side length (None: the
    images' own), the PIL modes of the input and the target (None: inputs only)."""

    direction: str
    size: int | None
    mode_in: str
    mode_out: str | None


def decode_item(item: Item, dec: Decode, log: ResizeLog, *, want_x: bool = True, want_y: bool = True) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Decode one item into uint8 (C, H, W) tensors (input, target; None where not wanted or not
    there), resized through ``log`` (which checks and counts it). Raises DataError naming the file."""
    kind, first, second = item
    p = Path(first)
    want_y = want_y and dec.mode_out is not None
    x = y = None
    rx = sx = ry = sy = False
    if kind == "aligned":
        a, b = _split_aligned(_open(p, "RGB"), p)
        xi, yi = (a, b) if dec.direction == "AtoB" else (b, a)
        del a, b  # an unwanted half is dropped here, before any resizing or storage
        if want_x:
            xi, rx, sx = log.fit(xi.convert(dec.mode_in), p, half=True)
            x = _to_tensor(xi)
        if want_y:
            yi, ry, sy = log.fit(yi.convert(dec.mode_out), p, half=True)  # type: ignore[arg-type]
            y = _to_tensor(yi)
    elif kind == "pair":
        if want_x:
            xi, rx, sx = log.fit(_open(p, dec.mode_in), p)
            x = _to_tensor(xi)
        if want_y:
            q = Path(second)  # type: ignore[arg-type]
            yi, ry, sy = log.fit(_open(q, dec.mode_out), q)  # type: ignore[arg-type]
            y = _to_tensor(yi)
    else:
        im = _open(p, dec.mode_in) if kind == "input" else _open(p, "RGB").convert(dec.mode_in)
        xi, rx, sx = log.fit(im, p)
        x = _to_tensor(xi)
    log.count(rx or ry, sx or sy)
    return x, y


def _check_size(size: int | None) -> None:
    if size is not None and size < 1:
        raise InputError(f"--size must be a positive number of pixels, not {size}")


def _same_shape(shapes: list[tuple[int, int]], names: list[str], folder: Path) -> tuple[int, int]:
    """The one (width, height) of every image, or the DataError of a set of mixed sizes."""
    by_shape: dict[tuple[int, int], str] = {}
    for wh, n in zip(shapes, names):
        by_shape.setdefault(wh, n)
    if len(by_shape) > 1:
        examples = ", ".join(f"{n} {wh[0]}x{wh[1]}" for wh, n in list(by_shape.items())[:2])
        raise DataError(f"images in {folder} differ in size ({examples}); pass --size PX to resize them all")
    return shapes[0]


def _scan(items: list[Item], names: list[str], dec: Decode, folder: Path, sizes: dict[str, tuple[int, int]] | None = None) -> tuple[int, dict[str, Any] | None]:
    """Check every item from its image headers, in file order, as decoding would (not an image,
    cannot be split, too small or elongated, mixed sizes, not square, inputs and targets of other
    sizes), without decoding any pixels: (the side length of the decoded images, the resize summary)."""
    sizes = sizes if sizes is not None else {}
    log = ResizeLog(dec.size)
    shape_x: list[tuple[int, int]] = []
    shape_y: list[tuple[int, int]] = []
    pairs = dec.mode_out is not None

    def probe(path: str) -> tuple[int, int]:
        if path not in sizes:
            sizes[path] = _probe(Path(path))
        return sizes[path]

    for kind, first, second in items:
        p = Path(first)
        ry = sy = False
        if kind == "aligned":
            w, h = probe(first)
            if w < 2 or w % 2:
                raise DataError(
                    f"{p} is {w}x{h}, which cannot be split into two halves (A|B); aligned images hold input and target side by side, "
                    "or use a folder with A/ and B/"
                )
            wx = wy = (w // 2, h)
            rx, sx = log.check(*wx, p, half=True)
            if pairs:
                ry, sy = log.check(*wy, p, half=True)
        else:
            wx = probe(first)
            rx, sx = log.check(*wx, p)
            if kind == "pair":
                q = Path(second)  # type: ignore[arg-type]
                wy = probe(str(q))
                ry, sy = log.check(*wy, q)
        log.count(rx or ry, sx or sy)
        side = (dec.size, dec.size) if dec.size is not None else None
        shape_x.append(side or wx)
        if pairs:
            shape_y.append(side or wy)
    wx_all = _same_shape(shape_x, names, folder)
    if wx_all[0] != wx_all[1]:
        raise DataError(f"images in {folder} are {wx_all[0]}x{wx_all[1]}, not square; pass --size PX to resize them")
    if pairs:
        wy_all = _same_shape(shape_y, names, folder)
        if wy_all != wx_all:
            src, dst = (f"{folder}/A", f"{folder}/B") if dec.direction == "AtoB" else (f"{folder}/B", f"{folder}/A")
            raise DataError(
                f"the inputs in {src} are {wx_all[0]}x{wx_all[1]} but the targets in {dst} are {wy_all[0]}x{wy_all[1]}; "
                "pass --size PX to resize both alike"
            )
    return wx_all[0], log.summary()


@dataclass
class Listing:
    """A data folder listed and every header checked (``scan_pairs``, ``scan_inputs``): what decoding
    it gives, known before any pixel is decoded. ``load`` decodes it into an ``ImageSet``;
    ``privaudit.data.stream.StreamedSet`` decodes it batch by batch."""

    items: list[Item]
    names: list[str]
    path: str
    layout: str
    decode: Decode
    size: int
    input_nc: int
    output_nc: int | None
    resized: dict[str, Any] | None

    def __len__(self) -> int:
        return len(self.items)

    def decoded_bytes(self) -> int:
        """Bytes of the decoded uint8 inputs and targets: N × (C_in + C_out) × size × size."""
        return len(self.items) * (self.input_nc + (self.output_nc or 0)) * self.size * self.size

    def load(self) -> ImageSet:
        """Decode every item, in order, into one uint8 tensor per side."""
        n, s = len(self.items), self.size
        inputs = torch.empty((n, self.input_nc, s, s), dtype=torch.uint8)
        targets = torch.empty((n, self.output_nc, s, s), dtype=torch.uint8) if self.output_nc is not None else None
        log = ResizeLog(self.decode.size)  # checked and summarised by the scan already
        for i, item in enumerate(self.items):
            x, y = decode_item(item, self.decode, log)
            inputs[i] = check_decoded(x, inputs.shape[1:], item)
            if targets is not None:
                targets[i] = check_decoded(y, targets.shape[1:], item)
        return ImageSet(inputs=inputs, targets=targets, names=list(self.names), path=self.path, layout=self.layout, resized=self.resized)


def check_decoded(t: torch.Tensor | None, shape: tuple[int, ...] | torch.Size, item: Item) -> torch.Tensor:
    """``t`` when it has the shape the headers promised, else DataError (a file that changed since it was listed)."""
    if t is None or tuple(t.shape) != tuple(shape):
        got = "nothing" if t is None else f"{tuple(t.shape)}"
        raise DataError(f"{item[1]} decoded to {got}, not the {tuple(shape)} its header promised; the file changed while it was read: read the data again")
    return t


def scan_pairs(
    path: str | Path,
    *,
    direction: str = "AtoB",
    size: int | None = None,
    input_nc: int = 3,
    output_nc: int = 3,
    what: str = "data",
) -> Listing:
    """List the (input, target) pairs of an aligned folder or an ``A/`` + ``B/`` folder and check
    every header (see ``load_pairs``), decoding nothing."""
    check_direction(direction)
    _check_size(size)
    folder = Path(path)
    dec = Decode(direction, size, "L" if input_nc == 1 else "RGB", "L" if output_nc == 1 else "RGB")
    layout = _layout(folder) if folder.is_dir() else "aligned"
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
        items: list[Item] = [("pair", str(p), str(dst_files[p.stem])) for p in src_files]
    else:
        files = _list_images(folder, what)
        names = [p.name for p in files]
        items = [("aligned", str(p), None) for p in files]
    side, resized = _scan(items, names, dec, folder)
    return Listing(items, names, str(folder), layout, dec, side, 1 if input_nc == 1 else 3, 1 if output_nc == 1 else 3, resized)


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
    then be square and the same for all images. Every header is checked before any image is decoded.
    """
    return scan_pairs(path, direction=direction, size=size, input_nc=input_nc, output_nc=output_nc, what=what).load()


def scan_inputs(
    path: str | Path,
    *,
    direction: str = "AtoB",
    size: int | None = None,
    input_nc: int = 3,
    layout: str = "auto",
    what: str = "proxy",
) -> Listing:
    """List the input images of a folder and check every header (see ``load_inputs``), decoding nothing."""
    check_direction(direction)
    _check_size(size)
    folder = Path(path)
    mode = "L" if input_nc == 1 else "RGB"
    if layout not in ("auto", "aligned", "folders", "inputs"):
        raise InputError(f"invalid proxy layout {layout!r}; use auto, aligned, folders or inputs")
    dec = Decode(direction, size, mode, None)
    sizes: dict[str, tuple[int, int]] = {}
    # An explicit ``folders`` layout needs only the input folder (a proxy set may come as A/ alone).
    if layout == "folders" or (layout == "auto" and folder.is_dir() and _layout(folder) == "folders"):
        folder_in = folder / ("A" if direction == "AtoB" else "B")
        files = _list_images(folder_in, what)
        items: list[Item] = [("input", str(p), None) for p in files]
        used = "folders"
    else:
        files = _list_images(folder, what)
        if layout == "auto":
            for p in files:
                sizes[str(p)] = _probe(p)
            layout = "aligned" if all(w == 2 * h for w, h in sizes.values()) else "inputs"
        items = [("aligned" if layout == "aligned" else "input-rgb", str(p), None) for p in files]
        used = layout
    names = [p.name for p in files]
    side, resized = _scan(items, names, dec, folder, sizes)
    return Listing(items, names, str(folder), used, dec, side, 1 if input_nc == 1 else 3, None, resized)


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
    return scan_inputs(path, direction=direction, size=size, input_nc=input_nc, layout=layout, what=what).load()


def _split_aligned(im: Image.Image, p: Path) -> tuple[Image.Image, Image.Image]:
    w, h = im.size
    if w < 2 or w % 2:
        raise DataError(
            f"{p} is {w}x{h}, which cannot be split into two halves (A|B); aligned images hold input and target side by side, "
            "or use a folder with A/ and B/"
        )
    half = w // 2
    return im.crop((0, 0, half, h)), im.crop((half, 0, w, h))
