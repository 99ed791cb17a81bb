"""HTTP Digest authentication for SIP requests (RFC 3261 §22, RFC 2617, RFC 8760).

When a trunk answers our INVITE with 401 (``WWW-Authenticate``) or 407
(``Proxy-Authenticate``), :func:`parse_challenge` reads the challenge and
:func:`build_authorization` computes the ``Authorization`` /
``Proxy-Authorization`` value for the retried request. Algorithms: MD5,
MD5-sess, SHA-256, SHA-256-sess, SHA-512-256(-sess) (RFC 8760 §2.1); qop
``auth`` (preferred) or ``auth-int``, or none for RFC 2069 servers.

The server side (RFC 3261 §22.4) is :class:`DigestServer`: it challenges a
request with a nonce made by :func:`make_nonce` — a timestamp and an HMAC over
it and the peer's address, so that checking it later (:func:`check_nonce`)
needs no table of issued nonces — and verifies the ``Authorization`` the peer
answers with (:func:`parse_authorization`, :meth:`DigestServer.check`).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from .exceptions import DigestError, SipParseError
from .message import split_comma_list
from .uri import parse_uri

__all__ = [
    "AuthOutcome",
    "Authorization",
    "Challenge",
    "Credentials",
    "DigestServer",
    "NonceCheck",
    "build_authorization",
    "build_challenge",
    "check_nonce",
    "make_nonce",
    "parse_authorization",
    "parse_challenge",
]

#: Longest challenge we parse, in characters.
MAX_CHALLENGE_LENGTH = 4_096
#: Longest Authorization value we parse, in characters.
MAX_AUTHORIZATION_LENGTH = 4_096
#: Seconds a nonce we issue stays good; an older one is answered stale=true.
NONCE_LIFETIME = 30.0
#: Hex digits of HMAC-SHA256 kept in a nonce (128 bits).
NONCE_MAC_HEX = 32


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


def _parse_params(rest: str, what: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in split_comma_list(rest):
        name, equals, raw = item.partition("=")
        if not equals:
            raise DigestError(f"malformed {what} parameter {item[:40]!r}")
        params[name.strip().lower()] = _unquote(raw)
    return params


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
    params = _parse_params(rest, "challenge")
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


def _response(
    algorithm: str,
    credentials: Credentials,
    realm: str,
    nonce: str,
    *,
    method: str,
    uri: str,
    qop: str | None,
    nc: str,
    cnonce: str,
    body: bytes,
) -> str:
    """The request-digest of RFC 2617 §3.2.2.1 (RFC 8760 for the SHA algorithms)."""
    digest = _HASHES.get(algorithm.upper().removesuffix("-SESS"))
    if digest is None:
        raise DigestError(f"unsupported digest algorithm {algorithm!r}")

    def h(text: str) -> str:
        return digest(text.encode())

    ha1 = h(f"{credentials.username}:{realm}:{credentials.password}")
    if algorithm.upper().endswith("-SESS"):
        ha1 = h(f"{ha1}:{nonce}:{cnonce}")
    ha2 = h(f"{method}:{uri}") if qop != "auth-int" else h(f"{method}:{uri}:{digest(body)}")
    if qop is None:
        return h(f"{ha1}:{nonce}:{ha2}")
    return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


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
    if challenge.qop and "auth" not in challenge.qop and "auth-int" not in challenge.qop:
        raise DigestError(f"unsupported qop {','.join(challenge.qop)!r}")
    qop = "auth" if "auth" in challenge.qop else ("auth-int" if challenge.qop else None)
    nc = f"{nonce_count:08x}"
    response = _response(
        algorithm, credentials, challenge.realm, challenge.nonce,
        method=method, uri=uri, qop=qop, nc=nc, cnonce=cnonce, body=body,
    )
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


# ---------------------------------------------------------------- server side


@dataclass(frozen=True, slots=True)
class Authorization:
    """A parsed ``Digest`` answer (``Authorization`` / ``Proxy-Authorization``).

    Attributes:
        username: Who claims to answer.
        realm: The realm answered.
        nonce: Our nonce, echoed.
        uri: The digest-uri (the Request-URI the client signed).
        response: The request-digest, hex.
        algorithm: As the client spelled it (``"MD5"`` when absent).
        qop: The qop chosen, or ``None`` (RFC 2069).
        nc: The nonce count, 8 hex digits, with qop.
        cnonce: The client nonce, with qop.
    """

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str = ""
    cnonce: str = ""


def parse_authorization(value: str) -> Authorization:
    """Parse an ``Authorization`` or ``Proxy-Authorization`` value.

    Raises:
        DigestError: Too long, not Digest, or a required parameter missing.
    """
    if len(value) > MAX_AUTHORIZATION_LENGTH:
        raise DigestError("authorization is too long")
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise DigestError(f"unsupported authentication scheme {scheme[:20]!r}")
    params = _parse_params(rest, "authorization")
    missing = [name for name in ("username", "realm", "nonce", "uri", "response")
               if name not in params]
    if missing:
        raise DigestError(f"authorization lacks {', '.join(missing)}")
    qop = params.get("qop") or None
    if qop is not None and not (params.get("nc") and params.get("cnonce")):
        raise DigestError("authorization has qop but lacks nc or cnonce")
    return Authorization(
        username=params["username"],
        realm=params["realm"],
        nonce=params["nonce"],
        uri=params["uri"],
        response=params["response"],
        algorithm=params.get("algorithm", "MD5"),
        qop=qop.lower() if qop is not None else None,
        nc=params.get("nc", ""),
        cnonce=params.get("cnonce", ""),
    )


class NonceCheck(enum.Enum):
    """What :func:`check_nonce` found."""

    VALID = "valid"
    STALE = "stale"  # ours, but older than its lifetime: challenge again, stale=true
    INVALID = "invalid"  # not ours, or not for this source


def _nonce_mac(secret: bytes, stamp: str, source: str) -> str:
    mac = hmac.new(secret, f"{stamp}:{source}".encode(), hashlib.sha256).hexdigest()
    return mac[:NONCE_MAC_HEX]


def make_nonce(secret: bytes, now: float, source: str) -> str:
    """A nonce that proves by itself when we made it and for whom.

    ``<milliseconds, hex>.<HMAC-SHA256(secret, stamp:source), 128 bits>``: the
    server keeps no table of nonces, and one issued to another address is
    refused. ``now`` is the caller's clock (the event loop's), so nonces do not
    outlive the process that holds ``secret``.
    """
    stamp = f"{int(now * 1000):x}"
    return f"{stamp}.{_nonce_mac(secret, stamp, source)}"


def check_nonce(
    nonce: str, secret: bytes, now: float, source: str, lifetime: float = NONCE_LIFETIME
) -> NonceCheck:
    """Whether ``nonce`` is one :func:`make_nonce` gave ``source`` within ``lifetime``."""
    stamp, dot, mac = nonce.partition(".")
    if not dot or len(stamp) > 16 or not hmac.compare_digest(
        mac.encode(), _nonce_mac(secret, stamp, source).encode()
    ):
        return NonceCheck.INVALID
    try:
        issued = int(stamp, 16) / 1000
    except ValueError:
        return NonceCheck.INVALID
    if issued > now + 1.0:  # from our future: not a clock we ran
        return NonceCheck.INVALID
    return NonceCheck.VALID if now - issued <= lifetime else NonceCheck.STALE


def build_challenge(realm: str, nonce: str, *, stale: bool = False) -> str:
    """A ``WWW-Authenticate`` value: MD5 with qop=auth (what every SIP UA answers)."""
    value = f'Digest realm={_quote(realm)}, nonce={_quote(nonce)}, algorithm=MD5, qop="auth"'
    return value + ", stale=true" if stale else value


class AuthOutcome(enum.Enum):
    """What :meth:`DigestServer.check` decided about a request."""

    OK = "ok"
    MISSING = "no credentials for our realm"  # challenge
    STALE = "stale nonce"  # challenge with stale=true
    FAILED = "wrong credentials"  # challenge, and count it


def _same_resource(digest_uri: str, request_uri: str) -> bool:
    """RFC 2617 §3.2.2.5: the digest-uri must name the Request-URI's resource.

    The Request-URI itself, or a URI of the same host and port: SIPp (and some
    phones) sign ``sip:host:port`` without the user part. Either way the
    request-digest covers the digest-uri, and the nonce is bound to the source.
    """
    if digest_uri == request_uri:
        return True
    try:
        signed, requested = parse_uri(digest_uri), parse_uri(request_uri)
    except SipParseError:
        return False
    return (signed.host.lower(), signed.port_or_default) == (
        requested.host.lower(), requested.port_or_default)


class DigestServer:
    """The UAS side of digest authentication (RFC 3261 §22.4), with stateless nonces.

    Args:
        credentials: The one username and password accepted.
        realm: The protection space named in challenges.
        secret: HMAC key for nonces; random per process by default.
        nonce_lifetime: Seconds a nonce stays good.
    """

    __slots__ = ("credentials", "nonce_lifetime", "realm", "secret")

    def __init__(
        self,
        credentials: Credentials,
        *,
        realm: str,
        secret: bytes | None = None,
        nonce_lifetime: float = NONCE_LIFETIME,
    ) -> None:
        self.credentials = Credentials(credentials.username, credentials.password, realm)
        self.realm = realm
        self.secret = secret if secret is not None else secrets.token_bytes(32)
        self.nonce_lifetime = nonce_lifetime

    def challenge(self, source: str, now: float, *, stale: bool = False) -> str:
        """A fresh ``WWW-Authenticate`` value for a request from ``source``."""
        return build_challenge(self.realm, make_nonce(self.secret, now, source), stale=stale)

    def check(
        self,
        values: list[str],
        *,
        method: str,
        uri: str,
        source: str,
        now: float,
        body: bytes = b"",
    ) -> AuthOutcome:
        """Judge a request's ``Authorization`` values (those for other realms are ignored).

        RFC 2617 §3.2.2: the answer must be for our realm, our nonce (issued to
        ``source``, not expired), the request's own Request-URI, the configured
        username, and carry the right request-digest.
        """
        answer: Authorization | None = None
        for value in values:
            try:
                parsed = parse_authorization(value)
            except DigestError:
                continue
            if parsed.realm == self.realm:
                answer = parsed
                break
        if answer is None:
            return AuthOutcome.MISSING
        nonce = check_nonce(answer.nonce, self.secret, now, source, self.nonce_lifetime)
        if nonce is NonceCheck.INVALID:
            return AuthOutcome.FAILED
        if answer.qop not in (None, "auth", "auth-int") or not _same_resource(answer.uri, uri):
            return AuthOutcome.FAILED
        if not hmac.compare_digest(answer.username.encode(), self.credentials.username.encode()):
            return AuthOutcome.FAILED
        try:
            expected = _response(
                answer.algorithm, self.credentials, self.realm, answer.nonce,
                method=method, uri=answer.uri, qop=answer.qop, nc=answer.nc,
                cnonce=answer.cnonce, body=body,
            )
        except DigestError:
            return AuthOutcome.FAILED
        if not hmac.compare_digest(expected.encode(), answer.response.lower().encode()):
            return AuthOutcome.FAILED
        # A right answer on an expired nonce: the password is right, the nonce is not.
        return AuthOutcome.STALE if nonce is NonceCheck.STALE else AuthOutcome.OK
