"""Tokens a page calls in with, so no API key has to sit in a browser.

Sans-I/O: the clock is an argument. A token is 256 random bits, bound to one
application (``connection_id``) and the caller's name (``from``), valid for a
TTL and **single use**: redeeming it removes it, so a token copied out of a page
after the call started is worth nothing. At most :data:`MAX_TOKENS` are
outstanding; issuing beyond that first drops expired ones, then refuses.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

#: Outstanding (issued, not yet redeemed or expired) tokens held in memory at most.
MAX_TOKENS = 10_000
TOKEN_PREFIX = "wrt_"


class TooManyTokens(Exception):
    """:data:`MAX_TOKENS` tokens are outstanding."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What a token lets its holder do: call ``connection_id`` as ``from_``.

    Attributes:
        connection_id: The application the call goes to.
        from_: The caller's name in ``call.initiated``'s ``from``.
        to: The called name in ``call.initiated``'s ``to``.
        expires_at: The clock reading after which the token is refused.
    """

    connection_id: str
    from_: str
    to: str
    expires_at: float


class TokenBook:
    """Issued tokens and their grants (one per server process).

    Args:
        ttl: Seconds a token stays valid.
        draw: Makes the random part of a token (``secrets.token_urlsafe``; a worker's
            draws hash to itself, so the front routes the offer a token brings to it).
    """

    def __init__(self, ttl: float, draw: Callable[[int], str] = secrets.token_urlsafe) -> None:
        self.ttl = ttl
        self._draw = draw
        self._grants: dict[str, Grant] = {}

    def issue(self, connection_id: str, from_: str, to: str, now: float) -> tuple[str, Grant]:
        """A new token for one call.

        Raises:
            TooManyTokens: :data:`MAX_TOKENS` are outstanding and none has expired.
        """
        if len(self._grants) >= MAX_TOKENS:
            self._expire(now)
            if len(self._grants) >= MAX_TOKENS:
                raise TooManyTokens(f"{MAX_TOKENS} WebRTC tokens are outstanding")
        token = TOKEN_PREFIX + self._draw(32)
        grant = Grant(connection_id, from_, to, now + self.ttl)
        self._grants[token] = grant
        return token, grant

    def redeem(self, token: str, now: float) -> Grant | None:
        """The token's grant, once: ``None`` for an unknown, used or expired token."""
        grant = self._grants.pop(token, None)
        if grant is None or now > grant.expires_at:
            return None
        return grant

    def _expire(self, now: float) -> None:
        for token in [t for t, g in self._grants.items() if now > g.expires_at]:
            del self._grants[token]

    def __len__(self) -> int:
        return len(self._grants)
