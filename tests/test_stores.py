"""Store URLs: every password SQLAlchemy would send is hidden wherever a URL is shown."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from tradeoff_search import SpecError
from tradeoff_search._stores import check_stores, redact

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
    assert redact("postgresql://u:se/cret@[::1/db") == "postgresql://***@[::1/db"
    assert redact("sqlite:///mlruns/optuna.db") == "sqlite:///mlruns/optuna.db"


def test_an_unreachable_store_is_named_without_its_password(tmp_path) -> None:
    with pytest.raises(SpecError) as refused:
        check_stores("postgresql://tradeoff:p/w?x#y@127.0.0.1:1/optuna", f"sqlite:///{tmp_path}/mlflow.db")
    assert "p/w?x#y" not in str(refused.value) and "tradeoff:***@127.0.0.1:1" in str(refused.value)
