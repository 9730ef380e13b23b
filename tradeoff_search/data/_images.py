"""``images:PATH``: a folder of images, one sub-folder per class (Keras' ``image_dataset_from_directory``
layout), read into arrays of shape (rows, height, width, channels).

Keras' names and choices: the class of an image is its sub-folder's name, files of other types
are skipped (``.bmp``, ``.gif``, ``.jpeg``, ``.jpg``, ``.png`` are read), ``color_mode`` is
``grayscale``, ``rgb`` or ``rgba``, and ``image_size`` resizes with bilinear interpolation. Read
with Pillow rather than TensorFlow, so that a bad file is named in one line (and the spec checks
stay free of TensorFlow). Without ``image_size`` every image must have the first one's size.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from tradeoff_search.data._source import Examples, Source
from tradeoff_search.rules import SpecError

if TYPE_CHECKING:
    from tradeoff_search.data._section import DataSection

EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
_MODES = {"grayscale": "L", "rgb": "RGB", "rgba": "RGBA"}


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
        from PIL import Image, UnidentifiedImageError

        root, source = data.located(spec_file), data.source

        def refuse(expected: str) -> SpecError:
            return SpecError(spec_file, "data.source", source, expected)

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

        size = data.image_size  # (height, width) or None: the first image's
        mode = _MODES[data.color_mode]
        pixels: list[np.ndarray] = []
        labels: list[str] = []
        first: Path | None = None
        for folder, found in per_class.items():
            for path in found:
                try:
                    with Image.open(path) as image:
                        image.load()
                        converted = image.convert(mode)
                except (OSError, UnidentifiedImageError, ValueError) as error:
                    raise refuse(f"readable images ({path} is not: {' '.join(str(error).split())[:120]})") from None
                if size is not None:
                    converted = converted.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                elif first is None:
                    first = path
                array = np.asarray(converted, dtype=np.float32)
                if pixels and array.shape != pixels[0].shape:
                    shown = "×".join(map(str, array.shape[:2]))
                    expected = "×".join(map(str, pixels[0].shape[:2]))
                    raise SpecError(spec_file, "data.image_size", None,
                                    f"[height, width] to resize to, for images of several sizes "
                                    f"({path} is {shown}, {first} is {expected})")  # fmt: skip
                pixels.append(array)
                labels.append(folder.name)
        x = np.stack(pixels)
        return Examples(x if x.ndim == 4 else x[..., np.newaxis], np.asarray(labels))
