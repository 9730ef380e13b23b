"""One trial, end to end: the Optuna objective (screen → build → time → train → ship), training,
pruning, the quantization variants of a trained model and its staged files."""

from tradeoff_search.trial._objective import TradeoffObjective
from tradeoff_search.trial._training_device import INSTALL_HINT, describe_training, tensorflow_missing
from tradeoff_search.trial._variants import describe_modes

__all__ = ["INSTALL_HINT", "TradeoffObjective", "describe_modes", "describe_training", "tensorflow_missing"]
