"""The worker ↔ pool messages: each written by tell_pool and read by the pool's Inbox as it was
sent, through a real pipe; lines that hold no message are left out."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tradeoff_search.process._channel import (
    STATUS_FD,
    Done,
    Failed,
    Inbox,
    Limit,
    Message,
    Ready,
    Retire,
    decode,
    encode,
    tell_pool,
    time_limit,
)

MESSAGES = [Ready(), Retire(), Failed("MLflow: the server http://127.0.0.1:9 does not answer"),
            Limit(5.0, "the conversion to LiteRT (int8)"), Done()]  # fmt: skip


@pytest.fixture
def inbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbox]:
    """The pool's end of a real status pipe, this process as its worker."""
    box = Inbox()
    monkeypatch.setenv(STATUS_FD, str(box.write))
    yield box
    box.close()


@pytest.mark.parametrize("message", MESSAGES, ids=lambda message: type(message).__name__)
def test_each_message_reads_as_it_was_written(message: Message) -> None:
    assert decode(encode(message)) == message


def test_the_wire_form_is_a_line_of_words() -> None:  # what benchmarks and older workers write
    assert [encode(m) for m in MESSAGES] == [
        "ready",
        "retire",
        "failed MLflow: the server http://127.0.0.1:9 does not answer",
        "limit 5 the conversion to LiteRT (int8)",
        "done",
    ]


def test_the_pool_reads_what_a_worker_tells_it(inbox: Inbox) -> None:
    for message in MESSAGES:
        tell_pool(message)
    assert inbox.received() == [(os.getpid(), message) for message in MESSAGES]
    assert inbox.received() == []


def test_a_multi_line_reason_is_one_line_and_a_long_one_is_cut(inbox: Inbox) -> None:
    tell_pool(Failed("disk full:\n  mlruns/optuna.db"))
    tell_pool(Failed("x" * 2000))
    (_, short), (_, long) = inbox.received()
    assert short == Failed("disk full: mlruns/optuna.db")
    assert isinstance(long, Failed) and 400 < len(long.reason) < 512


def test_lines_that_hold_no_message_are_left_out_and_a_partial_line_waits(inbox: Inbox) -> None:
    os.write(inbox.write, b"12 hello\nnot-a-pid ready\n7 limit soon conversion\n8 re")
    assert inbox.received() == []
    os.write(inbox.write, b"tire\n")
    assert inbox.received() == [(8, Retire())]


def test_a_time_limit_tells_the_pool_around_its_work(inbox: Inbox) -> None:
    with time_limit(5, "the conversion"):
        assert inbox.received() == [(os.getpid(), Limit(5, "the conversion"))]
    assert inbox.received() == [(os.getpid(), Done())]
    with time_limit(None, "the conversion"):
        pass
    assert inbox.received() == []


def test_without_a_pool_nothing_is_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STATUS_FD, raising=False)
    tell_pool(Ready())  # no pipe, no error
    with time_limit(5, "the conversion"):
        pass
