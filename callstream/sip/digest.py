"""HTTP Digest authentication for SIP requests (RFC 3261 §22, RFC 2617, RFC 8760).

When a trunk answers our INVITE with 401 (``WWW-Authenticate``) or 407
(``Proxy-Authenticate``), :func:`parse_challenge` reads the challenge and
:func:`build_authorization` computes the ``Authorization`` /
``Proxy-Authorization`` value for the retried request. Algorithms: MD5,
MD5-sess, SHA-256, SHA-256-sess, SHA-512-256(-sess) (RFC 8760 §2.1); qop
``auth`` (preferred) or ``auth-int``, or none for RFC 2069 servers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from .exceptions import DigestError
from .message import split_comma_list

__all__ = ["Challenge", "Credentials", "build_authorization", "parse_challenge"]

#: Longest challenge we parse, in characters.
MAX_CHALLENGE_LENGTH = 4_096


def _sha512_256(data: bytes) -> str:
    return hashlib.new("sha512_256", data).hexdigest()


_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda data: hashlib.md5(data, usedforsecurity=False).hexdigest(),
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
    "SHA-512-256": _sha512_256,
}


@dataclass(frozen=True, slots=True)
class Credentials:
    """What we authenticate with.

    Attributes:
        username: The digest username.
        password: The password.
        realm: Only answer challenges for this realm; ``None`` answers any.
    """

    username: str
    password: str
    realm: str | None = None

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password='***', realm={self.realm!r})"


@dataclass(frozen=True, slots=True)
class Challenge:
    """A parsed ``Digest`` challenge.

    Attributes:
        realm: Protection space.
        nonce: Server nonce.
        algorithm: Algorithm name as the server spelled it (``"MD5"`` when absent).
        qop: Offered qop values (empty for RFC 2069 servers).
        opaque: Opaque value to echo, if any.
        stale: Whether the previous nonce was merely stale.
    """

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_challenge(value: str) -> Challenge:
    """Parse a ``WWW-Authenticate`` or ``Proxy-Authenticate`` value.

    Raises:
        DigestError: Not a Digest challenge, a missing realm or nonce, or an
            algorithm we do not implement.
    """
    if len(value) > MAX_CHALLENGE_LENGTH:
        raise DigestError("challenge is too long")
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise DigestError(f"unsupported authentication scheme {scheme[:20]!r}")
    params: dict[str, str] = {}
    for item in split_comma_list(rest):
        name, equals, raw = item.partition("=")
        if not equals:
            raise DigestError(f"malformed challenge parameter {item[:40]!r}")
        params[name.strip().lower()] = _unquote(raw)
    realm = params.get("realm")
    nonce = params.get("nonce")
    if realm is None or not nonce:
        raise DigestError("challenge lacks realm or nonce")
    algorithm = params.get("algorithm", "MD5")
    if algorithm.upper().removesuffix("-SESS") not in _HASHES:
        raise DigestError(f"unsupported digest algorithm {algorithm!r}")
    qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    return Challenge(
        realm=realm,
        nonce=nonce,
        algorithm=algorithm,
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
    )


def build_authorization(
    challenge: Challenge,
    credentials: Credentials,
    *,
    method: str,
    uri: str,
    cnonce: str,
    nonce_count: int = 1,
    body: bytes = b"",
) -> str:
    """Compute the ``Authorization`` (or ``Proxy-Authorization``) value.

    Args:
        challenge: The server's challenge.
        credentials: Our username and password.
        method: The request method (``"INVITE"``).
        uri: The Request-URI as sent (the digest-uri).
        cnonce: A fresh client nonce (needed with qop and -sess).
        nonce_count: How many times this nonce has been used, from 1.
        body: The request body, hashed for ``qop=auth-int``.

    Raises:
        DigestError: The algorithm is not supported or only unknown qops are offered.
    """
    algorithm = challenge.algorithm
    digest = _HASHES.get(algorithm.upper().removesuffix("-SESS"))
    if digest is None:
        raise DigestError(f"unsupported digest algorithm {algorithm!r}")

    def h(text: str) -> str:
        return digest(text.encode())

    if challenge.qop and "auth" not in challenge.qop and "auth-int" not in challenge.qop:
        raise DigestError(f"unsupported qop {','.join(challenge.qop)!r}")
    qop = "auth" if "auth" in challenge.qop else ("auth-int" if challenge.qop else None)
    nc = f"{nonce_count:08x}"
    ha1 = h(f"{credentials.username}:{challenge.realm}:{credentials.password}")
    if algorithm.upper().endswith("-SESS"):
        ha1 = h(f"{ha1}:{challenge.nonce}:{cnonce}")
    ha2 = h(f"{method}:{uri}") if qop != "auth-int" else h(f"{method}:{uri}:{digest(body)}")
    if qop is None:
        response = h(f"{ha1}:{challenge.nonce}:{ha2}")
    else:
        response = h(f"{ha1}:{challenge.nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    parts = [
        f"username={_quote(credentials.username)}",
        f"realm={_quote(challenge.realm)}",
        f"nonce={_quote(challenge.nonce)}",
        f"uri={_quote(uri)}",
        f"response={_quote(response)}",
        f"algorithm={algorithm}",
    ]
    if qop is not None:
        parts.extend([f"cnonce={_quote(cnonce)}", f"qop={qop}", f"nc={nc}"])
    if challenge.opaque is not None:
        parts.append(f"opaque={_quote(challenge.opaque)}")
    return "Digest " + ", ".join(parts)
