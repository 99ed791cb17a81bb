"""The asyncio edge of the media layer: sockets, the 20 ms pacer, tap readers.

Theory of operation
-------------------
Everything here is thin: it moves datagrams and time into the sans-I/O cores
and output back onto sockets. Nothing on the media path awaits.

* :class:`PortAllocator` hands out even RTP ports from a range (RTCP is the
  odd port above, RFC 3550 §11).
* :class:`RtpEndpoint` is the ``asyncio.DatagramProtocol`` of one leg's RTP
  socket (a small sibling protocol serves RTCP). ``datagram_received`` runs
  synchronously: session → (accepted packet) hub packet taps. ICMP errors
  reported through ``error_received`` are counted, never fatal: a peer that
  hung up without BYE must not take the call down with an exception.
* :class:`Pacer` is **one** loop timer for all legs — not a task per call.
  Each 20 ms tick it (1) plays every leg's jitter buffer out into its hub
  (inbound), then (2) ticks every hub and sends each leg's outbound frame,
  then (3) runs the sessions' RTCP and no-media timers when due. Doing every
  inbound step before any outbound step lets a bridged peer's frame cross in
  the same tick. A leg whose inbound PCM nobody reads (no frame tap or
  callback: a stream that forwards packets) plays its jitter buffer out
  unheard: the same losses and counters, no decode; PCM flows from the tick
  after a tap attaches. The schedule is ``start + n * 20 ms`` against
  ``loop.time()``, so timer lateness does not accumulate; after a stall of
  more than :data:`MAX_CATCHUP_TICKS` it skips ahead instead of bursting.
* :class:`TapReader` lets a coroutine ``await`` frames from a
  :class:`~callstream.media.hub.FrameTap`.

Works on the default asyncio loop and on uvloop.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import socket
from collections.abc import Callable
from typing import cast

from callstream.media.clock import wallclock_offset
from callstream.media.exceptions import MediaStateError, PortsExhaustedError
from callstream.media.hub import AudioFrame, FrameTap, MediaHub, Track
from callstream.media.metrics import (
    PACER_TICKS,
    PLAYBACK_DISCARDED_STALL,
    RTP_LOST,
    RTP_PACKETS,
    RTP_REJECTED,
    RTP_SKIPPED_OUT,
)
from callstream.media.rtp import (
    RTCP_MUX_FIRST,
    RTCP_MUX_LAST,
    RTP_HEADER_LENGTH,
    rtp_view,
)
from callstream.media.session import Address, RtpSession, SessionEvent

__all__ = [
    "MAX_CATCHUP_TICKS",
    "PACER_INTERVAL",
    "Pacer",
    "PortAllocator",
    "RtpEndpoint",
    "TapReader",
    "open_rtp_endpoint",
]

logger = logging.getLogger(__name__)

PACER_INTERVAL = 0.020
MAX_CATCHUP_TICKS = 3  # more than 60 ms behind: skip ahead rather than burst
BIND_YIELD_EVERY = 64  # busy pairs tried between yields to the loop (a full range is thousands)

EventHandler = Callable[[SessionEvent], None]
_ON_TIME, _LATE, _SKIPPED = (PACER_TICKS.labels(o) for o in ("on_time", "late", "skipped"))
_REJECTED_FOREIGN = RTP_REJECTED.labels("rtp", "foreign")
_REJECTED_PROBATION = RTP_REJECTED.labels("rtp", "probation")
_REJECTED_RTCP = RTP_REJECTED.labels("rtcp", "foreign")


class PortAllocator:
    """Hands out even RTP ports (RTCP = port + 1) from an inclusive range.

    Ports are handed out round-robin from a random starting pair, so a
    just-released port rests before reuse (late packets of the old call do not
    reach the new one), and two servers sharing a range (or another program
    holding its bottom) do not all fight over the first pairs.

    Args:
        range_start: lowest port; rounded up to even.
        range_end: highest port; the last pair must fit below it.
        rng: picks the starting pair (tests pass a seeded one).
    """

    __slots__ = ("_cursor", "_in_use", "_ports", "range_end", "range_start")

    def __init__(
        self, range_start: int, range_end: int, *, rng: random.Random | None = None
    ) -> None:
        first = range_start + (range_start & 1)
        if not 0 < range_start <= range_end <= 65535 or first + 1 > range_end:
            raise ValueError(f"RTP port range {range_start}-{range_end} holds no even/odd pair")
        self.range_start = range_start
        self.range_end = range_end
        self._ports = range(first, range_end, 2)
        self._cursor = (rng if rng is not None else random.SystemRandom()).randrange(
            len(self._ports)
        )
        self._in_use: set[int] = set()

    @property
    def capacity(self) -> int:
        """How many port pairs the range holds."""
        return len(self._ports)

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    def allocate(self) -> int:
        """Return a free even port.

        Raises:
            PortsExhaustedError: every pair is in use.
        """
        ports = self._ports
        for _ in range(len(ports)):
            port = ports[self._cursor]
            self._cursor = (self._cursor + 1) % len(ports)
            if port not in self._in_use:
                self._in_use.add(port)
                return port
        raise PortsExhaustedError(self.range_start, self.range_end)

    def release(self, port: int) -> None:
        """Give a port back (unknown ports are ignored)."""
        self._in_use.discard(port)


class RtpEndpoint(asyncio.DatagramProtocol):
    """One leg's RTP socket: feeds its session and hub, sends their output.

    Create it with :func:`open_rtp_endpoint`. Counters: ``icmp_errors``
    (errors the OS reported for our datagrams), ``tick_errors`` (exceptions
    the pacer caught while driving this leg).

    Args:
        session: the leg's sans-I/O session.
        hub: the call's hub, where the leg is already added.
        leg: the leg's name in the hub.
        on_event: called with each session event (DTMF, timeouts, ...).
    """

    def __init__(
        self,
        session: RtpSession,
        hub: MediaHub,
        leg: str,
        *,
        loop: asyncio.AbstractEventLoop,
        on_event: EventHandler | None = None,
    ) -> None:
        self._session = session
        self.hub = hub
        self.leg = leg
        self.on_event = on_event
        self._loop = loop
        self._time = loop.time
        self._rtp: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None
        self._ports: PortAllocator | None = None
        self._pacer: Pacer | None = None
        self._deadline: float | None = None
        # The hub's state of this leg: its sink lists and counters, read every tick.
        self._leg_state = hub.leg_state(leg)
        # Read once per leg: maps loop.time() to Unix time for RTCP.
        self._wallclock_offset = wallclock_offset(loop.time())
        if session.wallclock_offset is None:
            session.wallclock_offset = self._wallclock_offset
        self.local_port = 0
        self.closed = False
        self.icmp_errors = 0
        self.tick_errors = 0
        # The session's rejection counters as last put on /metrics.
        self._rejected_seen = (0, 0, 0)

    @property
    def session(self) -> RtpSession:
        """The leg's session."""
        return self._session

    @session.setter
    def session(self, session: RtpSession) -> None:
        # Replacing the session (the answer chose another codec): start it if
        # needed and take its timers over.
        if session.wallclock_offset is None:
            session.wallclock_offset = self._wallclock_offset
        session.start(self._time())
        self._session = session
        self._leg_state = self.hub.leg_state(self.leg)  # a new rate re-added the leg
        self._deadline = session.next_deadline()
        self._rejected_seen = _rejected(session)
        if self._pacer is not None:
            self.hub.set_outlet(self.leg, session.codec.name, self.send_payload)

    # asyncio.DatagramProtocol ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._rtp = cast(asyncio.DatagramTransport, transport)  # a datagram endpoint's

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        # The hot path: synchronous from the socket to the taps.
        now = self._time()
        session = self._session
        packet = session.receive_rtp(data, addr, now)
        if packet is not None:
            self.hub.push_packet(self.leg, Track.INBOUND, packet, now)
        else:
            self._count_rejected()
        if session.has_events:
            self._dispatch_events()

    def error_received(self, exc: Exception) -> None:
        # ICMP port/host unreachable and friends: the peer may be gone; RTCP
        # or the no-media timer will tell. Never fatal. (Linux reports ICMP
        # errors on unconnected UDP sockets only with IP_RECVERR, which we
        # leave off: with it, uvloop 0.23 segfaults when one arrives.)
        self.icmp_errors += 1
        logger.debug("%s RTP socket error: %s", self.leg, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._rtp = None

    # Driven by the pacer ---------------------------------------------------------

    def pull_inbound(self, now: float) -> None:
        """Play the jitter buffer out into the hub (tick phase 1)."""
        state = self._leg_state
        if state.inbound_sinks:
            pcm = self._session.playout(now)
            if pcm is not None:
                self.hub.push_inbound(self.leg, pcm, now)
        elif self._session.playout_unheard(now):
            state.frames_in += 1  # what push_inbound counts, with no sink to call

    def send_outbound(self, pcm: bytes | None, now: float) -> None:
        """Send the hub's frame for this leg, or let the tick pass (phase 2)."""
        if self.closed:
            return
        if pcm is None:
            self._session.skip_frame(now)
        else:
            self._session.send_frame(pcm, now)
        self.flush(now)

    def send_payload(self, payload: bytes, now: float) -> None:
        """Send 20 ms already in the session's codec (the hub's outlet: phase 2)."""
        if self.closed:
            return
        self._session.send_payload(payload, now)  # a DTMF event takes the tick, as ever
        self.flush(now)

    def service_timers(self, now: float) -> None:
        """Run the session's timers if due (phase 3)."""
        # The deadline is cached: received packets only push the no-media
        # deadline later, so a stale one just costs one early no-op call.
        deadline = self._deadline
        if deadline is None or deadline > now:
            return
        self._session.handle_timeout(now)
        self.flush(now)
        self._deadline = self._session.next_deadline()
        if self._session.has_events:
            self._dispatch_events()

    def flush(self, now: float) -> None:
        """Send what the session has queued; wire copies go to packet taps."""
        # Once per leg per tick: the queues are taken without a call (as the drain
        # methods do), and a packet no tap wants is only counted.
        session = self._session
        datagrams = session.rtp_out
        if datagrams:
            session.rtp_out = []
            rtp = self._rtp
            if rtp is not None:
                state = self._leg_state
                for data, addr in datagrams:
                    rtp.sendto(data, addr)
                    if not RTCP_MUX_FIRST <= data[1] <= RTCP_MUX_LAST:
                        if state.outbound_packet_sinks:
                            # RtpView.of_built, inlined: the header is always 12 bytes.
                            self.hub.push_packet(self.leg, Track.OUTBOUND, rtp_view(
                                (data, data[1] & 0x7F, RTP_HEADER_LENGTH, len(data))), now)
                        else:
                            state.packets_out += 1  # push_packet's count, no tap to call
        rtcp_datagrams = session.rtcp_out
        if rtcp_datagrams:
            session.rtcp_out = []
            rtcp = self._rtcp
            if rtcp is not None:
                for data, addr in rtcp_datagrams:
                    rtcp.sendto(data, addr)

    def _count_rejected(self) -> None:
        # Live, not at close: an attack on a long call must show while it lasts.
        # Runs only for packets the session did not accept.
        seen = self._rejected_seen
        now = _rejected(self._session)
        if now != seen:
            _REJECTED_FOREIGN.inc(now[0] - seen[0])
            _REJECTED_PROBATION.inc(now[1] - seen[1])
            _REJECTED_RTCP.inc(now[2] - seen[2])
            self._rejected_seen = now

    def _rtcp_received(self, data: bytes, addr: Address) -> None:
        self._session.receive_rtcp(data, addr, self._time())
        self._count_rejected()
        if self._session.has_events:
            self._dispatch_events()

    def _dispatch_events(self) -> None:
        events = self._session.events_received()
        handler = self.on_event
        if handler is None:
            return
        for event in events:
            try:
                handler(event)
            except Exception:
                logger.exception("%s media event handler failed on %r", self.leg, event)

    def close(self, reason: str | None = None) -> None:
        """Send RTCP BYE, close both sockets, release the ports, leave the pacer."""
        if self.closed:
            return
        now = self._time()
        self._session.close(now, reason)
        self.flush(now)
        self.closed = True
        self._count(self._session)
        if self._pacer is not None:
            self._pacer.detach(self)
        for transport in (self._rtp, self._rtcp):
            if transport is not None:
                transport.close()
        if self._ports is not None:
            self._ports.release(self.local_port)
            self._ports = None


    @staticmethod
    def _count(session: RtpSession) -> None:
        RTP_PACKETS.labels("received").inc(session.packets_received)
        RTP_PACKETS.labels("sent").inc(session.packets_sent)
        RTP_LOST.inc(session.quality().inbound_skipped)
        RTP_SKIPPED_OUT.inc(session.skipped_out)


def _rejected(session: RtpSession) -> tuple[int, int, int]:
    return session.foreign_dropped, session.probation_dropped, session.rtcp_foreign_dropped


class _RtcpProtocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: RtpEndpoint) -> None:
        self._endpoint = endpoint

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._endpoint._rtcp_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        self._endpoint.icmp_errors += 1


async def open_rtp_endpoint(
    session: RtpSession,
    hub: MediaHub,
    leg: str,
    *,
    host: str,
    ports: PortAllocator,
    pacer: Pacer | None = None,
    on_event: EventHandler | None = None,
) -> RtpEndpoint:
    """Bind an RTP/RTCP socket pair for a leg and start its session.

    Args:
        session: the leg's session (its timers start now).
        hub: the call's hub; ``leg`` must already be added to it.
        leg: the leg's name in the hub.
        host: the local address to bind.
        ports: where the port pair comes from.
        pacer: the shared pacer to join; None leaves pacing to the caller.
        on_event: called with each session event.

    Raises:
        PortsExhaustedError: no pair could be bound: every pair of the range was
            ours or busy (each was tried, from the allocator's cursor on).
        MediaStateError: the leg is not in the hub, or its rate is not the codec's.
    """
    loop = asyncio.get_running_loop()
    if hub.sample_rate(leg) != session.codec.sample_rate:
        raise MediaStateError(
            f"leg {leg!r} runs at {hub.sample_rate(leg)} Hz but its codec"
            f" {session.codec.name} at {session.codec.sample_rate} Hz"
        )
    # Another program (or a second callstream) may hold any stretch of the
    # range: try every pair we have not handed out ourselves before giving up.
    last_error: OSError | None = None
    busy = 0
    for _ in range(ports.capacity - ports.in_use):
        port = ports.allocate()
        endpoint = RtpEndpoint(session, hub, leg, loop=loop, on_event=on_event)
        try:
            await _bind_pair(loop, endpoint, host, port)
        except OSError as exc:
            ports.release(port)
            if exc.errno != errno.EADDRINUSE:
                raise
            last_error = exc
            busy += 1
            if busy % BIND_YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a failed bind never awaits: let the media run
            continue
        if busy:
            logger.warning("%s: %d RTP port pairs of %d-%d were busy (held by another "
                           "program?) before %d", leg, busy, ports.range_start,
                           ports.range_end, port)
        endpoint._ports = ports
        endpoint.local_port = port
        session.start(loop.time())
        endpoint._deadline = session.next_deadline()
        if pacer is not None:
            # Paced: the hub's tick may send what a stream queued as it came.
            hub.set_outlet(leg, session.codec.name, endpoint.send_payload)
            pacer.attach(endpoint)
        return endpoint
    logger.warning("%s: no RTP port pair free in %d-%d: %d busy (held by another program?),"
                   " %d in use by our calls", leg, ports.range_start, ports.range_end, busy,
                   ports.in_use)
    raise PortsExhaustedError(ports.range_start, ports.range_end, busy=busy) from last_error


async def _bind_pair(
    loop: asyncio.AbstractEventLoop, endpoint: RtpEndpoint, host: str, port: int
) -> None:
    # We bind the sockets ourselves: a failed bind then raises a plain
    # OSError with its errno on every loop (uvloop wraps it, and leaks the
    # transport it had made).
    rtp_sock = _bind_udp(host, port)
    try:
        rtcp_sock = _bind_udp(host, port + 1)
    except OSError:
        rtp_sock.close()
        raise
    await loop.create_datagram_endpoint(lambda: endpoint, sock=rtp_sock)
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _RtcpProtocol(endpoint), sock=rtcp_sock
    )
    endpoint._rtcp = transport


def _bind_udp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class Pacer:
    """One 20 ms clock for every leg of this worker.

    Args:
        loop: the event loop (default: the running one at first attach).
        interval: the tick, 20 ms.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop | None = None, *, interval: float = PACER_INTERVAL
    ) -> None:
        self._loop = loop
        self.interval = interval
        self._endpoints: list[RtpEndpoint] = []
        self._hubs: dict[MediaHub, dict[str, RtpEndpoint]] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._next = 0.0
        self.ticks = 0
        self.skipped_ticks = 0
        self.late_ticks = 0
        self.discarded_frames = 0  # playback frames dropped with skipped ticks
        self.errors = 0

    @property
    def running(self) -> bool:
        return self._handle is not None

    def attach(self, endpoint: RtpEndpoint) -> None:
        """Tick ``endpoint`` (and its hub) from the next tick on."""
        if endpoint.closed:
            raise MediaStateError("endpoint is closed")
        if endpoint in self._endpoints:
            return
        self._endpoints.append(endpoint)
        self._hubs.setdefault(endpoint.hub, {})[endpoint.leg] = endpoint
        endpoint._pacer = self
        if self._handle is None:
            loop = self._loop if self._loop is not None else asyncio.get_running_loop()
            self._loop = loop
            self._next = loop.time() + self.interval
            self._handle = loop.call_at(self._next, self._run)

    def detach(self, endpoint: RtpEndpoint) -> None:
        """Stop ticking ``endpoint``; the timer stops with the last one."""
        if endpoint not in self._endpoints:
            return
        self._endpoints.remove(endpoint)
        legs = self._hubs.get(endpoint.hub)
        if legs is not None:
            legs.pop(endpoint.leg, None)
            if not legs:
                del self._hubs[endpoint.hub]
        endpoint._pacer = None
        if not self._endpoints and self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def stop(self) -> None:
        """Cancel the timer (endpoints stay attached; ``attach`` restarts it)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _run(self) -> None:
        loop = self._loop
        if loop is None:  # pragma: no cover - set before the timer exists
            return
        now = loop.time()
        ran = 0
        while self._next <= now and ran < MAX_CATCHUP_TICKS:
            if ran:
                self.late_ticks += 1
                _LATE.inc()
            else:
                _ON_TIME.inc()
            self.tick(self._next)
            self._next += self.interval
            ran += 1
        if self._next <= now:
            # A long stall (GC, a blocking call): drop the missed ticks, and the audio
            # they would have played, so playback does not lag by the stall for good.
            missed = int((now - self._next) / self.interval) + 1
            self.skipped_ticks += missed
            _SKIPPED.inc(missed)
            self._next += missed * self.interval
            discarded = sum(hub.skip(missed) for hub in self._hubs)
            self.discarded_frames += discarded
            PLAYBACK_DISCARDED_STALL.inc(discarded)
        if self._endpoints:
            self._handle = loop.call_at(self._next, self._run)
        else:
            self._handle = None

    def tick(self, now: float) -> None:
        """Run one tick at media time ``now`` (the timer calls it; tests may too)."""
        self.ticks += 1
        endpoints = self._endpoints
        for endpoint in endpoints:
            try:
                endpoint.pull_inbound(now)
            except Exception:
                self._failed(endpoint, "inbound playout")
        for hub, legs in list(self._hubs.items()):
            try:
                frames = hub.tick(now)
            except Exception:
                self.errors += 1
                logger.debug("hub %s tick failed", hub.name, exc_info=True)
                continue
            for leg, pcm in frames:
                if leg not in legs:
                    continue
                target = legs[leg]
                try:
                    target.send_outbound(pcm, now)
                except Exception:
                    self._failed(target, "outbound send")
        for endpoint in list(endpoints):
            # service_timers' own deadline test, read here: due every few seconds,
            # the timers then cost no call on the other ticks.
            deadline = endpoint._deadline
            if deadline is None or deadline > now:
                continue
            try:
                endpoint.service_timers(now)
            except Exception:
                self._failed(endpoint, "timers")

    def _failed(self, endpoint: RtpEndpoint, what: str) -> None:
        # A bug that fires every tick would log 50 tracebacks a second: log
        # the first one of each leg loudly, the rest at debug level.
        self.errors += 1
        endpoint.tick_errors += 1
        if endpoint.tick_errors == 1:
            logger.exception("%s %s failed (further failures logged at debug)", endpoint.leg, what)
        else:
            logger.debug("%s %s failed", endpoint.leg, what, exc_info=True)


class TapReader:
    """Awaitable reading of a :class:`FrameTap` for one coroutine.

    ``async for frame in TapReader(tap)`` yields frames until the tap closes
    and is drained.
    """

    def __init__(self, tap: FrameTap) -> None:
        self._tap = tap
        self._ready = asyncio.Event()
        tap.waker = self._ready.set

    async def get(self) -> AudioFrame | None:
        """Return the next frame, waiting for one; None once the tap is closed."""
        tap = self._tap
        while True:
            frame = tap.get_nowait()
            if frame is not None:
                return frame
            if tap.closed:
                return None
            self._ready.clear()
            await self._ready.wait()

    def __aiter__(self) -> TapReader:
        return self

    async def __anext__(self) -> AudioFrame:
        frame = await self.get()
        if frame is None:
            raise StopAsyncIteration
        return frame
