"""``[data]``: where the examples come from and how they are split; its keys checked together
with the kind of source that reads them."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from tradeoff_search.data._source import Source
from tradeoff_search.data._sources import SOURCES, forms, source_of
from tradeoff_search.rules import FRACTION, SEED, Interval, Scalar, Section, Shape, SpecError, Strings, setting, show


@dataclass(frozen=True)
class DataSection(Section):
    """``[data]``: where the examples come from and how they are split."""

    source: str = setting(Scalar(str))
    target: str | None = setting(Scalar(str), None)
    validation_fraction: float = setting(Scalar(float, FRACTION), 0.2)
    test_fraction: float = setting(Scalar(float, FRACTION), 0.2)
    split_seed: int = setting(Scalar(int, SEED), 0)
    # Each example's shape, e.g. [40, 1] for a signal or [8, 8, 1] for an image (default: flat)
    input_shape: tuple[int, ...] | None = setting(Shape(), None)
    scaling: str = setting(Scalar(str, choices=("standard", "minmax", "none")), "standard")
    class_weight: str = setting(Scalar(str, choices=("none", "balanced")), "none")
    # csv: a missing value is refused ("error") or filled from the train split ("impute")
    missing: str = setting(Scalar(str, choices=("error", "impute")), "error")
    # csv: cell values that mean missing besides empty ones (e.g. ["?"]): then refused or imputed as missing says
    missing_values: tuple[str, ...] = setting(Strings("missing-value markers"), ())
    # csv: columns read as text (categories) even where they hold numbers
    text_columns: tuple[str, ...] = setting(Strings("column names"), ())
    # csv: indicators per text column: the most frequent categories and one "other"
    max_categories: int = setting(Scalar(int, Interval(2, 1000)), 16)
    # images: [height, width] to resize every image to (default: their own size, which must be one)
    image_size: tuple[int, ...] | None = setting(Shape(), None)
    color_mode: str = setting(Scalar(str, choices=("grayscale", "rgb", "rgba")), "rgb")  # images

    @property
    def location(self) -> str:
        """What follows ``kind:`` in ``source`` (a name, a file, a folder)."""
        return self.source.partition(":")[2]

    def located(self, spec_file: Path) -> Path:
        """A ``csv:``/``npz:`` source's file or an ``images:`` folder, a relative path taken from
        the folder of ``spec_file``."""
        location = Path(self.location)
        return location if location.is_absolute() else spec_file.parent / location

    @property
    def source_kind(self) -> Source:
        """The kind of source that reads this section (``sklearn``, ``csv``, …)."""
        source = source_of(self.source)
        assert source is not None, f"data.source {self.source!r} is checked when the spec loads"
        return source

    @property
    def rank(self) -> int:
        """Dimensions of one example: ``input_shape``'s, else the source's (images 3, others flat)."""
        return len(self.input_shape) if self.input_shape else self.source_kind.rank

    @property
    def features(self) -> int:
        """Features of one example as far as the spec tells: a built-in source's own, else those
        of ``input_shape`` (1 without it: a file's are unknown until it is read)."""
        return self.source_kind.features(self) or math.prod(self.input_shape or (1,))

    def check(self, spec_file: Path) -> None:
        """The splits leave rows to train on; the source is of a known kind, and every key fits it."""
        if self.validation_fraction + self.test_fraction >= 1:
            expected = f"validation_fraction + test_fraction < 1 (test_fraction = {self.test_fraction})"
            raise SpecError(spec_file, "data.validation_fraction", self.validation_fraction, expected)
        source = source_of(self.source)
        if source is None:
            raise SpecError(spec_file, "data.source", self.source, forms())
        source.check(self, spec_file)
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for other in SOURCES.values():
            for key, what in other.keys.items():
                value = getattr(self, key)
                if key not in source.keys and value != defaults[key]:
                    default = f"no {key}" if defaults[key] is None else show(defaults[key])
                    raise SpecError(spec_file, f"data.{key}", value, f"{default} (only {other.kind}: sources {what})")
