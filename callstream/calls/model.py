"""A live call leg as the owning process holds it."""

from __future__ import annotations

import base64
import secrets
import uuid
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from callstream.calls.state import ALIVE, CallEvent, CallState, next_state
from callstream.store.records import CallRecord

if TYPE_CHECKING:
    from callstream.calls.features import Feature
    from callstream.calls.requests import Answer, Dial


def new_call_control_id() -> str:
    """``v3:`` + URL-safe token: no ``/`` so SDK path encoding never matters (spec §2)."""
    return "v3:" + base64.urlsafe_b64encode(secrets.token_bytes(24)).decode().rstrip("=")


@dataclass(slots=True)
class Call:
    record: CallRecord
    state: CallState
    application_webhook_url: str | None = None
    application_failover_url: str | None = None
    webhook_timeout_secs: float = 10.0
    bridged_with: str | None = None
    #: The dial that placed this call, or the answer that took it: the stream and
    #: transcription it asked for start once the call is answered (calls.features).
    setup: Dial | Answer | None = None
    #: Running media features (streams, forks, transcriptions), see calls.features.
    features: dict[str, Feature] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.record.call_control_id

    @property
    def alive(self) -> bool:
        return self.state in ALIVE

    def apply(self, event: CallEvent, **changes: Any) -> None:
        self.state = next_state(self.state, event)
        changes.setdefault("state", self.state.value)
        changes.setdefault("is_alive", self.alive)
        self.record = replace(self.record, **changes)

    def update(self, **changes: Any) -> None:
        self.record = replace(self.record, **changes)


def new_record(
    *,
    direction: str,
    connection_id: str,
    from_: str,
    to: str,
    state: CallState,
    start_time: str,
    owner: str,
    session_id: str | None = None,
    client_state: str | None = None,
    webhook_url: str | None = None,
    details: dict[str, Any] | None = None,
) -> CallRecord:
    return CallRecord(
        call_control_id=new_call_control_id(),
        call_leg_id=str(uuid.uuid4()),
        call_session_id=session_id or str(uuid.uuid4()),
        connection_id=connection_id,
        direction=direction,
        from_=from_,
        to=to,
        state=state.value,
        is_alive=True,
        start_time=start_time,
        owner=owner,
        client_state=client_state,
        webhook_url=webhook_url,
        details=details or {},
    )
