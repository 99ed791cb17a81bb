"""A stream's socket writes: every frame that is ready goes out in one write.

Each 20 ms tick gives a ``both_tracks`` stream two ``media`` frames (inbound and
outbound), and a mark echo or a ``dtmf`` may join them. The protocol wants each as its
own WebSocket message, but nothing asks for one socket write per message:
:func:`send_frames` frames them all (:mod:`callstream.streaming.framing`: the bytes
``websockets`` makes, with masking keys from a pool rather than one ``getrandom`` system
call each) and hands the transport the lot in one ``writelines`` — one ``send`` system
call where the library's ``send`` makes one per message, and one flow-control wait
instead of one per message. A probe ping
(:meth:`~callstream.streaming.connection.StreamConnection.probe`) may ride along, last.

:func:`write_now` is the same without the wait, for the media path itself: when
:func:`can_write_now` says the socket is open and its buffer below the high-water mark,
a pass-through stream's frames (no encoding to do) are written at once from the callback
that captured them — no task to wake, which costs about as much as the framing. When it
cannot (buffer full, socket closing, a fragmented send under way), the stream's task
sends them with :func:`send_frames`, which waits for the buffer.
"""

from __future__ import annotations

from collections.abc import Sequence

from websockets.asyncio.client import ClientConnection
from websockets.protocol import State

from callstream.streaming.framing import MASKS

__all__ = ["can_write_now", "send_frames", "write_now"]


def can_write_now(ws: ClientConnection) -> bool:
    """Whether :func:`write_now` may write: the socket is open (both the protocol and the
    transport), its write buffer below the high-water mark, no fragmented send under way."""
    return (not ws.paused and ws.protocol.state is State.OPEN and ws.send_in_progress is None
            and not ws.transport.is_closing())


def write_now(ws: ClientConnection, frames: Sequence[bytes], probe: bytes | None = None) -> None:
    """Write ``frames`` as text messages at once, in one write, and the ``probe`` ping
    frame after them if one is given; only after :func:`can_write_now` said yes, with
    nothing awaited since."""
    out = MASKS.text_frames(frames)  # _framed's work, one call less on the media path
    if probe is not None:
        out.append(probe)
    ws.transport.writelines(out)


async def send_frames(ws: ClientConnection, frames: Sequence[bytes],
                      probe: bytes | None = None) -> None:
    """Send each of ``frames`` (UTF-8 JSON) as one text message, in order, in one write,
    and the ``probe`` ping frame after them if one is given.

    Waits while the transport's write buffer is over its high-water mark, as
    ``ws.send`` does.

    Raises:
        ConnectionClosed: the socket is closed or closing (nothing was sent).
    """
    if not frames:
        return
    # send_context checks that the socket is open, and on exit flushes what the protocol
    # still holds (nothing, here) and waits for the buffer to drain.
    async with ws.send_context():
        # Straight to the transport: the protocol's own output (a pong, a close) is
        # flushed by the callback that made it, so none waits to go before these.
        ws.transport.writelines(_framed(frames, probe))


def _framed(frames: Sequence[bytes], probe: bytes | None) -> list[bytes]:
    out = MASKS.text_frames(frames)
    if probe is not None:
        out.append(probe)
    return out
