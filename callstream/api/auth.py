"""API keys: creation, hashing, and the bearer-token check on every route but /healthz.

Keys are 256-bit random tokens, so a single SHA-256 is a sound stored form (no
password stretching needed) and lets the check be one indexed lookup.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from callstream.store.base import Store
from callstream.store.records import ApiKey
from callstream.timefmt import iso_now

KEY_PREFIX = "KEY"
PUBLIC_PATHS = frozenset({"/healthz"})

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
        record = await self._store.find_api_key(hash_key(key))
        return record is not None and record.revoked_at is None


_UNAUTHORIZED = (
    b'{"errors":[{"code":"10009","title":"Authentication failed",'
    b'"detail":"The API key is missing or invalid. Send Authorization: Bearer <key>."}]}'
)


class AuthMiddleware:
    """Pure ASGI middleware: cheaper than BaseHTTPMiddleware on every request."""

    def __init__(self, app: ASGIApp, checker: KeyChecker) -> None:
        self.app = app
        self.checker = checker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        token = ""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, rest = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer":
                    token = rest.strip()
                break
        if token and await self.checker.valid(token):
            await self.app(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(_UNAUTHORIZED)).encode()),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": _UNAUTHORIZED})
