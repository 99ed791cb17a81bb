"""API keys: creation, hashing, and the check on every route but the public ones.

A request is let through with ``Authorization: Bearer <key>``, or with the session cookie
of the console (:mod:`callstream.console.sessions`): a cookie-authenticated request with
an ``Origin`` must come from this server's own origin, and one that changes state (not
GET/HEAD) must also carry the session's CSRF token in its header (403 otherwise).

Keys are 256-bit random tokens, so a single SHA-256 is a sound stored form (no
password stretching needed) and lets the check be one indexed lookup.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from callstream.console.sessions import (
    COOKIE_NAME,
    CSRF_HEADER,
    ConsoleSessions,
    Session,
    csrf_ok,
    same_origin,
)
from callstream.store.base import Store
from callstream.store.records import ApiKey
from callstream.timefmt import iso_now

KEY_PREFIX = "KEY"
#: Reachable without a key: health, the WebRTC client script and, with the console on,
#: its page, assets and sign-in.
PUBLIC_PATHS = frozenset({"/healthz", "/static/callstream-webrtc.js"})
#: Routes that check their own credentials (a page's WebRTC token: api/routes/webrtc.py;
#: the deployment's peer token: api/routes/internal.py).
SELF_CHECKED_PREFIXES = ("/v2/webrtc/sessions", "/internal/")
CONSOLE_PUBLIC_PATHS = frozenset({"/", "/console", "/console/login"})
CONSOLE_PUBLIC_PREFIXES = ("/console/static/",)
SAFE_METHODS = frozenset({"GET", "HEAD"})

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def create_key(store: Store, label: str = "") -> tuple[str, ApiKey]:
    """Make, store (hashed) and return a new key; the plain key is never stored."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    record = ApiKey(
        id=str(uuid.uuid4()),
        prefix=key[:10],
        key_hash=hash_key(key),
        label=label,
        created_at=iso_now(),
    )
    await store.add_api_key(record)
    return key, record


class KeyChecker:
    """Asks the store on every request: a revoked key is refused from the next request
    on, even when another process (``callstream keys revoke``) revoked it. No cache, as a
    cached key would outlive its revocation; the lookup costs ~13 µs (store/key_reader.py).
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    async def valid(self, key: str) -> bool:
        return await self.valid_hash(hash_key(key))

    async def valid_hash(self, key_hash: str) -> bool:
        record = await self._store.find_api_key(key_hash)
        return record is not None and record.revoked_at is None


_UNAUTHORIZED = (
    b'{"errors":[{"code":"10009","title":"Authentication failed",'
    b'"detail":"The API key is missing or invalid. Send Authorization: Bearer <key>."}]}'
)
_FORBIDDEN = (
    b'{"errors":[{"code":"10010","title":"Forbidden","detail":"A console request must come '
    b'from this server\'s own Origin, and one that changes state needs its session\'s '
    b'X-Callstream-CSRF header."}]}'
)


def _cookie(value: str, name: str) -> str | None:
    for part in value.split(";"):
        key, sep, rest = part.strip().partition("=")
        if sep and key == name:
            return rest.strip()
    return None


class AuthMiddleware:
    """Pure ASGI middleware: cheaper than BaseHTTPMiddleware on every request."""

    def __init__(
        self, app: ASGIApp, checker: KeyChecker, sessions: ConsoleSessions | None = None
    ) -> None:
        self.app = app
        self.checker = checker
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in PUBLIC_PATHS or path.startswith(
            SELF_CHECKED_PREFIXES) or (
            self.sessions is not None
            and (path in CONSOLE_PUBLIC_PATHS or path.startswith(CONSOLE_PUBLIC_PREFIXES))
        ):
            await self.app(scope, receive, send)
            return
        token = ""
        cookie = origin = csrf = host = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, rest = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer":
                    token = rest.strip()
            elif name == b"cookie" and self.sessions is not None:
                cookie = _cookie(value.decode("latin-1"), COOKIE_NAME) or cookie
            elif name == b"origin":
                origin = value.decode("latin-1")
            elif name == b"host":
                host = value.decode("latin-1")
            elif name == CSRF_HEADER.encode():
                csrf = value.decode("latin-1")
        if token:
            if await self.checker.valid(token):
                await self.app(scope, receive, send)
                return
        elif cookie:
            session = await self._session(cookie)
            if session is not None:
                if not same_origin(origin, host) or (
                    scope["method"] not in SAFE_METHODS and not csrf_ok(session, csrf)
                ):
                    await _refuse(send, 403, _FORBIDDEN)
                    return
                scope.setdefault("state", {})["console_session"] = session
                await self.app(scope, receive, send)
                return
        await _refuse(send, 401, _UNAUTHORIZED, [(b"www-authenticate", b"Bearer")])

    async def _session(self, cookie: str) -> Session | None:
        """The live console session of a cookie; one whose API key was revoked ends."""
        assert self.sessions is not None
        session = self.sessions.get(cookie, time.monotonic())
        if session is None:
            return None
        if session.key_hash is not None and not await self.checker.valid_hash(
            session.key_hash
        ):
            self.sessions.close(session.id)
            return None
        return session


async def _refuse(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
