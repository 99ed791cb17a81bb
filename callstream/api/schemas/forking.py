"""Request models for fork_start / fork_stop (spec §3.3, §3.4)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from callstream.api.schemas.common import CommandBody
from callstream.calls.requests import ForkStart, ForkStop
from callstream.forking.target import InvalidTarget, parse_target


def _udp_target(value: str) -> str:
    try:
        parse_target(value)
    except InvalidTarget as exc:
        raise PydanticCustomError(
            "invalid_fork_target", "The address {reason}.", {"reason": str(exc)}
        ) from None
    return value


UdpTarget = Annotated[
    str,
    AfterValidator(_udp_target),
    Field(description="udp:<ip>:<port>; IPv6 as udp:[addr]:port; host names are resolved "
          "once when the fork starts.", examples=["udp:192.0.2.10:5000"]),
]


class ForkStartRequest(CommandBody):
    rx: UdpTarget | None = Field(None, description="Where the RTP the call receives goes.")
    tx: UdpTarget | None = Field(None, description="Where the RTP the call sends goes.")
    target: UdpTarget | None = Field(
        None, description="Legacy: both directions to one address, each packet behind a "
        "24-byte STREP header. Use instead of rx/tx.")
    stream_type: Literal["decrypted", "raw"] | None = Field(
        None, description="'decrypted' (default with rx/tx) or legacy 'raw' (default with "
        "target). No SRTP here, so both forward the same bytes.")

    def to_request(self) -> ForkStart:
        return ForkStart(command_id=self.command_id, client_state=self.client_state,
                         rx=self.rx, tx=self.tx, target=self.target,
                         stream_type=self.stream_type)


class ForkStopRequest(CommandBody):
    stream_type: Literal["raw", "decrypted"] | None = Field(
        None, description="Accepted for compatibility; the call's fork stops whatever it is.")

    def to_request(self) -> ForkStop:
        return ForkStop(command_id=self.command_id, client_state=self.client_state,
                        stream_type=self.stream_type)
