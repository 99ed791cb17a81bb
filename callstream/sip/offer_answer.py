"""SDP offer/answer for one audio stream (RFC 3264), with RFC 4733 DTMF.

Answering (:func:`answer_offer`):

* take the first audio ``m=`` line with a non-zero port and an RTP/AVP(F)
  profile; answer every other ``m=`` line with port 0 (RFC 3264 §6: "the
  answer MUST contain exactly the same number of "m=" lines as the offer");
* choose the first codec we support in the *offerer's* order, or in the order
  of ``prefer`` when given; keep the offerer's payload type numbers;
* echo ``telephone-event/8000`` with the offerer's payload type, if offered;
* answer ``a=ptime:20`` and the reverse of the offered direction
  (sendonly → recvonly, recvonly → sendonly, inactive → inactive).

Offering (:func:`build_offer`) and reading the answer (:func:`accept_answer`)
work the same way from the other side. :func:`is_hold` tells whether a
(re-)offer puts us on hold (sendonly, inactive or ``c=0.0.0.0``).

The outcome of either side is a :class:`MediaParams`: everything the media
layer needs to send and receive RTP.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from .exceptions import NegotiationFailed
from .sdp import Connection, Direction, MediaDescription, Origin, SdpSession

__all__ = [
    "ANSWER_PTIME",
    "SUPPORTED_CODECS",
    "TELEPHONE_EVENT_8K",
    "Codec",
    "MediaParams",
    "accept_answer",
    "answer_offer",
    "build_offer",
    "is_hold",
    "negotiate",
]

#: Packet time we send and answer with, in milliseconds.
ANSWER_PTIME = 20
#: First payload type we assign to dynamic codecs in our offers (RFC 3551 §3).
FIRST_DYNAMIC_PT = 96
#: Payload type we offer for telephone-event (the de-facto convention).
TELEPHONE_EVENT_PT = 101
#: DTMF events we offer and answer (RFC 4733 §3.2: digits, *, #, A-D).
TELEPHONE_EVENT_FMTP = "0-15"
#: Profiles we can run (no SRTP).
RTP_PROFILES = ("RTP/AVP", "RTP/AVPF")


@dataclass(frozen=True, slots=True)
class Codec:
    """An audio codec we can run.

    Attributes:
        name: Encoding name as in ``a=rtpmap`` (compared case-insensitively).
        clock_rate: RTP clock rate (8000 for G.722, RFC 3551 §4.5.2).
        payload_type: Static payload type, or ``None`` for a dynamic one.
        channels: Audio channels.
    """

    name: str
    clock_rate: int
    payload_type: int | None = None
    channels: int = 1

    def matches(self, encoding: str, clock_rate: int, channels: int) -> bool:
        """Whether an rtpmap entry names this codec."""
        return (
            encoding.lower() == self.name.lower()
            and clock_rate == self.clock_rate
            and channels == self.channels
        )


PCMU = Codec("PCMU", 8000, 0)
PCMA = Codec("PCMA", 8000, 8)
G722 = Codec("G722", 8000, 9)
L16_16K = Codec("L16", 16000)
#: RFC 4733 telephone-event at 8 kHz, the one rate we run (not
#: ``media.codecs.TELEPHONE_EVENT``, which is the bare encoding name).
TELEPHONE_EVENT_8K = Codec("telephone-event", 8000)
#: The codecs callstream's media layer runs, in our order of preference.
SUPPORTED_CODECS: tuple[Codec, ...] = (PCMU, PCMA, G722, L16_16K)


@dataclass(frozen=True, slots=True)
class MediaParams:
    """The negotiated audio stream.

    Attributes:
        remote_addr: Where to send RTP (the peer's ``c=`` address).
        remote_port: The peer's RTP port.
        codec: Encoding name as we know it (``"PCMU"``, ``"G722"``...).
        payload_type: Payload type to use for ``codec`` (the offerer's number).
        clock_rate: RTP clock rate of ``codec``.
        channels: Audio channels.
        telephone_event_pt: Payload type of telephone-event/8000, or ``None``.
        ptime: Packet time we send, in milliseconds.
        remote_ptime: The peer's ``a=ptime``, or ``None``.
        direction: *Our* direction for the stream (what we put in our SDP).
        remote_hold: Whether the peer's description puts the call on hold.
    """

    remote_addr: str
    remote_port: int
    codec: str
    payload_type: int
    clock_rate: int
    channels: int
    telephone_event_pt: int | None
    ptime: int
    remote_ptime: int | None
    direction: Direction
    remote_hold: bool


def _usable_audio(session: SdpSession) -> int | None:
    for index, media in enumerate(session.media):
        if media.media == "audio" and media.port != 0 and media.proto in RTP_PROFILES:
            return index
    return None


def _telephone_event_pt(media: MediaDescription) -> int | None:
    # Linphone offers telephone-event at 48000, 16000 and 8000; we run 8000.
    for pt in media.payload_types:
        rtpmap = media.rtpmap(pt)
        if rtpmap is not None and TELEPHONE_EVENT_8K.matches(
            rtpmap.encoding, rtpmap.clock_rate, rtpmap.channels
        ):
            return pt
    return None


def _choose_codec(
    media: MediaDescription, supported: Sequence[Codec], prefer: Sequence[Codec] | None
) -> tuple[Codec, int] | None:
    offered: list[tuple[Codec, int]] = []
    for pt in media.payload_types:
        rtpmap = media.rtpmap(pt)
        if rtpmap is None:
            continue
        for codec in supported:
            if codec.matches(rtpmap.encoding, rtpmap.clock_rate, rtpmap.channels):
                offered.append((codec, pt))
                break
    if not offered:
        return None
    if prefer:
        for wanted in prefer:
            for codec, pt in offered:
                if codec == wanted:
                    return codec, pt
    return offered[0]


def is_hold(session: SdpSession) -> bool:
    """Whether ``session`` puts the stream on hold.

    True for sendonly or inactive (RFC 3264 §8.4) and for the older
    ``c=IN IP4 0.0.0.0`` form (RFC 2543).
    """
    index = _usable_audio(session)
    if index is None:
        return False
    media = session.media[index]
    connection = session.media_connection(media)
    if connection is not None and connection.is_null:
        return True
    return session.media_direction(media) in (Direction.SENDONLY, Direction.INACTIVE)


def negotiate(
    offer: SdpSession,
    *,
    supported: Sequence[Codec] = SUPPORTED_CODECS,
    prefer: Sequence[Codec] | None = None,
) -> MediaParams:
    """Choose the stream to answer ``offer`` with, without building the answer.

    Args:
        offer: The peer's offer.
        supported: Codecs we can run.
        prefer: Our order of preference; ``None`` keeps the offerer's order.

    Raises:
        NegotiationFailed: No usable audio stream or no common codec (answer 488).
    """
    index = _usable_audio(offer)
    if index is None:
        raise NegotiationFailed("offer has no RTP/AVP audio stream")
    media = offer.media[index]
    connection = offer.media_connection(media)
    if connection is None:
        raise NegotiationFailed("offer has no c= line for the audio stream")
    chosen = _choose_codec(media, supported, prefer)
    if chosen is None:
        raise NegotiationFailed(f"no common codec in offer formats {' '.join(media.formats)}")
    codec, pt = chosen
    offered_direction = offer.media_direction(media)
    direction = offered_direction.reversed()
    if connection.is_null:
        # RFC 3264 §8.4: c=0.0.0.0 is an old-style hold; we must not send.
        direction = Direction.RECVONLY if direction is Direction.SENDRECV else direction
    return MediaParams(
        remote_addr=connection.host,
        remote_port=media.port,
        codec=codec.name,
        payload_type=pt,
        clock_rate=codec.clock_rate,
        channels=codec.channels,
        telephone_event_pt=_telephone_event_pt(media),
        ptime=ANSWER_PTIME,
        remote_ptime=media.ptime,
        direction=direction,
        remote_hold=is_hold(offer),
    )


def _rtpmap_line(pt: int, codec: Codec) -> tuple[str, str]:
    suffix = f"/{codec.channels}" if codec.channels != 1 else ""
    return ("rtpmap", f"{pt} {codec.name}/{codec.clock_rate}{suffix}")


def _audio_attributes(
    pairs: Sequence[tuple[int, Codec]], telephone_event_pt: int | None, direction: Direction
) -> tuple[tuple[str, str | None], ...]:
    attributes: list[tuple[str, str | None]] = [_rtpmap_line(pt, codec) for pt, codec in pairs]
    if telephone_event_pt is not None:
        attributes.append(_rtpmap_line(telephone_event_pt, TELEPHONE_EVENT_8K))
        attributes.append(("fmtp", f"{telephone_event_pt} {TELEPHONE_EVENT_FMTP}"))
    attributes.append(("ptime", str(ANSWER_PTIME)))
    attributes.append((direction.value, None))
    return tuple(attributes)


def _connection(address: str) -> Connection:
    return Connection("IN", "IP6" if ":" in address else "IP4", address)


def _origin(address: str, session_id: int, session_version: int) -> Origin:
    connection = _connection(address)
    return Origin(
        "callstream", str(session_id), session_version, "IN", connection.addrtype, address
    )


def answer_offer(
    offer: SdpSession,
    *,
    local_addr: str,
    local_port: int,
    session_id: int,
    session_version: int = 1,
    supported: Sequence[Codec] = SUPPORTED_CODECS,
    prefer: Sequence[Codec] | None = None,
    direction: Direction | None = None,
) -> tuple[SdpSession, MediaParams]:
    """Negotiate ``offer`` and build our answer.

    Args:
        offer: The peer's offer.
        local_addr: Our RTP address for ``c=`` and ``o=``.
        local_port: Our RTP port.
        session_id: ``o=`` sess-id, stable for the call.
        session_version: ``o=`` sess-version; increment it for each new answer.
        supported: Codecs we can run.
        prefer: Our order of preference; ``None`` keeps the offerer's order.
        direction: Force our direction (e.g. ``SENDONLY`` to hold); by default
            the reverse of the offered one.

    Returns:
        The answer and the negotiated parameters (``direction`` is ours).

    Raises:
        NegotiationFailed: No usable audio stream or no common codec (answer 488).
    """
    params = negotiate(offer, supported=supported, prefer=prefer)
    if direction is not None:
        params = dataclasses.replace(params, direction=direction)
    index = _usable_audio(offer)
    codec = next(
        c for c in supported if c.name == params.codec and c.clock_rate == params.clock_rate
    )
    media_lines: list[MediaDescription] = []
    for position, offered in enumerate(offer.media):
        if position == index:
            formats = [str(params.payload_type)]
            if params.telephone_event_pt is not None:
                formats.append(str(params.telephone_event_pt))
            media_lines.append(
                MediaDescription(
                    "audio",
                    local_port,
                    offered.proto,
                    tuple(formats),
                    attributes=_audio_attributes(
                        [(params.payload_type, codec)], params.telephone_event_pt, params.direction
                    ),
                )
            )
        else:
            # RFC 3264 §6: a rejected stream is answered with port zero.
            media_lines.append(
                MediaDescription(offered.media, 0, offered.proto, offered.formats[:1] or ("0",))
            )
    answer = SdpSession(
        origin=_origin(local_addr, session_id, session_version),
        connection=_connection(local_addr),
        media=tuple(media_lines),
    )
    return answer, params


def build_offer(
    *,
    local_addr: str,
    local_port: int,
    session_id: int,
    session_version: int = 1,
    codecs: Sequence[Codec] = SUPPORTED_CODECS,
    telephone_event: bool = True,
    direction: Direction = Direction.SENDRECV,
) -> SdpSession:
    """Build our offer: one audio stream listing ``codecs`` in order.

    Static codecs keep their payload type; dynamic ones get 96, 97...;
    telephone-event/8000 gets 101.
    """
    pairs: list[tuple[int, Codec]] = []
    next_dynamic = FIRST_DYNAMIC_PT
    for codec in codecs:
        if codec.payload_type is not None:
            pairs.append((codec.payload_type, codec))
        else:
            if next_dynamic == TELEPHONE_EVENT_PT:
                next_dynamic += 1
            pairs.append((next_dynamic, codec))
            next_dynamic += 1
    event_pt = TELEPHONE_EVENT_PT if telephone_event else None
    formats = [str(pt) for pt, _ in pairs] + ([str(event_pt)] if event_pt is not None else [])
    media = MediaDescription(
        "audio",
        local_port,
        "RTP/AVP",
        tuple(formats),
        attributes=_audio_attributes(pairs, event_pt, direction),
    )
    return SdpSession(
        origin=_origin(local_addr, session_id, session_version),
        connection=_connection(local_addr),
        media=(media,),
    )


def accept_answer(
    offer: SdpSession,
    answer: SdpSession,
    *,
    supported: Sequence[Codec] = SUPPORTED_CODECS,
) -> MediaParams:
    """Read the peer's answer to our ``offer``.

    The codec is the first one in the answer that we offered (RFC 3264 §7:
    the answerer lists the formats it will use, most preferred first); its
    payload type is the answer's number.

    Raises:
        NegotiationFailed: The answer rejects the stream or picks nothing we offered.
    """
    index = _usable_audio(answer)
    if index is None:
        raise NegotiationFailed("answer rejected the audio stream")
    media = answer.media[index]
    connection = answer.media_connection(media)
    if connection is None:
        raise NegotiationFailed("answer has no c= line for the audio stream")
    offered_index = _usable_audio(offer)
    offered_media = offer.media[offered_index] if offered_index is not None else None
    offered_codecs: list[Codec] = list(supported)
    if offered_media is not None:
        offered_codecs = []
        for pt in offered_media.payload_types:
            rtpmap = offered_media.rtpmap(pt)
            for codec in supported:
                if rtpmap is not None and codec.matches(
                    rtpmap.encoding, rtpmap.clock_rate, rtpmap.channels
                ):
                    offered_codecs.append(codec)
    chosen = _choose_codec(media, offered_codecs, None)
    if chosen is None:
        raise NegotiationFailed(f"answer formats {' '.join(media.formats)} were not offered")
    codec, pt = chosen
    remote_direction = answer.media_direction(media)
    return MediaParams(
        remote_addr=connection.host,
        remote_port=media.port,
        codec=codec.name,
        payload_type=pt,
        clock_rate=codec.clock_rate,
        channels=codec.channels,
        telephone_event_pt=_telephone_event_pt(media),
        ptime=ANSWER_PTIME,
        remote_ptime=media.ptime,
        direction=remote_direction.reversed(),
        remote_hold=is_hold(answer),
    )
