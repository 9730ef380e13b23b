"""The space's largest model must fit in memory to train: checked when the spec loads, from the
upper ends of its size knobs, before any model is built."""

from __future__ import annotations

from pathlib import Path

from tradeoff_search.data import DataSection
from tradeoff_search.rules import SpecError
from tradeoff_search.spec._sections import ModelSection

# The largest model of a space, trained with Adam: weights, gradients and two moments (16 bytes
# per parameter) and the activations of a batch, kept for the backward pass.
MEMORY_LIMIT_BYTES = 4 * 2**30


def check_memory(spec_file: Path, model: ModelSection, data: DataSection, batch: int) -> None:
    """Refuse a space whose largest model would need more than ``MEMORY_LIMIT_BYTES`` to train at
    ``batch`` examples, naming the knob of the family that does."""
    features = data.features
    channels = (data.input_shape or (1,))[-1]
    steps = features // channels
    largest: dict[str, tuple[str, int, int]] = {}  # family: (knob, parameters, activations per example)
    if "mlp" in model.families.choices:
        units, layers = model.units.high, model.n_layers.high
        largest["mlp"] = ("model.units", features * units + (layers - 1) * units**2, layers * units)
    for family in ("cnn1d", "cnn2d"):
        if family in model.families.choices:
            filters, blocks, kernel = model.filters.high, model.conv_blocks.high, max(model.kernel_size.choices)
            taps = kernel ** (2 if family == "cnn2d" else 1)
            parameters = taps * filters * (channels + 2 * filters * blocks)  # + residual convolutions
            largest[family] = ("model.filters", parameters, 2 * blocks * steps * filters)
    if "gru" in model.families.choices:
        units, layers = model.gru_units.high, model.gru_layers.high
        largest["gru"] = (
            "model.gru_units",
            3 * layers * units * (channels + units + 2),
            4 * layers * steps * units,
        )
    for family, (key, parameters, activations) in largest.items():
        needed = 16 * parameters + 2 * 4 * batch * activations
        if needed > MEMORY_LIMIT_BYTES:
            value = getattr(model, key.partition(".")[2])
            raise SpecError(spec_file, key, [value.low, value.high], f"a space whose largest model fits in memory: "
                            f"the largest {family} has ~{parameters:.3g} parameters and needs ~{_bytes(needed)} "
                            f"to train at batch {batch}, over the {_bytes(MEMORY_LIMIT_BYTES)} limit")  # fmt: skip


def _bytes(count: float) -> str:
    units = ["B", "KB", "MB", "GB", "TB", "PB"]
    while count >= 1024 and len(units) > 1:
        count /= 1024
        units.pop(0)
    return f"{count:.3g} {units[0]}"
