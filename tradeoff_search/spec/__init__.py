"""The study spec: TOML → a validated, frozen :class:`StudySpec`, one rule per key, errors that
name the file, key and value; the same rules check the public API's parameters."""

from tradeoff_search.spec._sections import KB
from tradeoff_search.spec._spec import StudySpec
from tradeoff_search.spec._validation import ParameterError, as_flag, validate_params

__all__ = ["KB", "ParameterError", "StudySpec", "as_flag", "validate_params"]
