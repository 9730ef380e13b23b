"""Data sources → split, scaled arrays (:class:`Dataset`): the ``[data]`` section, checked by the
kind of source it names (one class per kind, which also reads it); text columns one-hot encoded,
image folders read."""

from tradeoff_search.data._dataset import Dataset, DataSpec, load_dataset
from tradeoff_search.data._encoding import preprocessing_file
from tradeoff_search.data._section import DataSection

__all__ = ["DataSection", "DataSpec", "Dataset", "load_dataset", "preprocessing_file"]
