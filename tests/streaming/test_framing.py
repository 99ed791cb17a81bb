"""Client frames with pooled masking keys: websockets' bytes but for the key, parsed back
by websockets' own server side, a fresh key per frame."""

from __future__ import annotations

import os
import secrets
import warnings

import pytest
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from callstream.streaming import framing
from callstream.streaming.framing import (
    MASKS,
    MAX_PING_PAYLOAD,
    POOL_BYTES,
    MaskPool,
    ping_frame,
    text_frame,
)

# Every length encoding (7, 16 and 64 bits) and both edges of each.
LENGTHS = (0, 1, 125, 126, 127, 65535, 65536, 70_000)


def parse_as_server(data: bytes) -> list[Frame]:
    server = ServerProtocol(state=State.OPEN, max_size=None)
    server.receive_data(data)
    events = server.events_received()
    assert server.parser_exc is None
    return [event for event in events if isinstance(event, Frame)]


@pytest.mark.parametrize("length", LENGTHS)
def test_a_text_frame_is_websockets_own_with_the_same_key(
        length: int, monkeypatch: pytest.MonkeyPatch) -> None:
    data = bytes(ord("a") + i % 26 for i in range(length))
    key = bytes.fromhex("0badf00d")
    monkeypatch.setattr(secrets, "token_bytes", lambda n: key)
    assert text_frame(data, key) == Frame(Opcode.TEXT, data).serialize(mask=True)


def test_a_ping_frame_is_websockets_own_with_the_same_key(
        monkeypatch: pytest.MonkeyPatch) -> None:
    key = bytes.fromhex("01020304")
    monkeypatch.setattr(secrets, "token_bytes", lambda n: key)
    for data in (b"", b"prob\x00\x00\x00\x01", b"x" * MAX_PING_PAYLOAD):
        assert ping_frame(data, key) == Frame(Opcode.PING, data).serialize(mask=True)


def test_a_ping_longer_than_a_control_frame_may_be_is_refused() -> None:
    with pytest.raises(ValueError, match="at most 125 bytes, not 126"):
        ping_frame(b"x" * 126, bytes(4))


def test_websockets_server_side_reads_a_batch_back() -> None:
    pool = MaskPool()
    messages = [f'{{"event":"media","n":{n},"pad":"{"é" * n}"}}'.encode() for n in range(50)]
    messages.append(b"x" * 70_000)
    wire = b"".join(text_frame(m, pool.key()) for m in messages)
    wire += ping_frame(b"probe", pool.key())
    frames = parse_as_server(wire)
    assert [(f.opcode, f.fin, bytes(f.data)) for f in frames] == [
        *((Opcode.TEXT, True, m) for m in messages), (Opcode.PING, True, b"probe")]


def test_every_frame_gets_its_own_key_and_the_pool_refills_from_the_os(
        monkeypatch: pytest.MonkeyPatch) -> None:
    draws: list[int] = []
    urandom = os.urandom

    def counting(n: int) -> bytes:
        draws.append(n)
        return urandom(n)

    monkeypatch.setattr(framing.os, "urandom", counting)
    pool = MaskPool()
    keys = [pool.key() for _ in range(3 * POOL_BYTES // 4)]
    assert draws == [POOL_BYTES] * 3  # one system call per 1,024 frames
    assert all(len(key) == 4 for key in keys)
    assert len(set(keys)) > len(keys) - 3  # fresh keys (a repeat among 3,072 is ~1e-3)
    frames = [text_frame(b'{"event":"media"}', key) for key in keys[:8]]
    assert len({frame[2:6] for frame in frames}) == 8  # the key is on the wire, masked data
    assert len({frame[6:] for frame in frames}) == 8  # differs with it


def test_a_pool_must_hold_whole_keys() -> None:
    with pytest.raises(ValueError, match="whole 4-byte keys, not 6 bytes"):
        MaskPool(6)


def test_a_forked_child_does_not_reuse_its_parents_keys() -> None:
    MASKS.key()  # the pool is drawn
    read, write = os.pipe()
    with warnings.catch_warnings():  # 3.12 warns about forking with threads; none here
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, MASKS.key())
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    child = os.read(read, 4)
    os.close(read)
    assert status == 0
    assert child != MASKS.key()  # without the reset, the child had the parent's next key
