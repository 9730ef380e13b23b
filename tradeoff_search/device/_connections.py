"""The latency server's connections: accepted, read and answered by one thread over a selector.

A thread per connection (``ThreadingHTTPServer``) lets whoever opens connections and sends them
slowly hold a thread and a file descriptor each until the process has none left, and the token
is only checked once a head is complete. Here one thread watches every connection without
blocking on any, so a slow one costs a few hundred bytes; long-lived servers do the same:

- at most ``cap`` connections at once, below the process's file-descriptor limit; at the cap a new
  connection makes room by closing the oldest one that has not sent its head yet, so a client that
  sends its request at once is served however many slow ones are held open;
- one deadline per request, ``client_timeout`` from the connection for its head (the body's time
  is what is left of it, counted once the timing slot is granted: see ``_timing``);
- the token and the rest of the head are checked as soon as the head is complete, before a byte
  of the body is read; the request is answered here or handed to the timing queue;
- every answer is written without blocking, then the connection is closed, after reading and
  dropping for a moment what the client still sends (a lingering close: closing a socket with
  unread data would reset the connection and could lose the answer on the client's side).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus

from tradeoff_search.device._http import FAILED, MAX_HEAD_BYTES, Head, RequestError, parse_head, refusal

_logger = logging.getLogger(__name__)

RESERVED_FDS = 32  # the listener, the selector, pipes to the timing process, logs, imports
_LINGER_SECONDS = 2.0
_SCAN_SECONDS = 0.05  # how often deadlines are checked while connections are open
_ACCEPT_BURST = 64  # accepted in a row before the heads already open get their turn
_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
HEAD, WRITE, LINGER = "head", "write", "linger"


@dataclass(eq=False)
class Connection:
    """One client's connection: what it sent so far and where it is in its one request."""

    sock: socket.socket
    address: str
    deadline: float  # of its head, then of its answer's writing, then of its closing
    received: bytearray = field(default_factory=bytearray)  # once the head is parsed, the body's start
    state: str = HEAD
    request: str = "-"  # the request line, for the log
    outgoing: bytes = b""
    events: int = 0  # what the selector watches it for (0: not registered)


# What answers a complete head: a status and the answer's bytes, or ``None`` once the connection
# is handed to the timing queue (which gives it back through :meth:`ConnectionLoop.finish`).
Handler = Callable[[Head, Connection], "tuple[HTTPStatus, bytes] | None"]


class ConnectionLoop:
    """Accepts, reads heads, writes answers and closes, on the thread that calls :meth:`run`."""

    def __init__(self, listener: socket.socket, cap: int, client_timeout: float) -> None:
        self.cap, self.client_timeout = cap, client_timeout
        self._listener = listener
        self._selector = selectors.DefaultSelector()
        self._wake, self._waker = socket.socketpair()
        for sock in (listener, self._wake, self._waker):
            sock.setblocking(False)
        self._selector.register(listener, selectors.EVENT_READ)
        self._selector.register(self._wake, selectors.EVENT_READ)
        self._connections: dict[socket.socket, Connection] = {}  # in the order they came
        self._handed = 0  # connections with the timing queue: counted, not watched
        self._finished: collections.deque[tuple[Connection, HTTPStatus, bytes]] = collections.deque()
        self._paused_until: float | None = None  # accepting, after the process ran out of descriptors

    def run(self, handle: Handler) -> None:
        """Serve until interrupted."""
        next_scan = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_scan:
                self._expire(now)
                next_scan = now + _SCAN_SECONDS
            timeout = next_scan - now if self._connections or self._paused_until is not None else None
            for key, _ in self._selector.select(timeout):
                if key.fileobj is self._listener:
                    self._accept()
                elif key.fileobj is self._wake:
                    self._take_back()
                else:
                    self._on_ready(key.data, handle)

    def finish(self, connection: Connection, status: HTTPStatus, payload: bytes) -> None:
        """Answer a connection handed to the timing queue (from the timing thread)."""
        self._finished.append((connection, status, payload))
        with contextlib.suppress(BlockingIOError):  # full: the loop has wake-ups pending already
            self._waker.send(b"\0")

    def close(self) -> None:
        for connection in list(self._connections.values()):
            self._close(connection)
        for sock in (self._listener, self._wake, self._waker):
            sock.close()
        self._selector.close()

    def _accept(self) -> None:
        for _ in range(_ACCEPT_BURST):
            try:
                sock, address = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as error:
                if error.errno in _OUT_OF_DESCRIPTORS and self._evict():
                    continue
                if error.errno != errno.ECONNABORTED:  # else: gone before we took it
                    self._pause_accepting()  # not a busy loop on a listener that stays readable
                    return
                continue
            sock.setblocking(False)
            if len(self._connections) + self._handed >= self.cap and not self._evict():
                sock.close()  # every connection is a request being timed or answered
                continue
            connection = Connection(sock, str(address[0]), time.monotonic() + self.client_timeout)
            self._connections[sock] = connection
            self._watch(connection, selectors.EVENT_READ)

    def _evict(self) -> bool:
        """Close the oldest connection that has not sent its head yet, or is closing anyway."""
        for connection in self._connections.values():
            if connection.state != WRITE:
                self._close(connection)
                return True
        return False

    def _pause_accepting(self) -> None:
        self._selector.unregister(self._listener)
        self._paused_until = time.monotonic() + 0.1

    def _on_ready(self, connection: Connection, handle: Handler) -> None:
        if connection.state == WRITE:
            self._write(connection)
            return
        try:
            chunk = connection.sock.recv(MAX_HEAD_BYTES)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:  # the client closed (or reset) its side
            self._close(connection)
        elif connection.state == HEAD:
            connection.received += chunk
            self._read_head(connection, handle)
        # LINGER: dropped

    def _read_head(self, connection: Connection, handle: Handler) -> None:
        end = connection.received.find(b"\r\n\r\n")
        if end < 0 and len(connection.received) <= MAX_HEAD_BYTES:
            return
        self._unwatch(connection)
        answered: tuple[HTTPStatus, bytes] | None
        try:
            if end < 0 or end > MAX_HEAD_BYTES:
                raise RequestError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                                   f"the request line and headers take more than {MAX_HEAD_BYTES} bytes")  # fmt: skip
            head = parse_head(bytes(connection.received[:end]))
            connection.request, connection.received = str(head), connection.received[end + 4 :]
            answered = handle(head, connection)
        except RequestError as error:
            answered = error.status, refusal(error)
        except Exception:  # a bug: in the log, answered, and the loop serves on
            _logger.exception("answering a request failed")
            answered = HTTPStatus.INTERNAL_SERVER_ERROR, FAILED
        if answered is None:  # the timing queue has it
            del self._connections[connection.sock]
            self._handed += 1
        else:
            self._answer(connection, *answered)

    def _take_back(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake.recv(4096):
                pass
        while self._finished:
            connection, status, payload = self._finished.popleft()
            self._handed -= 1
            connection.sock.setblocking(False)
            self._connections[connection.sock] = connection
            self._answer(connection, status, payload)

    def _answer(self, connection: Connection, status: HTTPStatus, payload: bytes) -> None:
        _logger.info('%s "%s" %d', connection.address, connection.request, status)  # never a header
        connection.state, connection.outgoing = WRITE, payload
        connection.deadline = time.monotonic() + self.client_timeout
        self._write(connection)

    def _write(self, connection: Connection) -> None:
        try:
            sent = connection.sock.send(connection.outgoing)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._close(connection)
            return
        connection.outgoing = connection.outgoing[sent:]
        if connection.outgoing:
            self._watch(connection, selectors.EVENT_WRITE)
            return
        try:
            connection.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(connection)
            return
        connection.state, connection.deadline = LINGER, time.monotonic() + _LINGER_SECONDS
        self._watch(connection, selectors.EVENT_READ)

    def _expire(self, now: float) -> None:
        if self._paused_until is not None and now >= self._paused_until:
            self._paused_until = None
            self._selector.register(self._listener, selectors.EVENT_READ)
        for connection in [c for c in self._connections.values() if c.deadline <= now]:
            if connection.state == HEAD:
                self._unwatch(connection)
                error = RequestError(HTTPStatus.REQUEST_TIMEOUT,
                                     f"the request did not arrive within {self.client_timeout:g} s")  # fmt: skip
                self._answer(connection, error.status, refusal(error))
            else:
                self._close(connection)

    def _watch(self, connection: Connection, events: int) -> None:
        if connection.events:
            self._selector.modify(connection.sock, events, connection)
        else:
            self._selector.register(connection.sock, events, connection)
        connection.events = events

    def _unwatch(self, connection: Connection) -> None:
        if connection.events:
            self._selector.unregister(connection.sock)
            connection.events = 0

    def _close(self, connection: Connection) -> None:
        self._unwatch(connection)
        self._connections.pop(connection.sock, None)
        connection.sock.close()
