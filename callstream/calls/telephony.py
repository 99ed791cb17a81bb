"""What the call layer needs from the process that holds SIP dialogs and RTP sockets.

:class:`~callstream.calls.control.CallControl` drives a :class:`Telephony`; the
telephony side reports back through the ``CallControl.on_*`` methods. Keeping this
seam a Protocol lets the domain code stay free of sockets.
"""

from __future__ import annotations

from typing import Protocol

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
        """Send the INVITE; the outcome arrives as ``on_answered``/``on_ended``."""

    def answer(self, call: Call) -> None:
        """Send 200 OK with our SDP answer; ``on_answered`` follows the ACK."""

    def reject(self, call: Call, status: int, reason: str) -> None: ...

    def hangup(self, call: Call, headers: list[tuple[str, str]]) -> None:
        """BYE if answered; CANCEL an unanswered outgoing leg, 480 an unanswered incoming one."""

    def bridge(self, a: Call, b: Call) -> None: ...

    def unbridge(self, call: Call) -> None: ...

    def media(self, call: Call) -> LegMedia:
        """The leg's media, for taps; raises KeyError when the call has none here."""
        ...
