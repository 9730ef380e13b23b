"""What a process of ours shares with the one that supervises it: quiet library logs, native
output sent to a file, the status line a worker writes to its pool (with time limits on work
nothing in the process can interrupt), SIGTERM taken as Ctrl-C, and who a process is beyond its pid."""

from tradeoff_search.process._channel import tell_pool, time_limit
from tradeoff_search.process._identity import process_identity
from tradeoff_search.process._logs import native_output_to, quiet_libraries
from tradeoff_search.process._signals import stopped_like_ctrl_c

__all__ = ["native_output_to", "process_identity", "quiet_libraries", "stopped_like_ctrl_c", "tell_pool", "time_limit"]
