"""The commands Call Control runs, as typed requests.

``api/`` validates a body with its pydantic schema and converts it once, with the
schema's ``to_request()``, into one of these; from there on no layer reads a dict.
Defaults are those of spec §3 and §4, applied here so a request built in a test means the same
as one from the API. Fields keep the spec's names (``stream_track``...) so a reader
can match them to the wire.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: One extra SIP header of a dial or hangup: (name, value), both checked by the schema.
SipHeader = tuple[str, str]


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """What every call command carries (spec §2)."""

    #: A repeat with the same id on the same call gets the first answer, and does nothing.
    command_id: str | None = None
    #: Replaces the call's client_state before the command runs.
    client_state: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamSpec:
    """A stream to open: streaming_start's body, or the ``stream_*`` fields of dial/answer.

    The ``stream_bidirectional_*`` fields stay None when not given: a stream is
    bidirectional when any of them is (spec §3.1).
    """

    stream_url: str
    stream_track: str = "inbound_track"
    stream_codec: str = "default"
    stream_bidirectional_mode: str | None = None
    stream_bidirectional_codec: str | None = None
    stream_bidirectional_sampling_rate: int | None = None
    stream_bidirectional_target_legs: str | None = None
    stream_auth_token: str | None = None
    custom_parameters: tuple[tuple[str, str], ...] = ()
    #: callstream extension: reconnect window after a drop; None: the server's default.
    stream_reconnect_seconds: float | None = None

    @property
    def bidirectional(self) -> bool:
        return any(value is not None for value in (
            self.stream_bidirectional_mode, self.stream_bidirectional_codec,
            self.stream_bidirectional_sampling_rate, self.stream_bidirectional_target_legs))


@dataclass(frozen=True, slots=True, kw_only=True)
class TranscriptionSpec:
    """A transcription to run: transcription_start's body, or dial/answer's
    ``transcription_config`` (spec §3.5). Engine config keys a local engine can't
    honour are dropped by the schema."""

    transcription_engine: str = "Google"
    transcription_tracks: Literal["inbound", "outbound", "both"] = "inbound"
    language: str | None = None
    interim_results: bool = False
    transcription_model: str | None = None
    model: str | None = None
    hints: tuple[str, ...] = ()
    keyterms: tuple[str, ...] = ()
    #: callstream's own: the model for finals (two-pass; docs/transcription.md).
    final_model: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Dial(Command):
    """``POST /v2/calls``: place an outgoing call (spec §4.1)."""

    connection_id: str
    to: str
    from_: str
    from_display_name: str | None = None
    timeout_secs: int = 30
    time_limit_secs: int = 14400
    webhook_url: str | None = None
    custom_headers: tuple[SipHeader, ...] = ()
    send_silence_when_idle: bool = False
    #: Comma-separated codec names leading the offer (the API checked them).
    preferred_codecs: str | None = None
    #: Started once the call is answered (or opened before the INVITE, below).
    stream: StreamSpec | None = None
    stream_establish_before_call_originate: bool = False
    #: Started once the call is answered.
    transcription: TranscriptionSpec | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer(Command):
    """``actions/answer`` on a parked incoming call (spec §4.2)."""

    webhook_url: str | None = None
    send_silence_when_idle: bool = False
    preferred_codecs: str | None = None
    stream: StreamSpec | None = None
    transcription: TranscriptionSpec | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Hangup(Command):
    custom_headers: tuple[SipHeader, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Reject(Command):
    cause: Literal["CALL_REJECTED", "USER_BUSY"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Bridge(Command):
    #: The other call.
    call_control_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TexmlCallback:
    """Where a TeXML stream's status callbacks go (``Streams.json``, spec §10.1)."""

    account_sid: str
    name: str | None = None
    status_callback: str | None = None
    status_callback_method: Literal["GET", "POST"] = "POST"


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamingStart(Command):
    stream: StreamSpec
    #: A stream started over TeXML: its status callbacks.
    texml: TexmlCallback | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamingStop(Command):
    #: The stream to stop; None: every stream of the call.
    stream_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ForkStart(Command):
    """Give ``rx`` and ``tx``, or the legacy ``target`` (spec §3.3); the fork manager
    says which combination is missing. Addresses as ``udp:<ip or host>:<port>``."""

    rx: str | None = None
    tx: str | None = None
    target: str | None = None
    stream_type: Literal["decrypted", "raw"] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ForkStop(Command):
    #: Accepted and not matched: the call's one fork stops whatever its type.
    stream_type: Literal["decrypted", "raw"] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TranscriptionStart(Command):
    transcription: TranscriptionSpec = field(default_factory=TranscriptionSpec)


@dataclass(frozen=True, slots=True, kw_only=True)
class TranscriptionStop(Command):
    """``actions/transcription_stop``: only the command fields."""
