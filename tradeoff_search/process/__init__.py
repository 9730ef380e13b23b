"""What a process of ours shares with the one that supervises it: quiet library logs, native
output sent to a file, and the status line a worker writes to its pool (with time limits on work
nothing in the process can interrupt)."""

from tradeoff_search.process._channel import tell_pool, time_limit
from tradeoff_search.process._logs import native_output_to, quiet_libraries

__all__ = ["native_output_to", "quiet_libraries", "tell_pool", "time_limit"]
