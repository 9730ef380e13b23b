"""Write scikit-learn's digits as PNG files, one folder per class, for ``studies/digits_images.toml``.

    python studies/make_digits_images.py            # studies/data/digits_images/0/0000.png, …

The 8×8 images (values 0..16) become 8-bit grayscale PNGs (0..255). Nothing is downloaded: the
digits ship with scikit-learn.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "digits_images"


def write_digits(out: Path, per_class: int | None = None) -> int:
    """Write the digits (at most ``per_class`` of each) under ``out/<digit>/``; returns how many."""
    digits = load_digits()
    written = 0
    for digit in range(10):
        folder = out / str(digit)
        folder.mkdir(parents=True, exist_ok=True)
        for i, index in enumerate(np.flatnonzero(digits.target == digit)[:per_class]):
            pixels = np.round(digits.images[index] * (255 / 16)).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(folder / f"{i:04d}.png")
            written += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"folder to write (default: {DEFAULT_OUT})")
    parser.add_argument("--per-class", type=int, help="at most this many images of each digit (default: all)")
    args = parser.parse_args()
    print(f"wrote {write_digits(args.out, args.per_class)} images under {args.out}")


if __name__ == "__main__":
    main()
