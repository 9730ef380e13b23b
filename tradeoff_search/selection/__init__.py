"""Choosing the model to ship: pick from the (re-timed) front, test, export, register."""

from tradeoff_search.selection._select import Selection, select_model

__all__ = ["Selection", "select_model"]
