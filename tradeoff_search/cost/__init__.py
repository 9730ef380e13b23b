"""What a candidate costs as shipped: the conversion to LiteRT in each quantization mode, and its
latency, timed locally or on a latency server."""

from tradeoff_search.cost._device_client import DeviceUnreachable
from tradeoff_search.cost._harness import LatencyStats
from tradeoff_search.cost._latency import measure_latency
from tradeoff_search.cost._lock import lock_path

__all__ = ["DeviceUnreachable", "LatencyStats", "lock_path", "measure_latency"]
