"""A bridge hop: a bridged leg's audio to and from a leg held by another process.

Two calls held by different processes (``--workers``, or the nodes of a cluster) are
bridged by a hop: each side sends its leg's inbound audio to the other, one datagram
per 20 ms frame, and plays what the other sends into its leg's outbound through a
:class:`~callstream.media.hub.BridgeSource`, as a bridge in one process does; each leg
stays with the process that holds its SIP dialog and RTP sockets.

A datagram is an RTP header (RFC 3550: version 2, no padding, extension or CSRC,
payload type :data:`HOP_PAYLOAD_TYPE`, a sequence number, a timestamp in samples of the
sender's rate and the SSRC the sender announced when the hop was set up) followed by
one frame of PCM s16le mono at the higher of the two legs' rates (each side announces
its own). PCM, not the legs' codec: the two legs may use different ones.

A hop takes datagrams only from the peer's announced address and SSRC, each exactly one
frame at the rate both sides agreed, so a stray or forged sender is dropped (counted)
and never reaches the call.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from callstream.media.codecs.resample import SUPPORTED_RATES
from callstream.media.hub import AudioFrame

log = logging.getLogger(__name__)

#: A dynamic RTP payload type (RFC 3551) for the hop's PCM, never seen on a call's RTP.
HOP_PAYLOAD_TYPE = 127

_HEADER = struct.Struct("!BBHII")
_FIRST_OCTET = 0x80  # version 2, no padding, no extension, no CSRC


class HopError(ValueError):
    """A datagram that is not a hop frame of the expected peer."""


def encode_frame(sequence: int, timestamp: int, ssrc: int, pcm: bytes) -> bytes:
    """One hop datagram: the RTP header, then ``pcm``."""
    return _HEADER.pack(_FIRST_OCTET, HOP_PAYLOAD_TYPE, sequence & 0xFFFF,
                        timestamp & 0xFFFFFFFF, ssrc) + pcm


def decode_frame(data: bytes, ssrc: int, frame_bytes: int) -> bytes:
    """The PCM of a hop datagram sent with ``ssrc``: one frame of ``frame_bytes``.

    Raises:
        HopError: the datagram is short, not a plain version-2 header, of another
            payload type or SSRC, or not one frame of audio.
    """
    if len(data) < _HEADER.size:
        raise HopError(f"hop datagram of {len(data)} bytes is shorter than its header")
    first, payload_type, _, _, sent_ssrc = _HEADER.unpack_from(data)
    if first != _FIRST_OCTET:
        raise HopError(f"hop datagram starts with {first:#04x}, not 0x80")
    if payload_type != HOP_PAYLOAD_TYPE:
        raise HopError(f"hop datagram has payload type {payload_type}, not {HOP_PAYLOAD_TYPE}")
    if sent_ssrc != ssrc:
        raise HopError(f"hop datagram has SSRC {sent_ssrc:#010x}, not the peer's {ssrc:#010x}")
    size = len(data) - _HEADER.size
    if size != frame_bytes:
        raise HopError(f"hop datagram holds {size} audio bytes, not a frame's {frame_bytes}")
    return data[_HEADER.size:]


@dataclass(frozen=True, slots=True)
class HopOffer:
    """One side of a hop, as announced to the other: where it listens, what it sends."""

    host: str
    port: int
    sample_rate: int
    ssrc: int

    def as_json(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "sample_rate": self.sample_rate,
                "ssrc": self.ssrc}

    @classmethod
    def from_json(cls, value: Any) -> HopOffer:
        """The offer in a peer's JSON.

        Raises:
            HopError: a field is missing or out of range.
        """
        if not isinstance(value, dict):
            raise HopError("a hop offer is a JSON object")
        host, port = value.get("host"), value.get("port")
        rate, ssrc = value.get("sample_rate"), value.get("ssrc")
        if not isinstance(host, str) or not 0 < len(host) <= 255:
            raise HopError("a hop offer's host is a non-empty string")
        if type(port) is not int or not 0 < port < 65536:
            raise HopError("a hop offer's port is an integer from 1 to 65535")
        if type(rate) is not int or rate not in SUPPORTED_RATES:
            raise HopError(f"a hop offer's sample_rate is one of {sorted(SUPPORTED_RATES)}")
        if type(ssrc) is not int or not 0 <= ssrc <= 0xFFFFFFFF:
            raise HopError("a hop offer's ssrc is a 32-bit unsigned integer")
        return cls(host, port, rate, ssrc)


class HopEndpoint(asyncio.DatagramProtocol):
    """One side of a hop: sends this leg's frames, hands the peer's PCM to ``sink``.

    Until :meth:`connect` names the peer, nothing is sent and everything received is
    dropped.
    """

    def __init__(self) -> None:
        self.ssrc = secrets.randbits(32)
        self.peer: tuple[str, int] | None = None
        self.peer_ssrc = 0
        self.frame_bytes = 0
        self.sink: Callable[[bytes], None] | None = None
        self.frames_sent = 0
        self.frames_received = 0
        self.dropped = 0  # datagrams from elsewhere, or not hop frames of the peer
        self.early = 0  # the peer's first frames, sent before we knew its address
        self._transport: asyncio.DatagramTransport | None = None
        self._timestamp = 0
        self._warned = False

    @property
    def address(self) -> tuple[str, int]:
        assert self._transport is not None
        host, port = self._transport.get_extra_info("sockname")[:2]
        return host, port

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)  # uvloop's: no subclass

    def connect(self, peer: HopOffer, frame_bytes: int, sink: Callable[[bytes], None]
                ) -> None:
        """Send to and take from ``peer`` frames of ``frame_bytes``; ``sink`` gets
        each one received."""
        self.peer = (peer.host, peer.port)
        self.peer_ssrc = peer.ssrc
        self.frame_bytes = frame_bytes
        self.sink = sink

    def send_frame(self, frame: AudioFrame) -> None:
        """A frame callback: on the outbound track of the peer's leg in our hub."""
        transport, peer = self._transport, self.peer
        if transport is None or peer is None or transport.is_closing():
            return
        pcm = frame.pcm
        transport.sendto(encode_frame(self.frames_sent, self._timestamp, self.ssrc, pcm), peer)
        self.frames_sent += 1
        self._timestamp += len(pcm) >> 1

    def datagram_received(self, data: bytes, addr: Any) -> None:
        peer, sink = self.peer, self.sink
        if peer is None or sink is None:
            # The other side joins first and may send before its answer reaches us.
            self.early += 1
            return
        if (addr[0], addr[1]) != peer:
            self._drop(f"a datagram from {addr[0]}:{addr[1]}, not the peer")
            return
        try:
            pcm = decode_frame(data, self.peer_ssrc, self.frame_bytes)
        except HopError as exc:
            self._drop(str(exc))
            return
        self.frames_received += 1
        sink(pcm)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable: the peer's side closed first; its notice follows.
        log.debug("bridge hop %s: %s", self.peer, exc)

    def _drop(self, why: str) -> None:
        self.dropped += 1
        if not self._warned:  # once per hop: a flood must not flood the log
            self._warned = True
            log.warning("bridge hop from %s: dropped %s", self.peer, why)

    @property
    def closed(self) -> bool:
        return self._transport is None or self._transport.is_closing()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def open_hop(host: str) -> HopEndpoint:
    """A hop endpoint on a free UDP port of ``host`` (the address the leg's RTP uses)."""
    loop = asyncio.get_running_loop()
    _, endpoint = await loop.create_datagram_endpoint(
        HopEndpoint, local_addr=(host, 0))
    return endpoint
