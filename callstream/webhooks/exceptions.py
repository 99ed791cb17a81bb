"""Webhook errors.

WebhookError
 ├── SigningKeyError     the signing key file or seed setting is unusable (local: fix config)
 └── DeliveryFailed      one delivery attempt did not get a 2xx (remote, or a bad URL)

``DeliveryFailed.retryable`` says whether trying the same URL again can help: a refused
connection, a timeout or a 500 can; a URL that cannot be sent to at all cannot.
"""

from __future__ import annotations

import enum


class WebhookError(Exception):
    """Base of every error raised by :mod:`callstream.webhooks`."""


class SigningKeyError(WebhookError, ValueError):
    """The webhook signing key could not be loaded or created."""


class FailureKind(enum.IntEnum):
    """Why an attempt failed. Values are the integer codes in the delivery log's ``errors``."""

    HTTP_STATUS = 75001  # the receiver answered, but not 2xx
    CONNECT = 75002  # connection refused, DNS failure, unreachable
    TIMEOUT = 75003  # no complete answer within the event's timeout
    PROTOCOL = 75004  # the receiver broke HTTP (closed early, garbage)
    NETWORK = 75005  # read/write error on an open connection
    INVALID_URL = 75006  # the URL can never be sent to (scheme, syntax)
    NO_URL = 75007  # neither the event nor the settings name a URL


class DeliveryFailed(WebhookError):
    """One attempt failed.

    Attributes:
        kind: the failure class (its value is the code shown in the delivery log).
        reason: a short human-readable description.
        retryable: whether the same URL may succeed later.
        status_code: the HTTP status when the receiver answered.
        body: the start of the receiver's answer, when there was one.
        retry_after: seconds the receiver asked us to wait (``Retry-After``), if any.
    """

    def __init__(
        self,
        kind: FailureKind,
        reason: str,
        *,
        retryable: bool = True,
        status_code: int | None = None,
        body: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.retryable = retryable
        self.status_code = status_code
        self.body = body
        self.retry_after = retry_after

    def __str__(self) -> str:
        if self.status_code is not None:
            return f"HTTP {self.status_code}: {self.reason}"
        return self.reason
