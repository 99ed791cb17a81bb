"""A caller's audio end made of a real UDP socket: sends RTP paced at 20 ms, records what
it receives. SIP is done by SIPp (tests/e2e/data/uas_rtp_peer.xml points its SDP here)."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

from callstream.media.codecs import get_codec
from callstream.media.rtp import build_packet, parse_header


@dataclass
class Received:
    time: float
    payload_type: int
    payload: bytes


@dataclass
class RtpPeer:
    sock: socket.socket = field(
        default_factory=lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    remote: tuple[str, int] | None = None
    received: list[Received] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)  # payloads, in order
    sent_at: list[float] = field(default_factory=list)  # monotonic send time of each
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self._seq = 1
        self._ts = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except (TimeoutError, OSError):
                continue
            if len(data) < 12 or 200 <= data[1] <= 207:
                continue  # RTCP
            pt, _, _, _, _, start, end = parse_header(data)
            self.received.append(Received(time.monotonic(), pt, data[start:end]))

    def _packet(self, pt: int, payload: bytes, marker: bool = False, ts: int | None = None
                ) -> bytes:
        packet = build_packet(pt, marker, self._seq & 0xFFFF,
                              (self._ts if ts is None else ts) & 0xFFFFFFFF, 0x5EED, payload)
        self._seq += 1
        return packet

    def play(self, pcm: bytes, codec: str = "PCMU") -> None:
        """Send ``pcm`` as 20 ms packets in real time (blocks)."""
        assert self.remote is not None
        info = get_codec(codec)
        encoder = info.new_encoder()
        step = info.pcm_frame_bytes
        start = time.monotonic()
        for i, offset in enumerate(range(0, len(pcm) - step + 1, step)):
            payload = encoder.encode(pcm[offset:offset + step])
            self.sock.sendto(self._packet(info.payload_type, payload, i == 0), self.remote)
            self.sent.append(payload)
            self.sent_at.append(time.monotonic())
            self._ts += info.frame_ticks
            delay = start + (i + 1) * 0.02 - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def dtmf(self, digit: str, pt: int = 101) -> None:
        """Send one RFC 4733 key press (60 ms, three end packets)."""
        assert self.remote is not None
        event = "0123456789*#ABCD".index(digit)
        ts = self._ts
        for i in range(1, 4):
            payload = bytes([event, 10]) + (i * 160).to_bytes(2, "big")
            self.sock.sendto(self._packet(pt, payload, i == 1, ts), self.remote)
            time.sleep(0.02)
        for _ in range(3):
            payload = bytes([event, 0x80 | 10]) + (480).to_bytes(2, "big")
            self.sock.sendto(self._packet(pt, payload, False, ts), self.remote)
        self._ts += 480

    def audio(self, pt: int = 0) -> bytes:
        """What it received, PCMU payloads concatenated."""
        return b"".join(r.payload for r in list(self.received) if r.payload_type == pt)

    def close(self) -> None:
        self._stop.set()
        self._reader.join(2)
        self.sock.close()
