"""Database URLs as users get them: libpq's ``sslmode`` and ``sslrootcert`` become
asyncpg's ``ssl`` argument; anything else is refused in one line naming DATABASE_URL."""

from __future__ import annotations

import ssl

import pytest
from sqlalchemy import text

from core.config import normalize_database_url
from core.db.engine import SSL_MODES, Database, connect_options
from core.errors import ConfigError

PG = "postgresql+asyncpg://app:s3cret@db.example.com:5432/app"


@pytest.mark.parametrize("mode", SSL_MODES)
def test_each_libpq_sslmode_becomes_asyncpgs_ssl_argument(mode: str) -> None:
    url, connect_args = connect_options(f"{PG}?sslmode={mode}")
    assert connect_args == {"ssl": mode}
    assert "sslmode" not in url.query
    assert url.password == "s3cret" and url.host == "db.example.com"


def test_a_url_without_sslmode_passes_through_unchanged() -> None:
    url, connect_args = connect_options(f"{PG}?application_name=signaldesk")
    assert connect_args == {}
    assert url.query == {"application_name": "signaldesk"}


def test_heroku_postgres_form_with_sslmode_require() -> None:
    url, connect_args = connect_options(
        normalize_database_url("postgres://u:p@ec2.compute.amazonaws.com:5432/d1?sslmode=require")
    )
    assert url.drivername == "postgresql+asyncpg"
    assert connect_args == {"ssl": "require"}


@pytest.mark.parametrize("mode", ["verify-ca", "verify-full", "require"])
def test_sslrootcert_with_a_verifying_mode_builds_a_context_trusting_that_file(
    mode: str,
) -> None:
    # Python's own test CA bundle is not guaranteed; certifi ships with httpx's dependencies.
    import certifi

    url, connect_args = connect_options(f"{PG}?sslmode={mode}&sslrootcert={certifi.where()}")
    context = connect_args["ssl"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is (mode == "verify-full")
    assert "sslrootcert" not in url.query


def test_sslrootcert_is_ignored_by_modes_that_do_not_verify() -> None:
    _, connect_args = connect_options(f"{PG}?sslmode=prefer&sslrootcert=/nonexistent.pem")
    assert connect_args == {"ssl": "prefer"}


def test_a_bogus_sslmode_is_refused_in_one_line_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        connect_options(f"{PG}?sslmode=bogus")
    message = str(caught.value)
    assert message.startswith("DATABASE_URL: sslmode='bogus' is not one of disable, allow")
    assert "\n" not in message and "s3cret" not in message


def test_sqlite_urls_have_no_driver_options() -> None:
    url, connect_args = connect_options("sqlite+aiosqlite:///signaldesk.db")
    assert connect_args == {} and url.database == "signaldesk.db"


def test_an_unparseable_url_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError, match=r"^DATABASE_URL: not a database URL") as caught:
        connect_options("::not a url with s3cret::")
    assert "s3cret" not in str(caught.value)


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_sslmode_disable_connects_to_the_local_server(database_url: str) -> None:
    db = Database(f"{database_url}?sslmode=disable")
    try:
        async with db.engine.connect() as connection:
            assert (await connection.execute(text("select 1"))).scalar_one() == 1
    finally:
        await db.close()
