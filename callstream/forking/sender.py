"""Sending a call's RTP to fork destinations, inline on the media path.

A :class:`ForkPath` is one direction of a fork: a **connected, non-blocking UDP
socket** and its counters. It is subscribed to the media hub as a packet callback
(:meth:`MediaHub.add_packet_callback`), so each RTP packet the leg receives or
sends is handed to ``socket.send`` in the same loop iteration, before anything
else happens to it: no queue, no task, no added delay.

Why a connected socket: ``send`` needs no address lookup per packet, and Linux
reports an ICMP "port unreachable" for a dead destination as
``ConnectionRefusedError`` on the next ``send``. That is counted
(``unreachable``) and the packet is sent again, so nothing is lost to a port
that is merely closed (a recorder capturing with tshark has no socket open);
nothing here raises into the media path. A full socket buffer (``BlockingIOError``) drops the packet
(``dropped``); any other ``OSError`` is counted in ``errors``.

A :class:`RtpFork` is the running fork of one call leg, kept in
``Call.features`` (the :class:`~callstream.calls.features.Feature` seam): its
:meth:`RtpFork.detach` closes the sockets and returns ``call.fork.stopped``.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from typing import Any

from callstream.calls.features import FeatureEvent
from callstream.media.hub import MediaHub, Subscription, Track
from callstream.media.rtp import RtpView

__all__ = ["FORK_SOCKET_SNDBUF", "ForkPath", "ForkStats", "RtpFork", "SockAddr"]

log = logging.getLogger(__name__)

#: Send buffer per fork socket: about 1.5 s of 20 ms G.711 packets (with headers).
FORK_SOCKET_SNDBUF = 64 * 1024
#: Nobody should send to a fork socket; what arrives anyway is capped at this.
FORK_SOCKET_RCVBUF = 4 * 1024

SockAddr = tuple[Any, ...]
"""A resolved destination as ``socket.connect`` takes it (2-tuple v4, 4-tuple v6)."""


class ForkPath:
    """One direction of a fork: RTP packets to one UDP destination.

    Args:
        family: ``socket.AF_INET`` or ``socket.AF_INET6``.
        address: the resolved destination.
        direction: ``"rx"`` (packets the call received) or ``"tx"`` (sent).
        prefix: bytes put before each packet (a STREP header), or empty.

    Raises:
        OSError: the socket could not be created or connected (no route).
    """

    __slots__ = (
        "_prefix",
        "_sock",
        "address",
        "bytes",
        "direction",
        "dropped",
        "errors",
        "packets",
        "unreachable",
    )

    def __init__(self, family: int, address: SockAddr, direction: str,
                 prefix: bytes = b"") -> None:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, FORK_SOCKET_SNDBUF)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, FORK_SOCKET_RCVBUF)
            sock.connect(address)  # UDP: no packet goes out; fixes the peer and route
        except BaseException:
            sock.close()
            raise
        self._sock: socket.socket | None = sock
        self._prefix = prefix
        self.address = address
        self.direction = direction
        self.packets = 0
        self.bytes = 0
        self.unreachable = 0
        self.dropped = 0
        self.errors = 0

    def forward(self, leg: str, track: str, packet: RtpView) -> None:
        """Send one RTP packet (a hub packet callback; never raises)."""
        sock = self._sock
        if sock is None:
            return
        data = packet.data
        if self._prefix:
            data = self._prefix + data
        try:
            try:
                sent = sock.send(data)
            except ConnectionRefusedError:
                # An ICMP port unreachable for an earlier datagram, reported (and
                # cleared) now instead of sending this one: count it, send again.
                # A capture without a listening socket (tshark on the recorder) so
                # still sees every packet.
                self.unreachable += 1
                sent = sock.send(data)
        except BlockingIOError:
            self.dropped += 1
        except OSError as exc:
            self.errors += 1
            if self.errors == 1:
                log.debug("fork of %s to %s: %s", leg, self.address, exc)
        else:
            self.packets += 1
            self.bytes += sent

    def counters(self) -> dict[str, int]:
        return {"packets": self.packets, "bytes": self.bytes, "unreachable": self.unreachable,
                "dropped": self.dropped, "errors": self.errors}

    @property
    def closed(self) -> bool:
        return self._sock is None

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


class ForkStats:
    """Process totals over every fork path, live and closed, for ``/metrics``.

    The media path only bumps plain ints on its own :class:`ForkPath`; totals are
    summed when they are read (a scrape), so forwarding costs no lock or label
    lookup per packet.
    """

    def __init__(self) -> None:
        self._live: set[ForkPath] = set()
        self._retired: dict[tuple[str, str], int] = {}
        self.forks_active = 0

    def add(self, path: ForkPath) -> None:
        self._live.add(path)

    def retire(self, path: ForkPath) -> None:
        if path in self._live:
            self._live.discard(path)
            for name, value in path.counters().items():
                key = (path.direction, name)
                self._retired[key] = self._retired.get(key, 0) + value

    def totals(self) -> dict[tuple[str, str], int]:
        """``{(direction, counter): value}`` over all paths ever opened."""
        out = dict(self._retired)
        for path in self._live:
            for name, value in path.counters().items():
                key = (path.direction, name)
                out[key] = out.get(key, 0) + value
        return out


@dataclass(frozen=True, slots=True)
class PathSpec:
    """What to open for one direction: where to, and the prefix per packet."""

    direction: str  # "rx" | "tx"
    family: int
    address: SockAddr
    prefix: bytes = b""


class RtpFork:
    """The running fork of one call leg (a ``Call.features`` entry).

    Opens one :class:`ForkPath` per direction and subscribes each to the hub:
    ``rx`` to the leg's inbound packets, ``tx`` to its outbound ones.

    Args:
        hub: the call's media hub.
        leg: the leg's name in the hub.
        paths: what to open; one per direction.
        stream_type: echoed in ``call.fork.stopped``.
        stats: where the paths' counters are totalled.
        call_control_id: the call, named in the log lines.

    Raises:
        OSError: a socket could not be opened; nothing stays open.
    """

    def __init__(self, hub: MediaHub, leg: str, paths: list[PathSpec], *, stream_type: str,
                 stats: ForkStats, call_control_id: str = "") -> None:
        self.stream_type = stream_type
        self.call_control_id = call_control_id
        self.leg = leg
        self.paths: list[ForkPath] = []
        self._subscriptions: list[Subscription] = []
        self._stats = stats
        try:
            for spec in paths:
                self.paths.append(ForkPath(spec.family, spec.address, spec.direction,
                                           spec.prefix))
        except OSError:
            for path in self.paths:
                path.close()
            raise
        for path in self.paths:
            stats.add(path)
            track = Track.INBOUND if path.direction == "rx" else Track.OUTBOUND
            self._subscriptions.append(hub.add_packet_callback(leg, track, path.forward))
        stats.forks_active += 1
        self.closed = False
        log.info("call %s: fork started (%s, %s)", call_control_id or leg, stream_type,
                 ", ".join(f"{p.direction} to {_addr(p.address)}" for p in paths),
                 extra={"call_control_id": call_control_id})

    def stop(self, reason: str = "fork_stop") -> list[FeatureEvent]:
        """Stop forwarding now and return the ``call.fork.stopped`` webhook."""
        if self.closed:
            return []
        self.closed = True
        for subscription in self._subscriptions:
            subscription.close()
        for path in self.paths:
            path.close()
            self._stats.retire(path)
        self._stats.forks_active -= 1
        log.info("call %s: fork stopped (%s): %s", self.call_control_id or self.leg, reason,
                 "; ".join(f"{direction} {c['packets']} packets, {c['dropped']} dropped"
                           for direction, c in self.counters().items()),
                 extra={"call_control_id": self.call_control_id})
        return [("call.fork.stopped", {"stream_type": self.stream_type})]

    def detach(self, reason: str) -> list[FeatureEvent]:
        """The call ended: the Feature seam's hook (see calls.features)."""
        return self.stop(reason)

    def counters(self) -> dict[str, dict[str, int]]:
        return {path.direction: path.counters() for path in self.paths}


def _addr(address: SockAddr) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
