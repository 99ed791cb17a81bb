"""A stream's socket writes: every frame that is ready goes out in one write.

Each 20 ms tick gives a ``both_tracks`` stream two ``media`` frames (inbound and
outbound), and a mark echo or a ``dtmf`` may join them. The protocol wants each as its
own WebSocket message, but nothing asks for one socket write per message:
:func:`send_frames` frames them all with the ``websockets`` sans-I/O protocol (masking
included) and hands the transport the lot in one ``writelines`` — one ``send`` system
call where the library's ``send`` makes one per message, and one flow-control wait
instead of one per message. The bytes on the wire are the same.
"""

from __future__ import annotations

from collections.abc import Sequence

from websockets.asyncio.client import ClientConnection

__all__ = ["send_frames"]


async def send_frames(ws: ClientConnection, frames: Sequence[bytes]) -> None:
    """Send each of ``frames`` (UTF-8 JSON) as one text message, in order, in one write.

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
        protocol = ws.protocol
        for frame in frames:
            protocol.send_text(frame)
        # Only our frames are queued: the connection flushes what its reader makes (a
        # pong, a close) in the same callback, and nothing awaits between here and there.
        ws.transport.writelines(protocol.data_to_send())
