"""``npz:PATH``: a NumPy archive of plain arrays ``x`` (rows, features...) and ``y`` (one label per row)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tradeoff_search.data._source import Examples, Source, existing_file, read_bytes
from tradeoff_search.rules import SpecError

if TYPE_CHECKING:
    from tradeoff_search.data._section import DataSection


class Npz(Source):
    """``npz:PATH``, read without unpickling anything."""

    kind = "npz"
    form = "npz:PATH"

    def check(self, data: DataSection, spec_file: Path) -> None:
        existing_file(data, spec_file)

    def read(self, data: DataSection, spec_file: Path) -> Examples:
        import io
        import zipfile

        source = data.source
        raw, digest = read_bytes(data, spec_file)
        if not zipfile.is_zipfile(io.BytesIO(raw)):
            raise SpecError(spec_file, "data.source", source, "a NumPy .npz archive (this file is not one)")
        try:
            with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
                names = archive.files
                arrays = {name: archive[name] for name in ("x", "y") if name in names}
        # Object arrays are refused (loading them would unpickle); a damaged member fails its CRC; a
        # header may claim more memory than there is.
        except (OSError, ValueError, zipfile.BadZipFile, MemoryError) as error:
            raise SpecError(spec_file, "data.source", source, f"an .npz of plain arrays ({error})") from None
        if len(arrays) != 2:
            raise SpecError(spec_file, "data.source", source, f"an .npz with arrays 'x' and 'y' (found {names})")
        x, y = arrays["x"], arrays["y"]
        problem = _problem(x, y)
        if problem is not None:
            raise SpecError(spec_file, "data.source", source, problem)
        return Examples(x.astype(np.float64), y, digest=digest)


def _problem(x: np.ndarray, y: np.ndarray) -> str | None:
    """What ``x`` and ``y`` are expected to be and are not; None if they are."""
    if not all(isinstance(a, np.ndarray) for a in (x, y)):  # a member that is not a .npy file
        return "'x' and 'y' saved by numpy.savez"
    if x.ndim < 2 or 0 in x.shape[1:]:
        return f"'x' of shape (rows, features...), found {x.shape}"
    if y.ndim != 1:
        return f"'y' of one label per row, shape (rows,), found {y.shape}"
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x) or not np.all(np.isfinite(x)):
        return "finite real numeric features in 'x'"
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        return "labels in 'y' without NaN"
    if len(x) != len(y):
        return f"as many labels as rows ({len(y)} vs {len(x)})"
    return None
