"""Stores: every password SQLAlchemy would send is hidden wherever a URL is shown; SQLite files are
looked into through SQLite, read-only."""

from __future__ import annotations

import sqlite3
import stat
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from sqlalchemy.engine import make_url

from tradeoff_search import SpecError
from tradeoff_search.stores import check_stores, has_optuna_tables, redact, storage_lock
from tradeoff_search.stores._checks import _is_sqlite_database

PASSWORDS = ["pg-s3cret", "p/w", "p?w", "p#w", "a/b?c#d:e", "p%40ss"]


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize("scheme", ["postgresql+psycopg", "mysql", "http"])
def test_redact_hides_the_password_sqlalchemy_reads(scheme: str, password: str) -> None:
    url = f"{scheme}://tradeoff:{password}@db-host:5432/optuna"
    sent = make_url(url).password  # what SQLAlchemy would send (p%40ss: p@ss)
    assert sent is not None and sent in password.replace("%40", "@")
    shown = redact(url)
    assert password not in shown and sent not in shown and "tradeoff:***@db-host" in shown


def test_a_url_that_does_not_parse_has_its_credentials_hidden() -> None:
    assert redact("postgresql://u:se/cret@[::1/db") == "postgresql://u:***@[::1/db"
    assert redact("sqlite:///mlruns/optuna.db") == "sqlite:///mlruns/optuna.db"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u@h/db?password=SECRET", "postgresql://u@h/db?password=***"),
        # SQLAlchemy reads the password "p" and the host "ss@host", an HTTP client "p@ss" and "host"
        ("postgresql://u:p@ss@host/db", "postgresql://u:***@host/db"),
        ("http://u:p@ss@host", "http://u:***@host"),
        (
            "mysql://u:p@h/db?x=1&sslpassword=S&Token=T&api%5Fkey=K",
            "mysql://u:***@h/db?x=1&sslpassword=***&Token=***&api%5Fkey=***",
        ),
        ("postgresql://u@h/db?password=a#b&password=c", "postgresql://u@h/db?password=***&password=***"),
        ("https://h/mlflow?sig=S&sv=2024", "https://h/mlflow?sig=***&sv=2024"),
        ("sqlite:////tmp/a:b@c/optuna.db", "sqlite:////tmp/a:b@c/optuna.db"),  # a path: no password
    ],
)
def test_redact_hides_passwords_however_read_and_secret_parameters(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_a_password_with_an_unescaped_at_is_refused_in_one_line_without_it() -> None:
    """SQLAlchemy would send "p" and look up the host "ss@127.0.0.1", naming it in its error."""
    with pytest.raises(SpecError) as refused:
        check_stores("postgresql+psycopg://u:p@ss@127.0.0.1:9/db", "sqlite:///mlflow.db")
    assert str(refused.value) == (
        'run_study: storage="postgresql+psycopg://u:***@127.0.0.1:9/db": expected a URL whose password writes @ as %40'
    )


def test_an_unreachable_store_is_named_without_its_password(tmp_path) -> None:
    with pytest.raises(SpecError) as refused:
        check_stores("postgresql://tradeoff:p/w?x#y@127.0.0.1:1/optuna", f"sqlite:///{tmp_path}/mlflow.db")
    assert "p/w?x#y" not in str(refused.value) and "tradeoff:***@127.0.0.1:1" in str(refused.value)


def _counting_connections(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The databases every ``sqlite3.connect`` from now on opens (each a real connection)."""
    opened: list[str] = []
    connect = sqlite3.connect

    def counted(database: str, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        opened.append(database)
        return connect(database, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", counted)
    return opened


def test_optuna_tables_are_looked_for_on_one_read_only_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A query must not make a database of a file: a storage with Optuna's tables, a database
    without them, a file that is no database (left as it was) and no file, each on at most one
    read-only connection."""
    optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/optuna.db")  # Optuna's tables
    sqlite3.connect(tmp_path / "other.db").execute("create table t (x)").connection.close()
    (tmp_path / "notes.db").write_text("not a database", encoding="utf-8")
    opened = _counting_connections(monkeypatch)
    cases = [("optuna.db", True, 1), ("other.db", False, 1), ("notes.db", False, 1), ("missing.db", False, 0)]
    for name, found, connections in cases:
        opened.clear()
        assert has_optuna_tables(tmp_path / name) is found, name
        assert len(opened) == connections and all(uri.endswith("?mode=ro") for uri in opened), (name, opened)
    assert (tmp_path / "notes.db").read_text(encoding="utf-8") == "not a database" and not (
        tmp_path / "missing.db"
    ).exists()


def test_a_database_a_writer_has_locked_is_one_and_its_tables_are_read_once_it_lets_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker making a fresh storage's tables holds it locked: the file check says
    'a database' at once, and the look for Optuna's tables waits for the writer on the same connection."""
    path = tmp_path / "optuna.db"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("begin exclusive")
    writer.execute("create table studies (study_id integer primary key)")
    opened = _counting_connections(monkeypatch)
    started = time.monotonic()
    assert _is_sqlite_database(path) and time.monotonic() - started < 1
    commit = threading.Timer(0.3, writer.commit)
    commit.start()
    try:
        opened.clear()
        assert has_optuna_tables(path)
        assert len(opened) == 1 and time.monotonic() - started >= 0.3
    finally:
        commit.join()
        writer.close()


def test_lock_files_are_named_by_the_whole_file_name_and_read_by_their_owner_only(tmp_path: Path) -> None:
    """``optuna.db`` and ``optuna.sqlite`` beside it shared ``optuna.lock``: a run holding both
    stores' locks (the study's, then the MLflow store's) waited for itself until killed."""
    held = threading.Event()

    def both() -> None:
        with (
            storage_lock(f"sqlite:///{tmp_path}/optuna.db", "s"),
            storage_lock(f"sqlite:///{tmp_path}/optuna.sqlite", "m"),
        ):
            held.set()

    nested = threading.Thread(target=both, daemon=True)
    nested.start()
    assert held.wait(10), "the second lock waited for the first"
    nested.join(10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optuna.db.lock", "optuna.sqlite.lock"]
    assert {stat.S_IMODE((tmp_path / name).stat().st_mode) for name in ("optuna.db.lock", "optuna.sqlite.lock")} == {
        0o600
    }


def test_a_lock_file_that_is_a_symbolic_link_is_never_followed(tmp_path: Path) -> None:
    (tmp_path / "optuna.db.lock").symlink_to(tmp_path / "elsewhere")
    url = f"sqlite:///{tmp_path}/optuna.db"
    expected = rf"expected a lock file that is not a symbolic link \({tmp_path}/optuna.db.lock is one\)$"
    with pytest.raises(SpecError, match=rf'^check_stores: storage="{url}": {expected}'):
        check_stores(url, f"sqlite:///{tmp_path}/mlflow.db", function="check_stores")
    with pytest.raises(SpecError, match=rf'^storage_lock: url="{url}": {expected}'), storage_lock(url, "s"):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optuna.db.lock"]  # "elsewhere" was not created
