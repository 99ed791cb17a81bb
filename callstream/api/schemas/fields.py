"""Reusable validated field types: Base64 client_state, URLs, phone numbers, SIP URIs."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from callstream.sip.headers import is_ua_owned

MAX_URL_LENGTH = 2000
MAX_CLIENT_STATE = 4096

_E164 = re.compile(r"\+[1-9]\d{1,14}")
# No whitespace, quotes, angle brackets or control characters: the URI goes into
# the Request-URI and To/From headers as it is (fullmatch: "$" would let a final
# LF through).
_SIP_URI = re.compile(r"sips?:[^\s<>\"\x00-\x1f\x7f]+", re.IGNORECASE)
# RFC 3261 §25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# Characters no SIP header text may carry (TEXT-UTF8 allows only HTAB among controls).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_URL = re.compile(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*)://(?P<host>[^/\s?#]+)[^\s]*$")


def _base64(value: str) -> str:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise PydanticCustomError(
            "invalid_base64", "client_state must be a Base64-encoded string."
        ) from None
    return value


def _url(schemes: tuple[str, ...]) -> AfterValidator:
    def check(value: str) -> str:
        if len(value) > MAX_URL_LENGTH:
            raise PydanticCustomError(
                "url_too_long", "URL must be at most {limit} characters.", {"limit": MAX_URL_LENGTH}
            )
        match = _URL.match(value)
        if not match or match["scheme"].lower() not in schemes:
            raise PydanticCustomError(
                "invalid_url",
                "The URL must be a valid {schemes} URL.",
                {"schemes": "/".join(schemes)},
            )
        return value

    return AfterValidator(check)


def _phone_or_sip(value: str) -> str:
    if _E164.fullmatch(value) or _SIP_URI.fullmatch(value):
        return value
    raise PydanticCustomError(
        "invalid_e164", "The value must be a +E164 phone number or a sip: URI."
    )


def sip_header_name(value: str) -> str:
    """A header name an application may add: an RFC 3261 token the UA does not own."""
    if not _TOKEN.fullmatch(value):
        raise PydanticCustomError(
            "invalid_sip_header_name",
            "A SIP header name is a token: letters, digits and - . ! % * _ + ` ' ~ only.",
        )
    if is_ua_owned(value):
        raise PydanticCustomError(
            "reserved_sip_header",
            "The {name} header is written by callstream itself and cannot be set.",
            {"name": value},
        )
    return value


def sip_text(value: str) -> str:
    """Text that goes into a SIP header: one line, no control characters but tab."""
    bad = _CONTROL.search(value)
    if bad is not None:
        raise PydanticCustomError(
            "invalid_sip_text",
            "The value may not contain control characters such as CR or LF "
            "(found {char} at position {position}).",
            {"char": f"U+{ord(bad.group()):04X}", "position": bad.start()},
        )
    return value


ClientState = Annotated[
    str, Field(max_length=MAX_CLIENT_STATE, description="Base64 state echoed in later webhooks."),
    AfterValidator(_base64),
]
CommandId = Annotated[
    str, Field(max_length=256, description="Idempotency key; a repeat on the same call is ignored.")
]
HttpUrl = Annotated[str, _url(("http", "https"))]
WsUrl = Annotated[str, _url(("ws", "wss"))]
PhoneOrSip = Annotated[str, AfterValidator(_phone_or_sip)]
SipText = Annotated[str, AfterValidator(sip_text)]
