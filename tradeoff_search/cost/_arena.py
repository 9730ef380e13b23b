"""The minimum tensor arena of a ``.tflite`` on the micro runtime, found by probing: run only in
the RAM helper process (``_memory_process``), which imports neither TensorFlow nor LiteRT.

- The runtime's own report (``Arena allocation total N bytes`` of its recording allocator, i.e.
  ``MicroInterpreter::arena_used_bytes()``) is the arena in use *after* allocating: the planner's
  temporary buffers are freed by then, so the minimum is 8 bytes below it (arena-end alignment)
  to 35 % above it (an unrolled GRU of 333 nodes; up to 19 % for int8 MLPs). It seeds the search:
  sizes from it upwards bracket the minimum, then bisection to the byte.
- A too-small arena usually raises ``RuntimeError('TFLM failed to allocate tensors')``, but at
  some sizes the native code crashes (always below ~460 bytes, and in bands during a failed
  Prepare). Each probe therefore allocates and invokes in a forked child, whose exit status is
  the verdict; a crash or a timeout is "does not fit". The runtime prints why (an op without a
  kernel, out of arena) with C's ``fprintf`` on descriptor 2: the child sends descriptors 1 and 2
  to a file, which is how those lines are read.
- Only the first probe, at 64 MiB, tells a model the runtime cannot run: at small arenas the same
  "failed to prepare" line means out of arena.
"""

from __future__ import annotations

import os
import re
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import IO

import numpy as np
from tflite_micro import runtime
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

from tradeoff_search.cost._memory import ARENA_CEILING as CEILING
from tradeoff_search.cost._memory import NotDeployable, RamMeasurement

try:  # the wheel's native wrapper: the public Interpreter re-parses the whole flatbuffer in Python
    from tflite_micro.python.tflite_micro import _runtime  # on every construction (0.5-45 ms vs < 1 ms)
except ImportError:  # pragma: no cover - another layout of the wheel: the public API does the same
    _runtime = None

PROBE_SECONDS = 10  # a probe's child is ended by SIGALRM (a model whose loop never ends)
_BRACKET = (1.0, 1.125, 1.25, 1.5, 2.0, 4.0)  # multiples of the reported bytes tried upwards
_BELOW_REPORTED = 64  # the minimum was never more than 8 bytes below the report: start 64 below
_OP_NAMES = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
_REPORTED = re.compile(r"Arena allocation total (\d+) bytes")
_NO_KERNEL = re.compile(r"Didn't find op for builtin opcode '(\w+)'|Failed to get registration from op code (\w+)")
_NODE = re.compile(r"Node (\S+) \(number \d+\) failed to (prepare|invoke)")
_OUT_OF_ARENA = ("Failed to allocate", "Too many buffers", "Failed starting model allocation", "bytes required")
_FITS, _NO_ALLOCATION, _NO_INVOKE, _OTHER = 0, 1, 2, 3  # a probe child's exit codes


@dataclass(frozen=True)
class _Probe:
    fits: bool
    log: str  # what the runtime printed
    crashed: bool = False  # signal or timeout
    invoke_failed: bool = False


class _Prober:
    """Allocates and invokes one model at given arena sizes, each time in a forked child."""

    def __init__(self, flatbuffer: bytes, log: IO[bytes]) -> None:
        self.flatbuffer = flatbuffer
        self.inputs = schema.Model.GetRootAs(flatbuffer, 0).Subgraphs(0).InputsLength()
        self.variables = _resource_variables(flatbuffer)
        self.log = log
        self.count = 0

    def __call__(self, arena: int, report: bool = False) -> _Probe:
        self.count += 1
        self.log.seek(0)
        self.log.truncate()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = _OTHER
            try:
                signal.alarm(PROBE_SECONDS)  # its default action ends the child
                os.dup2(self.log.fileno(), 1)
                os.dup2(self.log.fileno(), 2)
                code = self._allocate_and_invoke(arena, report)
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        self.log.seek(0)
        text = self.log.read().decode(errors="replace")
        if os.WIFSIGNALED(status):
            number = os.WTERMSIG(status)
            why = f"no answer in {PROBE_SECONDS} s" if number == signal.SIGALRM else f"killed by signal {number}"
            return _Probe(False, f"{text}\n({why})", crashed=True)
        code = os.WEXITSTATUS(status)
        return _Probe(code == _FITS, text, invoke_failed=code == _NO_INVOKE)

    def _allocate_and_invoke(self, arena: int, report: bool) -> int:
        """In the child: allocate at ``arena`` bytes, invoke once on zero inputs of the model's own
        shapes and types (the arena does not depend on the values)."""
        try:
            if _runtime is not None:
                recording = _runtime.PythonInterpreterConfig.kAllocationRecording
                wrapper = _runtime.InterpreterWrapper(self.flatbuffer, [], arena, self.variables, recording, 0)
            else:  # pragma: no cover
                wrapper = runtime.Interpreter.from_bytes(self.flatbuffer, arena_size=arena)._interpreter
        except RuntimeError:
            return _NO_ALLOCATION
        try:
            for index in range(self.inputs):
                details = wrapper.GetInputTensorDetails(index)
                wrapper.SetInputTensor(np.zeros(details["shape"], details["dtype"]), index)
            wrapper.Invoke()
        except RuntimeError:
            return _NO_INVOKE
        except Exception as error:
            os.write(2, f"{type(error).__name__}: {error}\n".encode())
            return _OTHER
        if report:
            wrapper.PrintAllocations()
        return _FITS


def minimum_arena(flatbuffer: bytes) -> RamMeasurement | NotDeployable:
    """The smallest arena with which the micro runtime allocates and invokes ``flatbuffer`` (to
    the byte), or why it cannot run it. Forks: call it only in a single-threaded process.

    Raises:
        RuntimeError: this process runs other threads (a fork would copy their locks mid-use).
    """
    if threading.active_count() > 1:
        raise RuntimeError("minimum_arena forks a child per probe: call it in a single-threaded process")
    start = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        probe = _Prober(flatbuffer, log)
        first = probe(CEILING, report=True)  # malloc'd, not zeroed: only what is used is touched
        if not first.fits:
            return _refusal(first, flatbuffer)
        reported = int(found[1]) if (found := _REPORTED.search(first.log)) else 0
        low, high = _bracket(probe, reported)
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (low, middle) if probe(middle).fits else (middle, high)
    return RamMeasurement(high, len(flatbuffer), reported, probe.count, time.perf_counter() - start)


def _bracket(probe: _Prober, reported: int) -> tuple[int, int]:
    """Sizes ``(low, high)``: ``low`` does not fit, ``high`` does, from the runtime's report up."""
    low = max(reported - _BELOW_REPORTED, 0)
    if probe(low).fits:  # never seen: then search from nothing
        return 0, low
    for factor in _BRACKET:
        size = int(reported * factor) + (16 if factor > 1 else 0)
        if probe(size).fits:
            return low, size
        low = size
    return low, CEILING


def _resource_variables(flatbuffer: bytes) -> int:
    """The model's resource variables, which the runtime must be told of; counted by the wheel
    (it unpacks the whole model in Python) only when it has a ``VAR_HANDLE`` operator at all."""
    if "VAR_HANDLE" not in model_ops(flatbuffer):
        return 0
    return int(runtime.count_resource_variables(flatbuffer))


def model_ops(flatbuffer: bytes) -> list[str]:
    """The model's operator names: builtin names, or a ``CUSTOM`` operator's own code."""
    model = schema.Model.GetRootAs(flatbuffer, 0)
    names = []
    for index in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(index)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        custom = code.CustomCode()
        if builtin == schema.BuiltinOperator.CUSTOM and custom:
            names.append(custom.decode(errors="replace"))
        else:
            names.append(_OP_NAMES.get(builtin, str(builtin)))
    return names


def _refusal(probe: _Probe, flatbuffer: bytes) -> NotDeployable:
    """Why the runtime could not run the model at the ceiling, naming the operator where it does."""
    lines = [line.strip() for line in probe.log.splitlines() if line.strip()]
    reason = " | ".join(dict.fromkeys(lines))[:500] or "no message"
    if found := _NO_KERNEL.search(probe.log):
        op = found[1] or found[2]
        if op == "CUSTOM":  # the runtime does not name a custom operator: the flatbuffer does
            op = ",".join(name for name in model_ops(flatbuffer) if name not in _OP_NAMES.values()) or op
        return NotDeployable(op, "load", reason)
    if found := _NODE.search(probe.log):
        return NotDeployable(found[1], found[2], reason)
    if probe.crashed:
        return NotDeployable(None, "crash", reason)
    if any(marker in probe.log for marker in _OUT_OF_ARENA):
        return NotDeployable(None, "arena", f"needs more than {CEILING} bytes: {reason}")
    return NotDeployable(None, "invoke" if probe.invoke_failed else "prepare", reason)
