"""The latency server (``device serve``): times the ``.tflite`` bytes it is sent, in a child
process, with the same harness as local timing; imports neither TensorFlow nor MLflow nor Optuna."""

from tradeoff_search.device._server import is_loopback, read_token, serve

__all__ = ["is_loopback", "read_token", "serve"]
