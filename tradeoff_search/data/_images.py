"""``images:PATH``: a folder of images, one sub-folder per class (Keras' ``image_dataset_from_directory``
layout), read into arrays of shape (rows, height, width, channels).

Keras' names and choices: the class of an image is its sub-folder's name, files of other types
are skipped (``.bmp``, ``.gif``, ``.jpeg``, ``.jpg``, ``.png`` are read), ``color_mode`` is
``grayscale``, ``rgb`` or ``rgba``, and ``image_size`` resizes with bilinear interpolation. Read
with Pillow rather than TensorFlow, so that a bad file is named in one line (and the spec checks
stay free of TensorFlow). Without ``image_size`` every image must have the first one's size.

A folder is read as untrusted input: Pillow decodes only the formats named here (not any it
knows, such as EPS, which runs Ghostscript), an image's size is checked from its header before
it is decoded (:data:`MAX_PIXELS`), and the folder's images together are bounded (:data:`MAX_BYTES`).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from tradeoff_search.data._source import Examples, Source
from tradeoff_search.rules import SpecError

if TYPE_CHECKING:
    from collections.abc import Callable

    from tradeoff_search.data._section import DataSection

EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
FORMATS = ("BMP", "GIF", "JPEG", "PNG")  # Pillow's names of those: no other decoder runs, whatever a file holds
# Of one image (width × height, from its header): beyond a 48-megapixel photo, below the 89 Mpx
# from which Pillow warns of a decompression bomb (and the 179 Mpx from which it refuses one).
MAX_PIXELS = 50_000_000
# Of a folder's images as the float32 arrays a study holds (also each file's size).
MAX_BYTES = 2 * 2**30
_MODES = {"grayscale": ("L", 1), "rgb": ("RGB", 3), "rgba": ("RGBA", 4)}


class Images(Source):
    """``images:FOLDER``: the images as float32 pixel values 0..255 and their class names, in a stable order."""

    kind = "images"
    form = "images:FOLDER"
    keys: ClassVar[Mapping[str, str]] = {"image_size": "take one", "color_mode": "take one"}
    rank = 3  # (height, width, channels)

    def check(self, data: DataSection, spec_file: Path) -> None:
        folder = data.located(spec_file)
        if not folder.is_dir():
            problem = "is not a folder" if folder.exists() else "not found"
            raise SpecError(spec_file, "data.source", data.source, f"a folder of images ({folder} {problem})")
        if data.image_size is not None and len(data.image_size) != 2:
            raise SpecError(spec_file, "data.image_size", list(data.image_size), "[height, width]")

    def read(self, data: DataSection, spec_file: Path) -> Examples:
        root = data.located(spec_file)

        def refuse(expected: str) -> SpecError:
            return SpecError(spec_file, "data.source", data.source, expected)

        size = data.image_size  # (height, width) or None: the first image's
        mode, channels = _MODES[data.color_mode]
        pixels: list[np.ndarray] = []
        labels: list[str] = []
        folder_digest, total = hashlib.sha256(), 0
        for path in (files := _class_files(root, refuse)):
            raw = _file_bytes(path, refuse)
            folder_digest.update(f"{path.relative_to(root).as_posix()}\0".encode() + hashlib.sha256(raw).digest())
            image = _decoded(path, raw, mode, size, refuse)
            total += image.size * 4  # as float32
            if total > MAX_BYTES:
                raise refuse(f"images of at most {MAX_BYTES / 2**30:.3g} GB in all as float32 arrays (those up to "
                             f"{path} take more; a smaller image_size or fewer images)")  # fmt: skip
            if pixels and image.shape != pixels[0].shape:
                shown, expected = ("×".join(map(str, a.shape[:2])) for a in (image, pixels[0]))
                raise SpecError(spec_file, "data.image_size", None,
                                f"[height, width] to resize to, for images of several sizes "
                                f"({path} is {shown}, {files[0]} is {expected})")  # fmt: skip
            pixels.append(image)
            labels.append(path.parent.relative_to(root).parts[0])
        x = np.stack(pixels).astype(np.float32).reshape(len(pixels), *pixels[0].shape[:2], channels)
        return Examples(x, np.asarray(labels), digest=folder_digest.hexdigest())


def _class_files(root: Path, refuse: Callable[[str], SpecError]) -> list[Path]:
    """The image files of ``root``'s class folders, class by class, each class's in name order."""
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and p.suffix.lower() in EXTENSIONS]
    stray = next((p for p in files if p.parent == root), None)
    if stray is not None:
        raise refuse(f"images in one sub-folder per class ({stray} is not in one)")
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise refuse(f"a folder with one sub-folder of images per class, at least 2 ({root} has {len(classes)})")
    per_class = {folder: [p for p in files if p.is_relative_to(folder)] for folder in classes}
    empty = next((folder for folder, found in per_class.items() if not found), None)
    if empty is not None:
        raise refuse(f"images in every class folder ({empty} has none of {', '.join(EXTENSIONS)})")
    return [path for found in per_class.values() for path in found]


def _file_bytes(path: Path, refuse: Callable[[str], SpecError]) -> bytes:
    """The file's bytes (hashed and decoded: the same), at most :data:`MAX_BYTES` of them."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_BYTES + 1)
    except OSError as error:
        raise refuse(f"readable images ({path} is not: {error.strerror})") from None
    if len(raw) > MAX_BYTES:
        raise refuse(f"image files of at most {MAX_BYTES / 2**30:.3g} GB ({path} is larger)")
    return raw


def _decoded(
    path: Path, raw: bytes, mode: str, size: tuple[int, ...] | None, refuse: Callable[[str], SpecError]
) -> np.ndarray:
    """One image's pixels (uint8, height × width [× channels]) in ``mode``, resized to ``size``."""
    from PIL import Image, UnidentifiedImageError

    bomb = f"images of at most {MAX_PIXELS // 10**6} megapixels"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw), formats=FORMATS) as image:
                pixels = image.width * image.height
                if pixels <= MAX_PIXELS:
                    image.load()
                    converted = image.convert(mode)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise refuse(f"{bomb} ({path}: {' '.join(str(error).split())[:120]})") from None
    except (OSError, UnidentifiedImageError, ValueError) as error:
        shown = " ".join(str(error).split())[:120]
        raise refuse(f"readable {', '.join(FORMATS)} images ({path} is not: {shown})") from None
    if pixels > MAX_PIXELS:
        raise refuse(f"{bomb} ({path} is {image.width}×{image.height}, {pixels / 10**6:.0f} megapixels)")
    if size is not None:
        converted = converted.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(converted)
