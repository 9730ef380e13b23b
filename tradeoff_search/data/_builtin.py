"""The built-in sources: ``sklearn:NAME`` (scikit-learn's small datasets) and ``mnist1d``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tradeoff_search.data._source import Examples, Source
from tradeoff_search.rules import SpecError

if TYPE_CHECKING:
    from tradeoff_search.data._section import DataSection

# scikit-learn's datasets a spec may name, with the features of one example.
DATASETS = {"digits": 64, "breast_cancer": 30, "wine": 13, "iris": 4}


class Sklearn(Source):
    """``sklearn:NAME``: ``sklearn.datasets.load_NAME``, NAME one of :data:`DATASETS`."""

    kind = "sklearn"
    form = "sklearn:NAME"

    def features(self, data: DataSection) -> int | None:
        return DATASETS.get(data.location)

    def check(self, data: DataSection, spec_file: Path) -> None:
        if data.location not in DATASETS:
            raise SpecError(spec_file, "data.source", data.source, f"sklearn:NAME with NAME in {list(DATASETS)}")

    def read(self, data: DataSection, spec_file: Path) -> Examples:
        import sklearn.datasets

        x, y = getattr(sklearn.datasets, f"load_{data.location}")(return_X_y=True)
        return Examples(np.asarray(x, dtype=np.float64), np.asarray(y))


class Mnist1d(Source):
    """``mnist1d``: MNIST-1D (Greydanus 2020), generated here by its package with its defaults:
    4000 train and 1000 test signals of 40 samples, 10 classes. Never its download path. It keeps
    its own test set (as its paper does; ``test_fraction`` does not apply)."""

    kind = "mnist1d"
    form = "mnist1d"

    def features(self, data: DataSection) -> int | None:
        return 40

    def read(self, data: DataSection, spec_file: Path) -> Examples:
        from mnist1d.data import get_dataset_args, make_dataset

        generated = make_dataset(get_dataset_args())
        x = np.concatenate([generated["x"], generated["x_test"]])
        return Examples(x, np.concatenate([generated["y"], generated["y_test"]]), own_test=len(generated["y_test"]))
