"""Latency backends: where a ``.tflite`` is timed, behind one small interface.

A backend takes the bytes of LiteRT flatbuffers and a :class:`~tradeoff_search.cost._harness.Setting`
and returns one :class:`~tradeoff_search.cost._harness.LatencyStats` per flatbuffer, timed side by side
with the reference model interleaved (when the setting asks for it). Two exist: this machine
(:class:`LocalBackend`) and a latency server on the target device
(:class:`~tradeoff_search.cost._device_client.DeviceBackend`). Another place to time, e.g. LiteRT's
``benchmark_model`` on an Android phone over adb, is one more class with this ``measure``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Protocol

from tradeoff_search.cost._harness import LOCAL, LatencyStats, Setting, time_flatbuffers
from tradeoff_search.cost._lock import machine_lock


class LatencyBackend(Protocol):
    """Times LiteRT flatbuffers somewhere; ``name`` is what trials record as ``device``."""

    name: str

    def measure(self, flatbuffers: Sequence[bytes], setting: Setting) -> list[LatencyStats]:
        """One :class:`LatencyStats` per flatbuffer, timed side by side."""
        ...


class LocalBackend:
    """This machine, holding its timing lock: no worker here trains while a model is timed."""

    name = LOCAL

    def measure(self, flatbuffers: Sequence[bytes], setting: Setting) -> list[LatencyStats]:
        # Converted before, loaded outside: the lock is held only to time.
        return time_flatbuffers(flatbuffers, setting, functools.partial(machine_lock, shared=False))


def latency_backend(device: str) -> LatencyBackend:
    """The backend for ``device``: ``"local"`` or the ``http://HOST:PORT`` of a latency server."""
    if device == LOCAL:
        return LocalBackend()
    from tradeoff_search.cost._device_client import DeviceBackend

    return DeviceBackend(device)
