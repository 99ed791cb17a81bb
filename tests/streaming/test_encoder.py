"""StreamEncoder over a real MediaHub: pass-through, transcoding, drop-oldest."""

from __future__ import annotations

from callstream.calls.features import LegMedia
from callstream.media.codecs import L16, PCMU
from callstream.media.hub import MediaHub, Track
from callstream.media.rtp import RtpView, build_packet
from callstream.streaming.encoder import StreamEncoder
from tests.audio import speech


def rtp(pt: int, marker: bool, seq: int, ts: int, ssrc: int, payload: bytes) -> RtpView:
    """A packet as the media session hands it to the hub: bytes with its header parsed."""
    return RtpView.parse(build_packet(pt, marker, seq, ts, ssrc, payload))


def _leg() -> tuple[MediaHub, LegMedia]:
    hub = MediaHub("test")
    hub.add_leg("a", 8000)
    return hub, LegMedia(hub, "a", "PCMU", 8000, 0)


def test_same_codec_passes_wire_payloads_through_untouched() -> None:
    hub, media = _leg()
    wakes: list[int] = []
    enc = StreamEncoder(media, Track.BOTH, PCMU, clock=lambda: 1.5,
                        wake=lambda: wakes.append(1))
    assert enc.passthrough
    payload = bytes(range(160))
    hub.push_packet("a", Track.INBOUND, rtp(0, False, 1, 0, 7, payload), 1.0)
    hub.push_packet("a", Track.INBOUND, rtp(101, False, 2, 0, 7, b"\x05\x0a\x00\xa0"),
                    1.0)  # telephone-event: not audio
    hub.push_packet("a", Track.OUTBOUND, rtp(0, False, 9, 0, 8, payload[::-1]), 1.0)
    chunks = enc.drain()
    assert [(c.track, c.payload, c.time) for c in chunks] == [
        ("inbound", payload, 1.5), ("outbound", payload[::-1], 1.5)]
    assert wakes == [1] and not enc.drain()  # woken once, when the queue filled
    enc.close()
    hub.push_packet("a", Track.INBOUND, rtp(0, False, 3, 0, 7, payload), 1.0)
    assert not enc.drain()


def test_other_codec_transcodes_hub_frames() -> None:
    hub, media = _leg()
    enc = StreamEncoder(media, Track.INBOUND, L16, clock=lambda: 0.0, wake=lambda: None)
    assert not enc.passthrough
    pcm = speech("beckett")[:3200]
    hub.push_inbound("a", pcm[:320], 0.0)
    hub.push_inbound("a", pcm[320:640], 0.02)
    chunks = enc.drain()
    assert [len(c.payload) for c in chunks] == [640, 640]  # 16 kHz big-endian
    assert [c.time for c in chunks] == [0.0, 0.02]


def test_a_slow_consumer_loses_the_oldest_frames_counted() -> None:
    hub, media = _leg()
    enc = StreamEncoder(media, Track.INBOUND, PCMU, clock=lambda: 0.0, wake=lambda: None,
                        max_items=3)
    for seq in range(5):
        hub.push_packet("a", Track.INBOUND, rtp(0, False, seq, 0, 7, bytes([seq]) * 160),
                        0.0)
    assert enc.dropped == 2
    assert [c.payload[0] for c in enc.drain()] == [2, 3, 4]


def test_drops_are_reported_as_they_happen() -> None:
    # The sender task is stuck behind a stalled consumer, so it cannot be the one to
    # count: each drop is reported from the media path at once.
    hub, media = _leg()
    reported: list[int] = []
    enc = StreamEncoder(media, Track.INBOUND, PCMU, clock=lambda: 0.0, wake=lambda: None,
                        on_drop=reported.append, max_items=2)
    for seq in range(5):
        hub.push_packet("a", Track.INBOUND, rtp(0, False, seq, 0, 7, bytes(160)), 0.0)
        assert reported == list(range(1, max(seq - 1, 0) + 1))
    assert enc.dropped == 3


def test_both_tracks_wake_once_per_tick_for_the_pair() -> None:
    """An outbound frame waits for the inbound one of the next packet (one write for the
    two); a second outbound frame without an inbound one wakes the sender itself."""
    hub, media = _leg()
    wakes: list[list[str]] = []
    enc = StreamEncoder(media, Track.BOTH, PCMU, clock=lambda: 0.0,
                        wake=lambda: wakes.append([c.track for c in enc.drain()]))

    def packet(track: Track, seq: int) -> None:
        hub.push_packet("a", track, rtp(0, False, seq, 160 * seq, 7, bytes(160)), 0.0)

    packet(Track.OUTBOUND, 1)  # the pacer's send of tick 1
    assert wakes == []
    packet(Track.INBOUND, 1)  # the caller's packet, a moment later
    packet(Track.OUTBOUND, 2)
    packet(Track.INBOUND, 2)
    packet(Track.OUTBOUND, 3)
    packet(Track.OUTBOUND, 4)  # the caller went quiet: no more than one tick's wait
    assert wakes == [["outbound", "inbound"], ["outbound", "inbound"],
                     ["outbound", "outbound"]]


def test_one_track_wakes_for_each_frame_once_drained() -> None:
    hub, media = _leg()
    wakes = 0

    def wake() -> None:
        nonlocal wakes
        wakes += 1

    enc = StreamEncoder(media, Track.OUTBOUND, PCMU, clock=lambda: 0.0, wake=wake)
    for seq in range(3):
        hub.push_packet("a", Track.OUTBOUND, rtp(0, False, seq, 0, 7, bytes(160)), 0.0)
    assert wakes == 1  # not drained yet: the sender is already on its way
    assert len(enc.drain()) == 3
    hub.push_packet("a", Track.OUTBOUND, rtp(0, False, 4, 0, 7, bytes(160)), 0.0)
    assert wakes == 2
