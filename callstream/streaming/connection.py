"""A stream's WebSocket connection: ``websockets``' client, read inline and probed cheaply.

Reading. ``websockets`` hands every received message to a reader task through its
assembler, so each ``media`` message a voice-AI consumer sends back (50 a second per
stream) wakes a task, which costs more than playing the message. A
:class:`StreamConnection` with an :attr:`~StreamConnection.on_text` hands each whole text
message to it from ``data_received``, the callback that parsed it — one path, so
``media``, ``mark`` and ``clear`` keep their order. Fragments are joined first (the
protocol's ``max_size`` still bounds the whole message); binary messages are dropped (the
stream protocol has none: the reader task dropped them too); a text message that is not
UTF-8 fails the connection with 1007, as ``websockets``' own ``recv`` does. The assembler
then sees no messages, only the end: ``async for message in ws`` ends with the socket.

The frames themselves: a consumer's message is one small unfragmented text frame, which
``websockets``' generator parser takes ~5 µs to read. While the connection is open and
its parser holds no partial data, :meth:`~StreamConnection.data_received` reads the
whole such frames at the front of the data itself (FIN and text opcode, no RSV bits, no
mask, a 7- or 16-bit length within ``max_size``: RFC 6455 §5.2) and hands everything
from the first other byte on — a control frame, a fragment, a longer or a bad frame, a
partial one — to ``websockets``, which sees a stream that starts on a frame boundary.
Messages parsed before :attr:`~StreamConnection.on_text` was set (with the upgrade
response) stay in the assembler for the reader task, and so does the rest of a message
whose first fragment went there.

Probing. The latency bound (:mod:`callstream.streaming.session`) needs to know how far
behind the consumer reads: a ping is answered only once everything written before it
has been read. Instead of a ping of its own every :data:`PROBE_SECS` (a timer, a task
step and a socket write each), :meth:`~StreamConnection.probe` gives a ping frame to add
to a write of media that goes out anyway, when no probe is unanswered and the last went
out :data:`PROBE_SECS` ago or more. Its pong is matched here (``websockets`` would ignore
it as unsolicited): read from the data like a whole text frame when it is at the front,
else taken from ``websockets``' events; :attr:`~StreamConnection.probe_asked` is when the
unanswered one went out.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.frames import CloseCode, Frame, Opcode
from websockets.protocol import Event, State

from callstream.streaming.framing import MASKS, ping_frame

__all__ = ["PROBE_SECS", "StreamConnection"]

log = logging.getLogger(__name__)

#: Least time between two probe pings of a stream (one is unanswered at a time).
PROBE_SECS = 0.1
_PROBE = struct.Struct("!4sI")  # b"prob" + a counter: never one of websockets' ping ids
_PROBE_TAG = b"prob"
_FIN_TEXT = 0x81  # FIN, no RSV bits, opcode 0x1; a server's frames are not masked
_FIN_PONG = 0x8A  # FIN, no RSV bits, opcode 0xA
_LENGTH_16 = 126  # the length follows in 16 bits (a second byte of 127: 64 bits)


class StreamConnection(ClientConnection):
    """``websockets``' client connection; made by ``connect(create_connection=...)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # websockets' own arguments
        super().__init__(*args, **kwargs)
        #: Gets each text message from ``data_received``; None: the assembler does.
        self.on_text: Callable[[str], None] | None = None
        self._fragments: list[bytes] | None = None  # a fragmented message read so far
        self._fragments_text = False
        self._failed = False  # failed for a bad message: play nothing after it
        self._probes = 0
        self._probe_data = b""
        self._probe_last = float("-inf")
        #: When the probe ping not answered yet went out (the session's clock); None: none.
        self.probe_asked: float | None = None

    def probe(self, now: float) -> bytes | None:
        """A probe ping frame to write now (the caller writes it), or None: one is
        unanswered, or the last went out less than :data:`PROBE_SECS` ago."""
        if self.probe_asked is not None or now - self._probe_last < PROBE_SECS:
            return None
        self._probes += 1
        self._probe_data = _PROBE.pack(_PROBE_TAG, self._probes & 0xFFFFFFFF)
        self.probe_asked = self._probe_last = now
        return ping_frame(self._probe_data, MASKS.key())

    def data_received(self, data: bytes) -> None:
        protocol = self.protocol
        if (self.on_text is None or protocol.state is not State.OPEN or protocol.reader.buffer
                or protocol.current_size is not None or self._fragments is not None
                or protocol.extensions or (data[0] != _FIN_TEXT and data[0] != _FIN_PONG)):
            super().data_received(data)
            return
        limit = protocol.max_message_size
        on_text = self.on_text
        at, end = 0, len(data)
        while at + 2 <= end:
            head = data[at]
            length = data[at + 1]
            start = at + 2
            if head == _FIN_PONG:
                # The probe's pong (one in five ticks of a stream): matched here, not
                # through websockets' parser and events. Any other pong, a longer or a
                # partial one, is websockets' to read.
                probe = self._probe_data
                if length != len(probe) or data[start : start + length] != probe:
                    break
                self.probe_asked = None
                at = start + length
                continue
            if head != _FIN_TEXT:
                break
            if length == _LENGTH_16 and start + 2 <= end:
                length = (data[start] << 8) | data[start + 1]
                start += 2
            elif length >= _LENGTH_16:
                break  # a 64-bit length, a mask bit, or the length's bytes not here yet
            if start + length > end or (limit is not None and length > limit):
                break  # partial, or too big: websockets fails it with 1009
            at = start + length
            if self._failed:
                continue
            # _text's work inline for valid UTF-8 (a call fewer: 50 messages a second a
            # stream); a bad message goes to _text, which fails the connection.
            try:
                message = data[start:at].decode()
            except UnicodeDecodeError:
                self._text(data[start:at])
                continue
            try:
                on_text(message)
            except Exception:  # a bug there must not take the socket down with it
                log.exception("a stream's consumer message handler failed")
        if at < end:
            super().data_received(data[at:] if at else data)

    def process_event(self, event: Event) -> None:
        if self.on_text is None or self.response is None or not isinstance(event, Frame):
            super().process_event(event)  # the upgrade response, or messages to the assembler
            return
        opcode = event.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY or opcode is Opcode.CONT:
            self._data_frame(event)
            return
        if opcode is Opcode.PONG and event.data == self._probe_data:
            self.probe_asked = None
            return
        super().process_event(event)  # pongs of websockets' own pings (the stall watchdog)

    def _data_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.CONT:
            fragments = self._fragments
            if fragments is None:  # its first fragment went to the assembler
                super().process_event(frame)
                return
            fragments.append(bytes(frame.data))
            if not frame.fin:
                return
            data = b"".join(fragments)
            text = self._fragments_text
            self._fragments = None
        elif not frame.fin:
            self._fragments = [bytes(frame.data)]
            self._fragments_text = frame.opcode is Opcode.TEXT
            return
        else:
            data = bytes(frame.data)
            text = frame.opcode is Opcode.TEXT
        if text:
            self._text(data)

    def _text(self, data: bytes) -> None:
        """A whole text message's bytes: to :attr:`on_text`."""
        if self._failed:
            return
        try:
            message = data.decode()
        except UnicodeDecodeError as exc:
            # As websockets' recv(): RFC 6455 §8.1, "_Fail the WebSocket Connection_".
            self._failed = True  # frames parsed with it are events already: drop them
            self.protocol.fail(CloseCode.INVALID_DATA, f"{exc.reason} at position {exc.start}")
            try:
                self.send_data()
            except Exception as send_exc:
                self.set_connection_exc(send_exc)
            return
        on_text = self.on_text
        assert on_text is not None  # process_event checked
        try:
            on_text(message)
        except Exception:  # a bug there must not take the socket down with it
            log.exception("a stream's consumer message handler failed")
