"""One trial, end to end: the Optuna objective (build → time → train → ship), training,
pruning, and the quantization variants of a trained model."""

from tradeoff_search.trial._objective import TradeoffObjective

__all__ = ["TradeoffObjective"]
