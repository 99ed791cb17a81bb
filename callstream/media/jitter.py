"""The jitter buffer: packets in as they arrive, one 20 ms PCM frame out per tick.

Theory of operation
-------------------
The buffer holds **encoded payloads**, keyed by extended sequence number,
and decodes them only when it plays them out. Two reasons: G.722 is ADPCM,
whose decoder state must see packets in sequence order, so decoding on
arrival would decode reordered packets wrongly; and a 160-byte payload is
cheaper to hold than its PCM. Everything after decoding — re-framing and
concealment — works on internal PCM (16-bit little-endian).

``push()`` files a payload; ``pull()`` is called once per 20 ms tick and
returns exactly one 20 ms frame of PCM, or ``None`` while there is nothing to
play (before the first packets, or after the peer went quiet). ``advance()``
is ``pull()`` for a tick nobody hears: the same bookkeeping, no PCM, and with
a stateless codec no decode (see :meth:`JitterBuffer.advance`).

* **Prefetch.** Playout starts once :data:`JITTER_PREFETCH_MS` of audio is
  buffered, and the same depth decides how long a hole is waited for: when
  the next packet is missing but later ones are buffered, the hole is
  declared lost only once that much audio sits behind it.
* **Re-framing.** Decoded PCM goes through a FIFO cut into 20 ms frames, so a
  peer using 30 ms packets (240-byte PCMA) plays out as 20 ms frames. When
  payloads are exactly 20 ms the FIFO is bypassed.
* **Concealment.** A lost packet, or a tick with nothing to play, is filled
  by repeating the last good frame, attenuated by :data:`PLC_GAINS` on each
  consecutive concealed frame, then silence. After
  :data:`MAX_CONCEAL_FRAMES` concealed frames in a row without any packet,
  playout stops (``pull()`` returns None) and restarts with a new prefetch.
* **Bounds.** At most :data:`JITTER_CAPACITY` packets are held; beyond it,
  or beyond :data:`JITTER_MAX_MS` of buffered audio, the oldest are dropped.
  A jump of more than :data:`MAX_DROPOUT` forward or :data:`MAX_MISORDER`
  back is a restarted stream once a second sequential packet confirms it
  (RFC 3550 A.1's rule).

Placeholders: a packet that carries no audio but uses a sequence number (a
telephone-event or comfort-noise packet) is pushed with ``payload=None`` and
plays as one frame of silence, so it is not mistaken for a loss. A
telephone-event sent *between* audio packets (baresip keeps its audio going
during a digit; RFC 4733 §2.5.1.2 only recommends muting) takes no time of its
own: it is pushed as :data:`NO_AUDIO`, which holds its sequence number and
plays as nothing. As a frame of silence it would push the audio behind it a
frame later each time, until the buffer overflowed and dropped audio.
"""

from __future__ import annotations

import enum

from callstream.media.codecs import CodecInfo
from callstream.media.codecs.base import Decoder
from callstream.media.codecs.pcm import scale, silence
from callstream.media.seqnum import SEQ_MASK

__all__ = [
    "JITTER_CAPACITY",
    "JITTER_MAX_MS",
    "JITTER_PREFETCH_MS",
    "MAX_CONCEAL_FRAMES",
    "NO_AUDIO",
    "PLC_GAINS",
    "JitterBuffer",
    "PushResult",
]

JITTER_CAPACITY = 50  # packets: one second of 20 ms audio
JITTER_PREFETCH_MS = 40
JITTER_MAX_MS = 300  # buffered audio beyond this is dropped to cut latency
MAX_CONCEAL_FRAMES = 10  # 200 ms of concealment/silence, then playout stops
PLC_GAINS = (0.8, 0.5, 0.25)  # then silence
MAX_CONCEAL_PACKETS = 3  # a longer gap is skipped, not concealed packet by packet
MAX_DROPOUT = 3000
MAX_MISORDER = 100
#: The payload of a packet that holds a sequence number but no time (see above).
NO_AUDIO = b""

class PushResult(enum.Enum):
    """What :meth:`JitterBuffer.push` did with a packet."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    LATE = "late"  # its turn to play has passed
    DEFERRED = "deferred"  # a far jump, held until a second packet confirms it
    RESTARTED = "restarted"  # a confirmed jump: the buffer started over


class JitterBuffer:
    """Reorders one RTP stream and plays it out as 20 ms PCM frames.

    Args:
        codec: the stream's codec (payload sizes and PCM rate).
        decoder: its decoder; used in sequence order only.
        prefetch_ms: audio to buffer before playout and before declaring a hole lost.
        capacity: most packets held.
    """

    __slots__ = (
        "_bad_seq",
        "_buffered",
        "_capacity",
        "_conceal_run",
        "_concealed_for_next",
        "_decoder",
        "_frame_bytes",
        "_frame_samples",
        "_highest",
        "_last_frame",
        "_last_packet_samples",
        "_max_samples",
        "_next",
        "_next_valid",
        "_packets",
        "_payload_bytes",
        "_pcm",
        "_playing",
        "_prefetch_samples",
        "_samples_for",
        "_silence",
        "_stateless",
        "_undecoded",
        "concealed_frames",
        "duplicates",
        "late",
        "lost",
        "overflow",
        "played",
        "restarts",
        "underruns",
    )

    def __init__(
        self,
        codec: CodecInfo,
        decoder: Decoder,
        *,
        prefetch_ms: int = JITTER_PREFETCH_MS,
        capacity: int = JITTER_CAPACITY,
    ) -> None:
        self._decoder = decoder
        self._samples_for = codec.samples_for
        self._frame_samples = codec.frame_samples
        self._frame_bytes = codec.pcm_frame_bytes
        # A payload of exactly 20 ms takes the fast paths (-1: none does, as with Opus).
        self._payload_bytes = codec.frame_bytes or -1
        self._stateless = decoder.stateless
        self._silence = silence(codec.frame_samples)
        self._prefetch_samples = max(prefetch_ms, 0) * codec.sample_rate // 1000
        self._max_samples = max(JITTER_MAX_MS * codec.sample_rate // 1000, self._prefetch_samples)
        self._capacity = capacity
        self._packets: dict[int, bytes | None] = {}
        self._buffered = 0  # samples held in _packets
        self._pcm = bytearray()
        self._playing = False
        self._next = 0
        self._next_valid = False  # _next is meaningful once playout has begun
        self._highest: int | None = None
        self._bad_seq = -1
        self._last_frame = self._silence
        # The payload that _last_frame is the PCM of, while advance() left it undecoded.
        self._undecoded: bytes | None = None
        self._last_packet_samples = codec.frame_samples
        self._conceal_run = 0
        self._concealed_for_next = 0
        self.played = 0
        self.lost = 0
        self.late = 0
        self.duplicates = 0
        self.overflow = 0
        self.concealed_frames = 0
        self.underruns = 0
        self.restarts = 0

    @property
    def playing(self) -> bool:
        """Whether playout has started (and not stopped after a long silence)."""
        return self._playing

    @property
    def buffered_ms(self) -> float:
        """Audio waiting in the buffer, in milliseconds."""
        return self._buffered * 1000.0 / (self._frame_samples * 50)

    def __len__(self) -> int:
        return len(self._packets)

    def _duration(self, payload: bytes | None) -> int:
        return self._frame_samples if payload is None else self._samples_for(len(payload))

    def push(self, seq: int, payload: bytes | None) -> PushResult:
        """File one packet's payload (``None``: a placeholder for a non-audio packet)."""
        highest = self._highest
        if highest is None:
            ext = seq
            self._highest = ext
        else:
            ext = highest + ((seq - highest + 0x8000) & 0xFFFF) - 0x8000  # unwrap_seq, inlined
            floor = self._next if self._playing else highest - MAX_MISORDER
            if ext > highest + MAX_DROPOUT or ext < floor - MAX_MISORDER:
                if seq != self._bad_seq:
                    self._bad_seq = (seq + 1) & SEQ_MASK
                    return PushResult.DEFERRED
                self._restart()
                self._highest = ext = seq
                self._file(ext, payload)
                return PushResult.RESTARTED
            if self._next_valid and ext < self._next:
                self.late += 1
                return PushResult.LATE
            if ext in self._packets:
                self.duplicates += 1
                return PushResult.DUPLICATE
            if ext > highest:
                self._highest = ext
        packets = self._packets
        if len(packets) < self._capacity:  # _file, inlined: once per packet received
            packets[ext] = payload
            if payload is None:
                self._buffered += self._frame_samples
            else:
                length = len(payload)
                self._buffered += (self._frame_samples if length == self._payload_bytes
                                   else self._samples_for(length))
        else:
            self._file(ext, payload)
        return PushResult.ACCEPTED

    def _file(self, ext: int, payload: bytes | None) -> None:
        packets = self._packets
        if len(packets) >= self._capacity:
            oldest = min(packets)
            if ext < oldest:
                self.overflow += 1
                return
            self._buffered -= self._duration(packets.pop(oldest))
            self.overflow += 1
        packets[ext] = payload
        self._buffered += (
            self._frame_samples if payload is None else self._samples_for(len(payload))
        )

    def _restart(self) -> None:
        self.restarts += 1
        self._packets.clear()
        self._buffered = 0
        self._pcm.clear()
        self._playing = False
        self._next_valid = False
        self._bad_seq = -1

    def _shrink(self) -> None:
        # Too much audio queued (the peer sent a burst): drop the oldest
        # packets down to the prefetch depth rather than play them late.
        packets = self._packets
        while packets and self._buffered > self._prefetch_samples:
            oldest = min(packets)
            self._buffered -= self._duration(packets.pop(oldest))
            self.overflow += 1
        if packets:
            self._next = min(packets)

    def pull(self) -> bytes | None:
        """Return the next 20 ms of PCM, concealing losses; None when not playing."""
        # The common tick: playing, the next packet here, 20 ms of audio, nothing
        # left over from re-framing. The general path below does the same for it.
        packets = self._packets
        ext = self._next
        if self._playing and ext in packets and not self._pcm and (
                self._buffered <= self._max_samples):
            entry = packets[ext]
            if entry is not None and len(entry) == self._payload_bytes:
                del packets[ext]
                self._next = ext + 1
                self._buffered -= self._frame_samples
                decoded = self._last_frame = self._decoder.decode(entry)
                self._undecoded = None
                self._last_packet_samples = self._frame_samples
                self._conceal_run = 0
                self._concealed_for_next = 0
                self.played += 1
                return decoded
        return self._pull()

    def advance(self) -> bool:
        """Play the next 20 ms out unheard: :meth:`pull`'s bookkeeping without its PCM.

        For a tick where nobody reads the inbound audio. The losses, concealment,
        stops and counters are exactly ``pull()``'s, and a ``pull()`` on any later
        tick returns what it would have returned. A stateless codec's common tick
        skips the decode: the payload is kept, and decoded only if concealment
        needs the last frame. Returns whether a frame played (``pull()`` would have
        returned PCM rather than None).
        """
        packets = self._packets
        ext = self._next
        if self._stateless and self._playing and ext in packets and not self._pcm and (
                self._buffered <= self._max_samples):
            entry = packets[ext]
            if entry is not None and len(entry) == self._payload_bytes:
                del packets[ext]
                self._next = ext + 1
                self._buffered -= self._frame_samples
                self._undecoded = entry
                self._last_packet_samples = self._frame_samples
                self._conceal_run = 0
                self._concealed_for_next = 0
                self.played += 1
                return True
        return self._pull() is not None

    def _pull(self) -> bytes | None:
        # pull()'s general path: starts, re-framing, placeholders, losses, concealment.
        packets = self._packets
        if not self._playing:
            if not packets or self._buffered < self._prefetch_samples:
                return None
            self._playing = True
            self._next_valid = True
            self._next = min(packets)
            self._conceal_run = 0
            self._concealed_for_next = 0
        if self._buffered > self._max_samples:
            self._shrink()
        frame_bytes = self._frame_bytes
        pcm = self._pcm
        while len(pcm) < frame_bytes:
            if self._next in packets:
                entry = packets.pop(self._next)
                self._next += 1
                self._buffered -= (  # _duration, inlined: once per packet played
                    self._frame_samples if entry is None else self._samples_for(len(entry)))
                if entry is None:
                    decoded = self._last_frame = self._silence
                    self._undecoded = None
                elif not entry:  # NO_AUDIO: its sequence number, no time
                    continue
                else:
                    decoded = self._decoder.decode(entry)
                    self._last_packet_samples = len(decoded) >> 1 or self._frame_samples
                    if len(decoded) > frame_bytes:
                        self._last_frame = decoded[-frame_bytes:]  # what PLC repeats
                        self._undecoded = None
                    elif len(decoded) == frame_bytes:
                        self._last_frame = decoded
                        self._undecoded = None
                self._conceal_run = 0
                self._concealed_for_next = 0
                self.played += 1
                if not pcm and len(decoded) == frame_bytes:
                    return decoded  # the common case: 20 ms packets, no copy
                pcm += decoded
                continue
            if not packets or self._buffered < self._prefetch_samples:
                return self._conceal_tick()
            # The next packet is missing, and a prefetch's worth of later audio
            # has arrived behind it: it is lost.
            first = min(packets)
            gap = first - self._next
            self.lost += gap
            owed = min(gap, MAX_CONCEAL_PACKETS) * self._last_packet_samples
            owed -= self._concealed_for_next  # already covered while waiting
            self._concealed_for_next = 0
            if owed > 0:
                pcm += self._concealment(owed)
            self._next = first
        frame = bytes(pcm[:frame_bytes])
        del pcm[:frame_bytes]
        return frame

    def _conceal_tick(self) -> bytes | None:
        # Nothing playable this tick: fill the frame with concealment.
        self.underruns += 1
        if self._conceal_run >= MAX_CONCEAL_FRAMES:
            self._playing = False  # the peer went quiet; prefetch again
            self._pcm.clear()
            return None
        pcm = self._pcm
        missing = (self._frame_bytes - len(pcm)) >> 1
        self._concealed_for_next += missing
        pcm += self._concealment(missing)
        frame = bytes(pcm)
        pcm.clear()
        return frame

    def _concealment(self, samples: int) -> bytes:
        """Return ``samples`` of concealment: the last frame, fading, then silence."""
        if self._undecoded is not None:  # advance() left the last frame undecoded
            self._last_frame = self._decoder.decode(self._undecoded)
            self._undecoded = None
        out = bytearray()
        while samples > 0:
            take = min(samples, self._frame_samples)
            run = self._conceal_run
            self._conceal_run = run + 1
            self.concealed_frames += 1
            if run < len(PLC_GAINS):
                out += scale(self._last_frame[: 2 * take], PLC_GAINS[run])
            else:
                out += silence(take)
            samples -= take
        return bytes(out)
