"""Test helpers for the SIP layer: fixtures, a fake clock, two endpoints on a fake wire."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import pathlib
from collections.abc import Callable
from dataclasses import dataclass, field

from callstream.sip.endpoint import CallAnswered, Datagram, IncomingCall, SipEndpoint, SipEvent
from callstream.sip.message import SipMessage, SipRequest, SipResponse, parse_message
from callstream.sip.transaction import TimerConfig

DATA = pathlib.Path(__file__).parent / "data"

UAC_ADDR = ("127.0.0.1", 5070)
UAS_ADDR = ("127.0.0.1", 5060)

OFFER = (
    b"v=0\r\n"
    b"o=- 1 1 IN IP4 127.0.0.1\r\n"
    b"s=-\r\n"
    b"c=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-15\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)
ANSWER = OFFER.replace(b"40000", b"50000").replace(b"0 8 101", b"0 101")


def fixture(name: str) -> bytes:
    """A message from tests/sip/data, with the LF line ends on disk turned into CRLF."""
    return (DATA / name).read_bytes().replace(b"\n", b"\r\n")


def make_token(prefix: str) -> Callable[[int], str]:
    """A deterministic stand-in for ``secrets.token_hex``."""
    counter = itertools.count(1)

    def token(nbytes: int) -> str:
        return f"{prefix}{next(counter):0{max(2 * nbytes - len(prefix), 1)}x}"

    return token


class FakeClock:
    """Time that moves only when a test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Delivered:
    """One message that crossed the wire."""

    time: float
    source: tuple[str, int]
    dest: tuple[str, int]
    data: bytes
    dropped: bool = False

    @property
    def message(self) -> SipMessage:
        return parse_message(self.data)

    @property
    def first_line(self) -> str:
        return self.data.split(b"\r\n", 1)[0].decode()


@dataclass
class UacUasPair:
    """Two endpoints (UAC at 127.0.0.1:5070, UAS at :5060) on a fake UDP wire.

    ``drop(delivered) -> bool`` loses chosen messages; every message is kept
    in ``wire`` with its time, so tests can check retransmission schedules.
    """

    timers: TimerConfig = field(default_factory=TimerConfig)
    clock: FakeClock = field(default_factory=FakeClock)
    drop: Callable[[Delivered], bool] | None = None
    wire: list[Delivered] = field(default_factory=list)
    uac_events: list[SipEvent] = field(default_factory=list)
    uas_events: list[SipEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.uac = SipEndpoint(UAC_ADDR, timers=self.timers, token=make_token("a"))
        self.uas = SipEndpoint(UAS_ADDR, timers=self.timers, token=make_token("b"))
        self._by_addr = {UAC_ADDR: self.uac, UAS_ADDR: self.uas}

    @property
    def now(self) -> float:
        return self.clock.now

    def pump(self) -> None:
        """Deliver messages until both sides are quiet; collect events."""
        while True:
            moved = False
            for source, endpoint in self._by_addr.items():
                for datagram in endpoint.datagrams_to_send():
                    moved = True
                    self._deliver(source, datagram)
            self.uac_events.extend(self.uac.events_received())
            self.uas_events.extend(self.uas.events_received())
            if not moved:
                return

    def _deliver(self, source: tuple[str, int], datagram: Datagram) -> None:
        record = Delivered(self.clock.now, source, datagram.addr, datagram.data)
        if self.drop is not None and self.drop(record):
            record.dropped = True
        self.wire.append(record)
        target = self._by_addr.get(datagram.addr)
        if target is not None and not record.dropped:
            target.receive_datagram(datagram.data, source, self.clock.now)

    def next_deadline(self) -> float | None:
        deadlines = [d for d in (self.uac.next_deadline(), self.uas.next_deadline()) if d]
        return min(deadlines) if deadlines else None

    def advance(self, seconds: float) -> None:
        """Move time forward, firing every timer on the way in order."""
        target = self.clock.now + seconds
        self.pump()
        while True:
            deadline = self.next_deadline()
            if deadline is None or deadline > target:
                break
            self.clock.now = max(self.clock.now, deadline)
            self.uac.handle_timeout(self.clock.now)
            self.uas.handle_timeout(self.clock.now)
            self.pump()
        self.clock.now = target

    def sent_by(self, source: tuple[str, int], first_line_prefix: str) -> list[Delivered]:
        return [
            d
            for d in self.wire
            if d.source == source and d.first_line.startswith(first_line_prefix)
        ]

    def take_uac(self) -> list[SipEvent]:
        events, self.uac_events = self.uac_events, []
        return events

    def take_uas(self) -> list[SipEvent]:
        events, self.uas_events = self.uas_events, []
        return events


def request_of(data: bytes) -> SipRequest:
    message = parse_message(data)
    assert isinstance(message, SipRequest)
    return message


def response_of(data: bytes) -> SipResponse:
    message = parse_message(data)
    assert isinstance(message, SipResponse)
    return message


class EventLog:
    """An ``on_event`` callback that keeps events and lets a test await one."""

    def __init__(self) -> None:
        self.events: list[SipEvent] = []
        self._changed = asyncio.Event()

    def __call__(self, event: SipEvent) -> None:
        self.events.append(event)
        self._changed.set()

    async def wait_for(self, predicate: Callable[[list[SipEvent]], bool]) -> None:
        """Wait until ``predicate(events)`` holds (callers bound the wait)."""
        while not predicate(self.events):
            self._changed.clear()
            await self._changed.wait()

    async def wait_for_type(self, kind: type[SipEvent]) -> None:
        await self.wait_for(lambda events: any(isinstance(e, kind) for e in events))


# ------------------------------------------------------- whole-call helpers


TARGET = "sip:service@127.0.0.1:5060"
FROM = "sip:alice@127.0.0.1:5070"
HOLD = OFFER.replace(b"a=sendrecv", b"a=sendonly")


def place_call(pair: UacUasPair) -> tuple[str, IncomingCall]:
    handle = pair.uac.invite(TARGET, from_uri=FROM, sdp=OFFER, now=pair.now)
    pair.pump()
    (incoming,) = pair.take_uas()
    assert isinstance(incoming, IncomingCall)
    return handle, incoming


def connected(pair: UacUasPair) -> tuple[str, str]:
    handle, incoming = place_call(pair)
    pair.uas.answer(incoming.handle, ANSWER, pair.now)
    pair.pump()
    assert [type(e) for e in pair.take_uac()] == [CallAnswered]
    return handle, incoming.handle


def lines(pair: UacUasPair, source: tuple[str, int] | None = None) -> list[str]:
    return [d.first_line for d in pair.wire if source is None or d.source == source]


REASONS = {401: "Unauthorized", 407: "Proxy Authentication Required"}


def challenge_response(invite: SipRequest, status: int, header: str, nonce: str) -> bytes:
    response = (
        f"SIP/2.0 {status} {REASONS[status]}\r\n"
        f"Via: {invite.headers.get('Via')}\r\n"
        f"From: {invite.headers.get('From')}\r\n"
        f"To: {invite.headers.get('To')};tag=trunk1\r\n"
        f"Call-ID: {invite.headers.get('Call-ID')}\r\n"
        f"CSeq: {invite.headers.get('CSeq')}\r\n"
        f'{header}: Digest realm="trunk", nonce="{nonce}", algorithm=MD5, qop="auth"\r\n'
        "Content-Length: 0\r\n\r\n"
    )
    return response.encode()


#: The fixtures come from peers on private networks, and the helpers from loopback.
PRIVATE_NETWORKS = [
    ipaddress.ip_network(net)
    for net in ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
]


def uas() -> SipEndpoint:
    return SipEndpoint(UAS_ADDR, token=make_token("b"), allowed_networks=PRIVATE_NETWORKS)


def answer_to(
    endpoint: SipEndpoint, data: bytes, source: tuple[str, int] = UAC_ADDR
) -> SipResponse:
    endpoint.receive_datagram(data, source, 0.0)
    out = endpoint.datagrams_to_send()
    assert len(out) == 1, out
    return response_of(out[0].data)


def new_invite(n: int) -> bytes:
    """The SIPp INVITE as a new call: its own Call-ID, From tag and branch."""
    return (fixture("sipp_invite.sip")
            .replace(b"1-4711@", f"{n}-4711@".encode())
            .replace(b"SIPpTag001", f"SIPpTag{n:03d}".encode())
            .replace(b"-4711-1-0", f"-4711-{n}-0".encode()))
