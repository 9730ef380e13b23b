"""The public API's parameters, checked by the spec's rules (as scikit-learn's ``validate_params``).

A function declares one rule per parameter (see ``tradeoff_search.rules``) with
:func:`validate_params`; a bad argument raises :class:`ParameterError`, which names the function
and its parameter (``run_study: workers=-1: expected …``). The CLI maps its flags to parameters
and shows the flag instead (:func:`as_flag`: ``--workers: workers = -1: expected …``), in the one
shape of :class:`SpecError`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from tradeoff_search.rules import Rule, RunError, SpecError, show

P = ParamSpec("P")
R = TypeVar("R")


class ParameterError(SpecError):
    """A bad argument of a public function: names the function, the parameter, the value and what
    fits. The CLI shows the flag that gives the parameter instead (see :func:`as_flag`)."""

    def __init__(self, function: str, parameter: str, value: Any, expected: str) -> None:
        super().__init__(function, parameter, value, expected)
        self.args = (f"{function}: {parameter}={show(value)}: expected {self.expected}",)


def validate_params(**rules: Rule) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Check the decorated function's arguments by ``rules`` (one per parameter) before it runs;
    the arguments pass unchanged."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        signature = inspect.signature(function)
        name = function.__qualname__.removesuffix(".__init__")
        assert set(rules) <= set(signature.parameters), f"{name}: rules for parameters it does not have"

        @functools.wraps(function)
        def checked(*args: P.args, **kwargs: P.kwargs) -> R:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            for parameter, rule in rules.items():
                value = bound.arguments[parameter]
                try:
                    rule.parse(value, Path(name), parameter)
                except SpecError as error:
                    raise ParameterError(name, parameter, value, error.expected) from None
            return function(*args, **kwargs)

        return checked

    return decorate


def as_flag(error: SpecError | RunError, flags: Mapping[str, str]) -> SpecError | RunError:
    """``error`` as the CLI shows it: a :class:`ParameterError` of a parameter that a flag gives
    names that flag (``flags``: parameter → flag); any other error as it is."""
    if isinstance(error, ParameterError) and error.key in flags:
        return SpecError(flags[error.key], error.key, error.value, error.expected)
    return error
