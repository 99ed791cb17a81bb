"""Console sign-in: one-time login links and session cookies (sans-I/O: ``now`` is passed in).

A browser signs in one of two ways and gets a session:

* with an API key pasted into the login form (the key is checked by the caller; the
  session remembers the key's hash so a revoked key ends its sessions at once);
* with a **one-time login link** printed at start: a random token that can be redeemed
  once, within ``link_ttl`` seconds.

A session is a random id kept only here (in memory: a restart signs everyone out) with an
expiry and a CSRF token the page sends back in a header on every state-changing request.
Tokens and ids are 256-bit; they are looked up by their SHA-256 so the lookup's timing
says nothing about a guess.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: Name of the session cookie (HttpOnly, SameSite=Strict, Path=/).
COOKIE_NAME = "callstream_console"
#: Header the page sends its session's CSRF token in, on every POST.
CSRF_HEADER = "x-callstream-csrf"
#: Sessions kept at once; beyond it the one closest to expiry is dropped (logged).
MAX_SESSIONS = 256
#: Unredeemed login links kept at once; beyond it the oldest is dropped.
MAX_LOGIN_LINKS = 16


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in browser.

    Attributes:
        id: the cookie's value (secret).
        csrf: the token state-changing requests must carry in :data:`CSRF_HEADER`.
        expires_at: time (same clock as ``now``) after which the session is gone.
        key_hash: SHA-256 of the API key it signed in with; ``None`` for a login link.
    """

    id: str
    csrf: str
    expires_at: float
    key_hash: str | None = None


class ConsoleSessions:
    """Login links and sessions of one server process."""

    def __init__(self, *, session_ttl: float, link_ttl: float) -> None:
        if session_ttl <= 0 or link_ttl <= 0:
            raise ValueError("session_ttl and link_ttl must be positive")
        self.session_ttl = session_ttl
        self.link_ttl = link_ttl
        self._sessions: dict[str, Session] = {}  # by digest of id
        self._links: dict[str, float] = {}  # digest of token -> expiry

    def __len__(self) -> int:
        return len(self._sessions)

    def issue_link(self, now: float) -> str:
        """A new one-time login token, valid for ``link_ttl`` seconds."""
        self._expire(now)
        while len(self._links) >= MAX_LOGIN_LINKS:
            del self._links[next(iter(self._links))]
        token = secrets.token_urlsafe(32)
        self._links[_digest(token)] = now + self.link_ttl
        return token

    def redeem_link(self, token: str, now: float) -> Session | None:
        """Open a session for a login token, once; ``None`` if unknown, used or expired."""
        expiry = self._links.pop(_digest(token), None)
        if expiry is None or expiry < now:
            return None
        return self.open(now)

    def open(self, now: float, *, key_hash: str | None = None) -> Session:
        """A new session (after the caller checked the API key whose hash is given)."""
        self._expire(now)
        if len(self._sessions) >= MAX_SESSIONS:
            oldest = min(self._sessions, key=lambda d: self._sessions[d].expires_at)
            del self._sessions[oldest]
            log.warning("console: %d sessions open (MAX_SESSIONS); signed the oldest out",
                        MAX_SESSIONS)
        session = Session(
            id=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            expires_at=now + self.session_ttl,
            key_hash=key_hash,
        )
        self._sessions[_digest(session.id)] = session
        return session

    def get(self, session_id: str, now: float) -> Session | None:
        """The live session with this id, or ``None``."""
        digest = _digest(session_id)
        session = self._sessions.get(digest)
        if session is None:
            return None
        if session.expires_at < now:
            del self._sessions[digest]
            return None
        return session

    def close(self, session_id: str) -> None:
        self._sessions.pop(_digest(session_id), None)

    def _expire(self, now: float) -> None:
        for digest in [d for d, s in self._sessions.items() if s.expires_at < now]:
            del self._sessions[digest]
        for digest in [d for d, t in self._links.items() if t < now]:
            del self._links[digest]


def csrf_ok(session: Session, header: str | None) -> bool:
    """Whether a request's CSRF header matches its session's token (constant time)."""
    return header is not None and secrets.compare_digest(session.csrf, header)


def same_origin(origin: str | None, host: str | None) -> bool:
    """Whether a request's ``Origin`` names this server (``Host``); an absent Origin passes
    (same-origin GETs and non-browser clients send none; SameSite=Strict and the CSRF
    header cover those)."""
    if origin is None:
        return True
    if host is None:
        return False
    scheme, sep, rest = origin.partition("://")
    return bool(sep) and scheme in ("http", "https") and rest == host
