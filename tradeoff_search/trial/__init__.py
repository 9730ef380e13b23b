"""One trial, end to end: the Optuna objective (screen → build → time → train → ship), training,
pruning, the quantization variants of a trained model and its staged files."""

from tradeoff_search.trial._objective import TradeoffObjective

__all__ = ["TradeoffObjective"]
