"""Where training runs: on a GPU when TensorFlow sees one, else on the CPU.

TensorFlow places training on its first GPU by itself; this module says so (``run`` prints it
first) and lets the GPU's memory grow as needed, so that several worker processes can share one.
Latency is never timed on the GPU: LiteRT runs on the CPU (or on the latency server's device),
and the ``tf`` runtime is pinned to the CPU (see ``_latency``). ``CUDA_VISIBLE_DEVICES=""``
hides the GPUs, and training runs on the CPU.
"""

from __future__ import annotations

import functools
import importlib.util
import os

INSTALL_HINT = 'pip install -e ".[cpu]" (tensorflow-cpu), or ".[gpu]" (tensorflow with CUDA), or your own tensorflow'


def tensorflow_missing() -> bool:
    """Whether no TensorFlow package is installed (``tradeoff_search`` requires none of them)."""
    return importlib.util.find_spec("tensorflow") is None


@functools.cache
def training_device() -> str:
    """``"GPU:0 (name)"`` when TensorFlow sees a GPU (which training then uses), else ``"CPU"``.

    Called before TensorFlow is first imported, it also lets GPU memory grow as needed, here and in
    the worker processes started later (``TF_FORCE_GPU_ALLOW_GROWTH``): workers share one GPU.
    """
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "CPU"
    name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    return f"GPU:0 ({name})"


def describe_training() -> str:
    """The line ``run`` begins with."""
    device = training_device()
    if device == "CPU":
        return "training on the CPU (TensorFlow sees no GPU)"
    return f"training on {device} (latency is never timed on the GPU)"
