"""Data sources → split, scaled arrays (:class:`Dataset`); text columns one-hot encoded, image folders read."""

from tradeoff_search.data._dataset import Dataset, load_dataset

__all__ = ["Dataset", "load_dataset"]
