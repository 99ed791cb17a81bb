"""Reusable validated field types: Base64 client_state, URLs, phone numbers, SIP URIs."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_core import PydanticCustomError

from callstream.sip.headers import UA_OWNED_HEADERS, is_ua_owned
from callstream.telephony.codecs import CODECS, UnknownCodec, parse_codec_names

MAX_URL_LENGTH = 2000
MAX_CLIENT_STATE = 4096

# Spelled in the subset of regex that JSON Schema (ECMA-262) shares with Python, so the
# OpenAPI patterns below are these very expressions: ASCII digits (Python's \d takes
# any script's), control characters and space excluded by code (\s differs), and
# fullmatch() (Python's $ also matches before a final newline). A SIP URI goes into the
# Request-URI and To/From headers as it is.
_CTL = r"\x00-\x20\x7f"
_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
_SIP_URI = re.compile(rf'^sips?:[^{_CTL}<>"]+$', re.IGNORECASE)
# The authority of a URL as RFC 3986 writes it (ASCII; IDN hosts in their xn-- form):
# [userinfo@] host [:port], host a reg-name or a bracketed IPv6 literal, port 0-65535.
_HEX4 = "[0-9a-fA-F]{1,4}"
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_IPV4 = rf"(?:{_OCTET}\.){{3}}{_OCTET}"
_IPV6 = "|".join((
    rf"(?:{_HEX4}:){{7}}{_HEX4}",
    rf"(?:{_HEX4}:){{1,7}}:",
    rf"(?:{_HEX4}:){{1,6}}:{_HEX4}",
    rf"(?:{_HEX4}:){{1,5}}(?::{_HEX4}){{1,2}}",
    rf"(?:{_HEX4}:){{1,4}}(?::{_HEX4}){{1,3}}",
    rf"(?:{_HEX4}:){{1,3}}(?::{_HEX4}){{1,4}}",
    rf"(?:{_HEX4}:){{1,2}}(?::{_HEX4}){{1,5}}",
    rf"{_HEX4}:(?::{_HEX4}){{1,6}}",
    rf":(?:(?::{_HEX4}){{1,7}}|:)",
    rf"::(?:[fF]{{4}}(?::0{{1,4}})?:)?{_IPV4}",
    rf"(?:{_HEX4}:){{1,4}}:{_IPV4}",
))
_SUB = "A-Za-z0-9._~!$&'()*+,;=%-"
_PORT = "(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
_AFTER_SCHEME = (
    rf"://(?:[{_SUB}:]*@)?(?:\[(?:{_IPV6})\]|[{_SUB}]+)(?::{_PORT})?(?:[/?#][^{_CTL}]*)?$"
)
_URL = re.compile(rf"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*){_AFTER_SCHEME}")
# RFC 3261 §25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# Characters no SIP header text may carry (TEXT-UTF8 allows only HTAB among controls).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _base64(value: str) -> str:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise PydanticCustomError(
            "invalid_base64", "client_state must be a Base64-encoded string."
        ) from None
    return value


def _url_schema(schemes: tuple[str, ...]) -> Any:
    # What _url checks, as JSON Schema, so clients (and schemathesis) see the rule.
    # (JSON Schema patterns are ECMA-262: no inline flags, so letters are spelled out.)
    alternatives = "|".join("".join(f"[{c.lower()}{c.upper()}]" for c in s) for s in schemes)
    return Field(
        max_length=MAX_URL_LENGTH,
        json_schema_extra={"pattern": rf"^(?:{alternatives}){_AFTER_SCHEME}"},
    )


def _url(schemes: tuple[str, ...]) -> AfterValidator:
    def check(value: str) -> str:
        if len(value) > MAX_URL_LENGTH:
            raise PydanticCustomError(
                "url_too_long", "URL must be at most {limit} characters.", {"limit": MAX_URL_LENGTH}
            )
        match = _URL.fullmatch(value)
        if not match or match["scheme"].lower() not in schemes:
            raise PydanticCustomError(
                "invalid_url",
                "The URL must be a valid {schemes} URL.",
                {"schemes": "/".join(schemes)},
            )
        return value

    return AfterValidator(check)


def _reject_null(value: object) -> object:
    if value is None:
        raise PydanticCustomError("null_not_allowed", "The value cannot be null.")
    return value


def without_null(schema: dict[str, Any]) -> None:
    """Drop a property schema's null branch and null default: for NotNull below, which
    refuses the null, and for form bodies, which cannot carry one."""
    branches = [b for b in schema.pop("anyOf", []) if b.get("type") != "null"]
    if len(branches) == 1:
        schema.update(branches[0])
    elif branches:
        schema["anyOf"] = branches
    schema.pop("default", None)


def _json_integer(value: object) -> object:
    # JSON Schema's integer is a number without a fraction (5 or 5.0); pydantic's lax int
    # would also take true or "5", which the OpenAPI document does not allow.
    if isinstance(value, bool | str):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


def _json_number(value: object) -> object:
    # Likewise for number: pydantic's lax float takes true and "5".
    if isinstance(value, bool | str):
        raise PydanticCustomError("float_type", "Input should be a valid number")
    return value


def _phone_or_sip(value: str) -> str:
    if _E164.fullmatch(value) or _SIP_URI.fullmatch(value):
        return value
    raise PydanticCustomError(
        "invalid_e164", "The value must be a +E164 phone number or a sip: URI."
    )


def _case_free(name: str) -> str:
    # ECMA-262 has no inline (?i): spell each letter as a class.
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in name)


#: sip_header_name's rule as JSON Schema: a token that is none of the UA's own headers
#: (long or compact form, any case), so clients and schemathesis see it.
SIP_HEADER_NAME_PATTERN = (
    "^(?!(?:"
    + "|".join(sorted(_case_free(n) for n in (*UA_OWNED_HEADERS, *"abcdefghijklmnopqrstuvwxyz")
                      if is_ua_owned(n)))
    + ")$)" + _TOKEN.pattern + "$"
)
#: sip_text's rule as JSON Schema.
SIP_TEXT_PATTERN = r"^[^\x00-\x08\x0a-\x1f\x7f]*$"


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


#: _base64's rule as JSON Schema (padded standard alphabet), for the OpenAPI document.
_BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"

ClientState = Annotated[
    str,
    Field(
        max_length=MAX_CLIENT_STATE,
        description="Base64 state echoed in later webhooks.",
        json_schema_extra={"pattern": _BASE64_PATTERN},
    ),
    AfterValidator(_base64),
]
CommandId = Annotated[
    str, Field(max_length=256, description="Idempotency key; a repeat on the same call is ignored.")
]
HttpUrl = Annotated[str, _url(("http", "https")), _url_schema(("http", "https"))]
WsUrl = Annotated[str, _url(("ws", "wss")), _url_schema(("ws", "wss"))]
PhoneOrSip = Annotated[
    str,
    AfterValidator(_phone_or_sip),
    Field(json_schema_extra={"pattern": rf"{_E164.pattern}|{_SIP_URI.pattern}"}),
]
#: Metadata for an int field: ``Annotated[int | None, JsonInteger]``.
JsonInteger = BeforeValidator(_json_integer)
JsonNumber = BeforeValidator(_json_number)
#: For optional fields of an update: may be left out, may not be sent as null.
NotNull = (BeforeValidator(_reject_null), Field(json_schema_extra=without_null))
SipText = Annotated[
    str, AfterValidator(sip_text), Field(json_schema_extra={"pattern": SIP_TEXT_PATTERN})
]

# Telnyx's preferred_codecs: "G722,PCMU", names in any case, spaces around commas.
_CODEC_NAME = "(?:" + "|".join("".join(
    f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in name) for name in CODECS) + ")"
_CODEC_LIST = re.compile(rf"^ *{_CODEC_NAME}(?: *, *{_CODEC_NAME})* *$")


def _codec_list(value: str) -> str:
    if _CODEC_LIST.fullmatch(value):
        return value
    try:
        parse_codec_names([value])
    except UnknownCodec as exc:  # names the codec we can't run
        raise PydanticCustomError("invalid_codec", "{reason}.", {"reason": str(exc)}) from None
    raise PydanticCustomError(
        "invalid_codec", 'Codec names separated by commas, like "G722,PCMU" ({names}).',
        {"names": ", ".join(CODECS)})


PreferredCodecs = Annotated[
    str,
    AfterValidator(_codec_list),
    Field(description="Codecs in order of preference, comma-separated: " + ", ".join(CODECS),
          json_schema_extra={"pattern": _CODEC_LIST.pattern}),
]
