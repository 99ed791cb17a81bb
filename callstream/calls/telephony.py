"""The seam between the call layer and the process that holds SIP dialogs and RTP sockets.

Two Protocols, one per direction:

* :class:`Telephony` — what :class:`~callstream.calls.control.CallControl` asks of
  the telephony side (:class:`callstream.telephony.switch.Switch`): dial, answer,
  reject, hang up, bridge, the media of a leg;
* :class:`TelephonyReports` — what the telephony side tells the call layer back
  (``CallControl`` implements it): a new call, a leg answered or ended, any other
  call event.

Keeping both seams Protocols lets the domain code stay free of sockets, and lets
each side be tested against a fake of the other.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from callstream.calls.features import LegMedia
from callstream.calls.model import Call


class Telephony(Protocol):
    async def dial(
        self,
        call: Call,
        target_uri: str,
        *,
        from_uri: str,
        display_name: str | None,
        headers: list[tuple[str, str]],
    ) -> None:
        """Send the INVITE; the outcome arrives as ``leg_answered``/``leg_ended``."""

    def answer(self, call: Call) -> None:
        """Send 200 OK with our SDP answer; ``leg_answered`` follows."""

    def reject(self, call: Call, status: int, reason: str) -> None: ...

    def hangup(self, call: Call, headers: list[tuple[str, str]]) -> None:
        """BYE if answered; CANCEL an unanswered outgoing leg, 480 an unanswered incoming one."""

    def bridge(self, a: Call, b: Call) -> None: ...

    def unbridge(self, call: Call) -> None: ...

    def media(self, call: Call) -> LegMedia:
        """The leg's media, for taps; raises KeyError when the call has none here."""
        ...


class TelephonyReports(Protocol):
    async def incoming_call(
        self, *, from_: str, to: str, connection_id: str, details: dict[str, Any]
    ) -> Call | None:
        """A new INVITE: park it and announce it; ``None`` refuses it (480)."""

    async def leg_answered(self, call: Call, media: dict[str, Any]) -> None:
        """The leg is up (``media``: codec and sampling_rate for call.answered)."""

    async def leg_ended(
        self,
        call: Call,
        *,
        cause: str,
        source: str,
        sip_code: int | None,
        quality: dict[str, Any] | None = None,
    ) -> None:
        """The leg is gone: its features stop and call.hangup is sent."""

    async def leg_event(self, call: Call, event_type: str, extra: dict[str, Any]) -> None:
        """Any other webhook of the call (call.dtmf.received...)."""

    def lock(self, call_control_id: str) -> AbstractAsyncContextManager[None]:
        """The call's command lock: held while a new call's leg is readied, so a command
        (answer) that comes first waits for the leg."""
