"""Reusable validated field types: Base64 client_state, URLs, phone numbers, SIP URIs."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

MAX_URL_LENGTH = 2000
MAX_CLIENT_STATE = 4096

_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_SIP_URI = re.compile(r"^sips?:[^\s<>\"]+$", re.IGNORECASE)
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
    if _E164.match(value) or _SIP_URI.match(value):
        return value
    raise PydanticCustomError(
        "invalid_e164", "The value must be a +E164 phone number or a sip: URI."
    )


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
