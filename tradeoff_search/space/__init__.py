"""The search space as plain data, the builder contract ``build(trial, input_shape, n_classes)``,
and the built-in families as builders of it."""
