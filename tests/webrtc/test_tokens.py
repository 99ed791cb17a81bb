"""The token book: single use, expiry, the bound on outstanding tokens."""

from __future__ import annotations

import pytest

from callstream.webrtc import tokens
from callstream.webrtc.tokens import TokenBook, TooManyTokens


def test_a_token_places_one_call_for_its_grant() -> None:
    book = TokenBook(ttl=60)
    token, grant = book.issue("app", "alice", "bot", now=100.0)
    assert token.startswith("wrt_") and len(token) > 40
    assert grant.expires_at == 160.0
    assert book.redeem(token, now=120.0) == grant
    assert book.redeem(token, now=120.0) is None, "single use"
    assert book.redeem("wrt_" + "x" * 43, now=120.0) is None


def test_an_expired_token_is_refused() -> None:
    book = TokenBook(ttl=60)
    token, _ = book.issue("app", "alice", "bot", now=100.0)
    assert book.redeem(token, now=160.5) is None
    assert len(book) == 0


def test_outstanding_tokens_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "MAX_TOKENS", 3)
    book = TokenBook(ttl=10)
    for _ in range(3):
        book.issue("app", "a", "b", now=0.0)
    with pytest.raises(TooManyTokens):
        book.issue("app", "a", "b", now=5.0)
    book.issue("app", "a", "b", now=11.0)  # the expired ones make room
    assert len(book) == 1
