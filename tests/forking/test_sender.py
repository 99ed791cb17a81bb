"""Fork paths over real loopback UDP sockets, driven through a real MediaHub."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from callstream.forking.metrics import FORK_STATS, ForkCollector
from callstream.forking.sender import ForkPath, ForkStats, PathSpec, RtpFork
from callstream.forking.strep import StrepDirection, StrepHeader, StrepLeg, parse
from callstream.media.hub import MediaHub, Track
from callstream.media.rtp import RtpView, build_packet

LEG = "1b0e6c3e-8f1a-11f0-9a1c-02420a0b0c01"


def packet(seq: int) -> bytes:
    return build_packet(0, seq == 0, seq, seq * 160, 0x1234ABCD, bytes([seq & 0xFF]) * 160)


@contextmanager
def receiver(family: int = socket.AF_INET) -> Iterator[socket.socket]:
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(2.0)
    try:
        yield sock
    finally:
        sock.close()


def drain(sock: socket.socket, count: int) -> list[bytes]:
    return [sock.recv(2048) for _ in range(count)]


def dead_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hub_with_leg() -> MediaHub:
    hub = MediaHub("session")
    hub.add_leg(LEG, 8000)
    return hub


def test_rx_and_tx_get_their_own_direction_byte_for_byte() -> None:
    hub = hub_with_leg()
    stats = ForkStats()
    with receiver() as rx, receiver() as tx:
        fork = RtpFork(hub, LEG, [
            PathSpec("rx", socket.AF_INET, rx.getsockname()),
            PathSpec("tx", socket.AF_INET, tx.getsockname()),
        ], stream_type="decrypted", stats=stats)
        sent_in = [packet(i) for i in range(50)]
        sent_out = [packet(1000 + i) for i in range(30)]
        for data in sent_in:
            hub.push_packet(LEG, Track.INBOUND, RtpView.parse(data), 0.0)
        for data in sent_out:
            hub.push_packet(LEG, Track.OUTBOUND, RtpView.parse(data), 0.0)
        assert drain(rx, 50) == sent_in
        assert drain(tx, 30) == sent_out
        assert fork.counters()["rx"]["packets"] == 50
        assert fork.counters()["tx"]["bytes"] == sum(map(len, sent_out))
        assert stats.forks_active == 1
        assert fork.stop() == [("call.fork.stopped", {"stream_type": "decrypted"})]
        assert fork.stop() == []  # once
        hub.push_packet(LEG, Track.INBOUND, RtpView.parse(packet(99)), 0.0)
        rx.settimeout(0.2)
        with pytest.raises(TimeoutError):
            rx.recv(2048)
    assert stats.forks_active == 0
    totals = stats.totals()
    assert totals[("rx", "packets")] == 50 and totals[("tx", "packets")] == 30
    assert hub.callback_errors == 0


def test_target_mode_prefixes_strep_per_direction() -> None:
    hub = hub_with_leg()
    leg_id = uuid.UUID(LEG)
    with receiver() as target:
        addr = target.getsockname()
        fork = RtpFork(hub, LEG, [
            PathSpec("rx", socket.AF_INET, addr,
                     StrepHeader(leg_id, StrepDirection.INBOUND, StrepLeg.B).serialize()),
            PathSpec("tx", socket.AF_INET, addr,
                     StrepHeader(leg_id, StrepDirection.OUTBOUND, StrepLeg.B).serialize()),
        ], stream_type="raw", stats=ForkStats())
        hub.push_packet(LEG, Track.INBOUND, RtpView.parse(packet(1)), 0.0)
        hub.push_packet(LEG, Track.OUTBOUND, RtpView.parse(packet(2)), 0.0)
        got = [parse(d) for d in drain(target, 2)]
        fork.stop()
    assert got == [
        (StrepHeader(leg_id, StrepDirection.INBOUND, StrepLeg.B), packet(1)),
        (StrepHeader(leg_id, StrepDirection.OUTBOUND, StrepLeg.B), packet(2)),
    ]


def test_ipv6_destination() -> None:
    hub = hub_with_leg()
    with receiver(socket.AF_INET6) as rx:
        fork = RtpFork(hub, LEG, [PathSpec("rx", socket.AF_INET6, rx.getsockname())],
                       stream_type="decrypted", stats=ForkStats())
        hub.push_packet(LEG, Track.INBOUND, RtpView.parse(packet(7)), 0.0)
        assert rx.recv(2048) == packet(7)
        fork.stop()


def test_dead_destination_is_counted_never_raised() -> None:
    """ICMP port unreachable comes back as ECONNREFUSED on the next send: counted, and
    that packet is sent again, so a capture on a closed port still sees them all."""
    path = ForkPath(socket.AF_INET, ("127.0.0.1", dead_port()), "rx")
    for i in range(20):
        path.forward(LEG, "inbound", RtpView.parse(packet(i)))
        time.sleep(0.001)  # let loopback deliver the ICMP error
    assert path.unreachable >= 5
    assert path.packets == 20
    path.close()
    path.forward(LEG, "inbound", RtpView.parse(packet(0)))  # closed: silently nothing
    assert path.closed


def test_full_send_buffer_drops_packets() -> None:
    with receiver() as rx:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # never read: fills up
        path = ForkPath(socket.AF_INET, rx.getsockname(), "tx")
        big = RtpView.of_built(build_packet(0, False, 1, 0, 1, bytes(1388)))
        for _ in range(2000):
            path.forward(LEG, "outbound", big)
        path.close()
    # Loopback either queues into the (tiny) receive buffer and drops there, or the
    # send buffer fills and send() would block: either way nothing raised.
    assert path.packets + path.dropped == 2000


def test_unroutable_destination_fails_at_start_and_leaves_nothing_open() -> None:
    hub = hub_with_leg()
    stats = ForkStats()
    with pytest.raises(OSError):
        # The broadcast address without SO_BROADCAST: connect() is refused at once
        # (EACCES), after the first path opened fine.
        RtpFork(hub, LEG, [PathSpec("rx", socket.AF_INET, ("127.0.0.1", 5000)),
                           PathSpec("tx", socket.AF_INET, ("255.255.255.255", 5000))],
                stream_type="decrypted", stats=stats)
    assert stats.forks_active == 0 and stats.totals() == {}


def test_collector_reports_totals() -> None:
    stats = ForkStats()
    hub = hub_with_leg()
    port = dead_port()
    fork = RtpFork(hub, LEG, [PathSpec("rx", socket.AF_INET, ("127.0.0.1", port))],
                   stream_type="decrypted", stats=stats)
    for i in range(10):
        hub.push_packet(LEG, Track.INBOUND, RtpView.parse(packet(i)), 0.0)
        time.sleep(0.001)
    samples = {(m.name, tuple(sorted(s.labels.items()))): s.value
               for m in ForkCollector(stats).collect() for s in m.samples}
    assert samples[("callstream_forks_active", ())] == 1
    sent = samples[("callstream_fork_packets", (("direction", "rx"),))]
    errors = samples[("callstream_fork_send_errors",
                      (("direction", "rx"), ("reason", "unreachable")))]
    assert sent == 10 and errors > 0
    fork.stop()
    after = {(m.name, tuple(sorted(s.labels.items()))): s.value
             for m in ForkCollector(stats).collect() for s in m.samples}
    assert after[("callstream_fork_packets", (("direction", "rx"),))] == sent
    assert after[("callstream_forks_active", ())] == 0
    assert FORK_STATS is not stats
