"""SIP, SIPS and tel URIs (RFC 3261 §19.1, §25.1; RFC 3966).

``sip:user:password@host:port;uri-parameters?headers``. The host may be a
name, an IPv4 address or an IPv6 reference in brackets (``[::1]:5060``); it is
stored without the brackets. Parameters keep their order and spelling;
lookups are case-insensitive. A ``tel:`` URI keeps its number in ``user`` and
an empty ``host``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from .exceptions import InvalidUri

__all__ = ["DEFAULT_PORTS", "MAX_URI_LENGTH", "SipUri", "format_host", "parse_params", "parse_uri"]

#: Longest URI accepted, in characters.
MAX_URI_LENGTH = 2_048
#: Most parameters one URI (or header) may carry.
MAX_PARAMS = 32
#: Port used when a URI has none (RFC 3261 §19.1.2).
DEFAULT_PORTS = {"sip": 5060, "sips": 5061}

_SCHEMES = ("sip", "sips", "tel")
# hostname / IPv4address per RFC 3261 §25.1, kept loose: labels of alnum and "-".
_HOSTNAME = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9\-_]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-_]*[A-Za-z0-9])?)*\.?"
)
_PARAM_CHARS = re.compile(r"[A-Za-z0-9\-_.!~*'()%\[\]/:&+$]+")
_USER_FORBIDDEN = frozenset(' \t\r\n<>"@')
_URI_FORBIDDEN = re.compile(r'[ \t\r\n<>"]')

Params = tuple[tuple[str, str | None], ...]


def parse_params(text: str, source: str) -> Params:
    """Parse ``;name=value;flag`` (text after the first ``;``, without it).

    Args:
        text: The parameter list.
        source: The whole URI or header value, for the error message.
    """
    if not text:
        return ()
    params: list[tuple[str, str | None]] = []
    for item in text.split(";"):
        item = item.strip(" \t")
        if not item:
            raise InvalidUri(source, "empty parameter")
        name, equals, value = item.partition("=")
        name = name.strip(" \t")
        if not _PARAM_CHARS.fullmatch(name):
            raise InvalidUri(source, f"invalid parameter name {name[:40]!r}")
        params.append((name, value.strip(" \t") if equals else None))
        if len(params) > MAX_PARAMS:
            raise InvalidUri(source, f"more than {MAX_PARAMS} parameters")
    return tuple(params)


def format_params(params: Params) -> str:
    """Serialize parameters as ``;name=value;flag``."""
    return "".join(f";{name}" if value is None else f";{name}={value}" for name, value in params)


def param_value(params: Params, name: str) -> str | None:
    """Return the value of parameter ``name`` (case-insensitive), ``""`` for a flag."""
    wanted = name.lower()
    for key, value in params:
        if key.lower() == wanted:
            return "" if value is None else value
    return None


def format_host(host: str) -> str:
    """Put an IPv6 address in brackets (RFC 3261 §19.1.1, ``IPv6reference``)."""
    return f"[{host}]" if ":" in host else host


def _check_host(host: str, uri: str) -> str:
    if not host:
        raise InvalidUri(uri, "empty host")
    if host.startswith("["):
        if not host.endswith("]"):
            raise InvalidUri(uri, "unterminated IPv6 reference")
        inner = host[1:-1]
        try:
            ipaddress.IPv6Address(inner.split("%", 1)[0])
        except ValueError:
            raise InvalidUri(uri, f"invalid IPv6 address {inner!r}") from None
        return inner
    if not _HOSTNAME.fullmatch(host):
        raise InvalidUri(uri, f"invalid host {host[:64]!r}")
    return host


def _split_hostport(hostport: str, uri: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            raise InvalidUri(uri, "unterminated IPv6 reference")
        host, rest = hostport[: close + 1], hostport[close + 1 :]
        if rest and not rest.startswith(":"):
            raise InvalidUri(uri, f"unexpected {rest[:20]!r} after IPv6 reference")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text_or_empty = hostport.partition(":")
        port_text = port_text_or_empty if colon else None
    port: int | None = None
    if port_text is not None:
        if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise InvalidUri(uri, f"invalid port {port_text[:10]!r}")
        port = int(port_text)
    return _check_host(host, uri), port


@dataclass(frozen=True, slots=True)
class SipUri:
    """A parsed ``sip:``, ``sips:`` or ``tel:`` URI.

    Attributes:
        scheme: ``"sip"``, ``"sips"`` or ``"tel"`` (lower case).
        user: The user part (telephone number for ``tel:``), escaped as received.
        host: Host name or address, IPv6 without brackets; empty for ``tel:``.
        port: Port, or ``None`` when the URI has none.
        password: The password in ``user:password@``, discouraged but legal.
        params: URI parameters in order (``transport``, ``lr``, ``maddr``...).
        headers: The raw ``?name=value&...`` part, without the ``?``.
    """

    scheme: str
    user: str | None
    host: str
    port: int | None = None
    password: str | None = None
    params: Params = ()
    headers: str | None = None

    def __post_init__(self) -> None:
        if self.scheme not in _SCHEMES:
            raise ValueError(f"unsupported URI scheme {self.scheme!r}")
        if self.scheme != "tel" and not self.host:
            raise ValueError("a SIP URI needs a host")

    def param(self, name: str) -> str | None:
        """Return parameter ``name`` (``""`` for a flag such as ``lr``), or ``None``."""
        return param_value(self.params, name)

    @property
    def transport(self) -> str:
        """The ``transport`` parameter in lower case; ``"udp"`` by default (``"tls"`` for sips)."""
        value = self.param("transport")
        if value:
            return value.lower()
        return "tls" if self.scheme == "sips" else "udp"

    @property
    def port_or_default(self) -> int:
        """The port, or 5060 (5061 for ``sips:``) when the URI has none."""
        return self.port if self.port is not None else DEFAULT_PORTS.get(self.scheme, 5060)

    def with_params(self, params: Params) -> SipUri:
        """Return a copy with ``params`` replacing the parameters."""
        return SipUri(
            self.scheme, self.user, self.host, self.port, self.password, params, self.headers
        )

    def serialize(self) -> str:
        """Return the URI as text."""
        if self.scheme == "tel":
            return f"tel:{self.user}{format_params(self.params)}"
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(self.user)
            if self.password is not None:
                parts.append(f":{self.password}")
            parts.append("@")
        parts.append(format_host(self.host))
        if self.port is not None:
            parts.append(f":{self.port}")
        parts.append(format_params(self.params))
        if self.headers is not None:
            parts.append(f"?{self.headers}")
        return "".join(parts)

    def __str__(self) -> str:
        return self.serialize()


def parse_uri(text: str) -> SipUri:
    """Parse a SIP, SIPS or tel URI.

    Raises:
        InvalidUri: When ``text`` is not such a URI.
    """
    if len(text) > MAX_URI_LENGTH:
        raise InvalidUri(text[:64] + "...", f"longer than {MAX_URI_LENGTH} characters")
    scheme, colon, rest = text.partition(":")
    scheme = scheme.lower()
    if not colon or scheme not in _SCHEMES:
        raise InvalidUri(text, "scheme is not sip, sips or tel")
    if _URI_FORBIDDEN.search(rest):
        raise InvalidUri(text, "whitespace, quote or angle bracket inside the URI")
    if scheme == "tel":
        number, _, param_text = rest.partition(";")
        if not number:
            raise InvalidUri(text, "empty telephone number")
        return SipUri("tel", number, "", params=parse_params(param_text, text))
    rest, question, header_text = rest.partition("?")
    user: str | None = None
    password: str | None = None
    at = rest.rfind("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        if not userinfo or any(c in _USER_FORBIDDEN for c in userinfo):
            raise InvalidUri(text, "invalid user part")
        user, pw_colon, pw = userinfo.partition(":")
        if not user:
            raise InvalidUri(text, "empty user")
        password = pw if pw_colon else None
    hostport, _, param_text = rest.partition(";")
    host, port = _split_hostport(hostport, text)
    return SipUri(
        scheme,
        user,
        host,
        port,
        password,
        parse_params(param_text, text),
        header_text if question else None,
    )
