"""Who a process is beyond its pid, which the system hands out again: this boot of this machine
and the moment the process started (Linux's ``/proc``; elsewhere nobody can tell)."""

from __future__ import annotations

import os
from pathlib import Path


def process_identity(pid: int | None = None) -> str | None:
    """``BOOT_ID START`` of process ``pid`` (this one by default): the kernel's id of this boot and
    the process's start time in clock ticks since then; None without ``/proc`` or once it has ended."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="utf-8").strip()
        stat = Path(f"/proc/{os.getpid() if pid is None else pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after its name, which may hold spaces and parentheses
    return f"{boot} {fields[19]}" if len(fields) > 19 else None  # field 22 of proc(5): starttime
