"""Your own builders: where they come from, which source they were, and loading them.

A spec names a builder by a target, ``package.module:function`` (imported from the Python path)
or ``path/to/file.py:function`` (relative to the spec's folder). Its source file is hashed when
the spec loads, without importing it (so spec checks stay free of TensorFlow); the study records
the path and hash, and refuses to resume under a changed source (see ``tradeoff_search.study._open``).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["BuilderSource", "load", "one_line", "record_of", "resolve"]

_FILE_MODULES = "tradeoff_search_builders"  # the package file targets are imported under


@dataclass(frozen=True)
class BuilderSource:
    """A user builder's target, resolved: its module's source file and that file's hash."""

    name: str  # the family it builds
    target: str  # as the spec writes it
    path: Path  # the source file, absolute
    function: str
    module: str | None  # the dotted module of a package target; None for a file target
    sha256: str

    def record(self) -> dict[str, str]:
        """What a study and its MLflow parent run keep of it."""
        return {"target": self.target, "path": str(self.path), "sha256": self.sha256}


def resolve(name: str, target: str, base: Path) -> BuilderSource:
    """``target`` (``module:function`` or ``file.py:function``, a file relative to ``base``) resolved
    to its source file, hashed. Nothing is imported but a package target's parent packages.

    Raises:
        ValueError: the target is malformed or its file or module does not exist (the message
            says what was expected, for a :class:`~tradeoff_search.SpecError`).
    """
    where, _, function = target.rpartition(":")
    if not where or not function.isidentifier():
        raise ValueError("module:function or path/to/file.py:function")
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where) if Path(where).is_absolute() else base / where
        if not path.is_file():
            raise ValueError(f"file.py:function with an existing file ({path} not found)")
        return BuilderSource(name, target, path.resolve(), function, None, _sha256(path))
    if not all(part.isidentifier() for part in where.split(".")):
        raise ValueError("module:function or path/to/file.py:function")
    try:
        found = importlib.util.find_spec(where)
    except ModuleNotFoundError as error:  # a parent package
        raise ValueError(f"module:function with a module on the Python path (no module {error.name})") from None
    except Exception as error:  # a parent package that raises on import
        raise ValueError(f"module:function with a module that imports (it raised {one_line(error)})") from None
    if found is None or not found.origin or not Path(found.origin).is_file():
        raise ValueError(f"module:function with a module on the Python path (no module {where})")
    return BuilderSource(name, target, Path(found.origin).resolve(), function, where, _sha256(Path(found.origin)))


def load(source: BuilderSource) -> Callable[..., Any]:
    """Import ``source``'s module (a file target as ``tradeoff_search_builders.<stem>``, with its
    folder on ``sys.path`` for its own imports, as ``python file.py`` would) and return its function.

    A builder is code: its source file is imported only if it is still the one hashed when the
    spec loaded (``source.sha256``, which a study records and checks), and a file target runs
    the very bytes hashed.

    Raises:
        ValueError: the source changed since it was hashed, the import raises, or the module has
            no such function.
    """
    try:
        raw = source.path.read_bytes()
    except OSError as error:
        raise ValueError(f"a readable source file ({source.path}: {error.strerror})") from None
    if hashlib.sha256(raw).hexdigest() != source.sha256:
        now = hashlib.sha256(raw).hexdigest()[:12]
        raise ValueError(f"the source hashed when the spec loaded ({source.path} changed since: "
                         f"sha256 {source.sha256[:12]} then, {now} now)")  # fmt: skip
    try:
        module = importlib.import_module(source.module) if source.module is not None else _import_file(source.path, raw)
    except Exception as error:  # a user's module may raise anything; it becomes one line
        raise ValueError(f"a module that imports (it raised {one_line(error)})") from None
    function = getattr(module, source.function, None)
    if function is None or not callable(function):
        defined = sorted(n for n, v in vars(module).items() if inspect.isfunction(v) and not n.startswith("_"))
        found = "not callable" if function is not None else f"none there; it defines {', '.join(defined) or 'none'}"
        raise ValueError(f"a function {source.function}(trial, input_shape, n_classes) in {source.path} ({found})")
    return function


def _import_file(path: Path, raw: bytes) -> Any:
    """The module of file ``path``, executed from ``raw`` (its bytes as hashed), once per process."""
    name = f"{_FILE_MODULES}.{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None  # a .py file always has one
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        exec(compile(raw, str(path), "exec"), module.__dict__)  # the bytes hashed, as a loader runs a file
    except BaseException:
        del sys.modules[name]
        raise
    return module


def record_of(function: Callable[..., Any]) -> dict[str, str]:
    """The record of a builder passed as a Python object (``build=``): its target, source file and
    hash when it has one (a lambda typed at a prompt has none)."""
    qualname = getattr(function, "__qualname__", type(function).__qualname__)
    record = {"target": f"{getattr(function, '__module__', '?')}:{qualname}"}
    try:
        path = Path(inspect.getsourcefile(function if inspect.isroutine(function) else type(function)) or "")
    except TypeError:  # a builtin, or an instance of a builtin class
        return record
    if path.is_file():
        record |= {"path": str(path.resolve()), "sha256": _sha256(path)}
    return record


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line(error: BaseException) -> str:
    """``Type: message`` on one line, with the builder file's line where it was raised."""
    frames = [frame for frame in inspect.getinnerframes(error.__traceback__, context=0)] if error.__traceback__ else []
    user = [f for f in frames if "tradeoff_search" not in Path(f.filename).parts and "site-packages" not in f.filename]
    where = f" at {Path(user[-1].filename).name}:{user[-1].lineno}" if user else ""
    return " ".join(f"{type(error).__name__}: {error}{where}".split())
