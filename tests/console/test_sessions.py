"""callstream.console.sessions: login links, sessions, CSRF and Origin checks (time passed in)."""

from __future__ import annotations

import logging

import pytest

from callstream.console.sessions import (
    MAX_LOGIN_LINKS,
    MAX_SESSIONS,
    ConsoleSessions,
    csrf_ok,
    same_origin,
)


def sessions() -> ConsoleSessions:
    return ConsoleSessions(session_ttl=100.0, link_ttl=10.0)


def test_a_login_link_opens_one_session_once() -> None:
    store = sessions()
    token = store.issue_link(now=0.0)
    session = store.redeem_link(token, now=5.0)
    assert session is not None and session.key_hash is None
    assert session.expires_at == 105.0
    assert store.get(session.id, now=6.0) == session
    assert store.redeem_link(token, now=6.0) is None, "a link works once"


def test_a_login_link_expires() -> None:
    store = sessions()
    token = store.issue_link(now=0.0)
    assert store.redeem_link(token, now=10.5) is None
    assert len(store) == 0


def test_unknown_tokens_and_ids_open_nothing() -> None:
    store = sessions()
    store.issue_link(now=0.0)
    assert store.redeem_link("guess", now=1.0) is None
    assert store.get("guess", now=1.0) is None


def test_a_session_expires_and_can_be_closed() -> None:
    store = sessions()
    first = store.open(now=0.0, key_hash="abc")
    second = store.open(now=0.0)
    assert first.id != second.id and first.csrf != second.csrf
    assert store.get(first.id, now=100.0) == first
    assert store.get(first.id, now=100.5) is None
    store.close(second.id)
    assert store.get(second.id, now=1.0) is None


def test_sessions_beyond_the_limit_sign_out_the_oldest(caplog: pytest.LogCaptureFixture) -> None:
    store = sessions()
    oldest = store.open(now=0.0)
    for n in range(MAX_SESSIONS - 1):
        store.open(now=1.0 + n / 1000)
    with caplog.at_level(logging.WARNING):
        newest = store.open(now=2.0)
    assert len(store) == MAX_SESSIONS
    assert store.get(oldest.id, now=3.0) is None
    assert store.get(newest.id, now=3.0) == newest
    assert "MAX_SESSIONS" in caplog.text


def test_unredeemed_links_beyond_the_limit_drop_the_oldest() -> None:
    store = sessions()
    tokens = [store.issue_link(now=0.0) for _ in range(MAX_LOGIN_LINKS + 1)]
    assert store.redeem_link(tokens[0], now=1.0) is None
    assert store.redeem_link(tokens[-1], now=1.0) is not None


def test_ttls_must_be_positive() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        ConsoleSessions(session_ttl=0, link_ttl=1)


def test_csrf_token_must_match() -> None:
    session = sessions().open(now=0.0)
    assert csrf_ok(session, session.csrf)
    assert not csrf_ok(session, None)
    assert not csrf_ok(session, "")
    assert not csrf_ok(session, session.csrf[:-1])


@pytest.mark.parametrize(
    ("origin", "host", "ok"),
    [
        (None, "127.0.0.1:8080", True),
        ("http://127.0.0.1:8080", "127.0.0.1:8080", True),
        ("https://example.com", "example.com", True),
        ("http://127.0.0.1:8081", "127.0.0.1:8080", False),
        ("http://evil.example", "127.0.0.1:8080", False),
        ("null", "127.0.0.1:8080", False),
        ("file://127.0.0.1:8080", "127.0.0.1:8080", False),
        ("http://127.0.0.1:8080", None, False),
    ],
)
def test_same_origin(origin: str | None, host: str | None, ok: bool) -> None:
    assert same_origin(origin, host) is ok
