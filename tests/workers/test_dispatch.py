from __future__ import annotations

import secrets
import zlib
from collections import Counter

import pytest

from callstream.workers.dispatch import (
    call_id_key,
    owned_token,
    owner_index,
    worker_for_datagram,
    worker_for_key,
    worker_owner,
)


def _request(call_id_header: bytes, body: bytes = b"") -> bytes:
    return (b"INVITE sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1\r\n"
            + call_id_header + b"\r\nCSeq: 1 INVITE\r\n\r\n" + body)


@pytest.mark.parametrize("header", [
    b"Call-ID: abc123@127.0.0.1", b"call-id:abc123@host", b"i: abc123@h", b"CALL-ID:  abc123 ",
])
def test_call_id_key_is_the_call_id_before_the_at(header: bytes) -> None:
    assert call_id_key(_request(header)) == b"abc123"


def test_a_call_id_in_the_body_is_not_the_header() -> None:
    datagram = _request(b"X-Other: 1", body=b"Call-ID: body@h\r\n")
    assert call_id_key(datagram) is None
    assert worker_for_datagram(datagram, 4) == 0


def test_the_owner_of_a_datagram_is_the_hash_of_its_key() -> None:
    for key in (b"a", b"1-2345@10.0.0.1".partition(b"@")[0], b"xyz"):
        datagram = _request(b"Call-ID: " + key + b"@host")
        assert worker_for_datagram(datagram, 3) == zlib.crc32(key) % 3 == worker_for_key(key, 3)


def test_garbage_goes_to_worker_zero() -> None:
    assert worker_for_datagram(b"\r\n\r\n", 2) == 0
    assert worker_for_datagram(b"", 2) == 0


@pytest.mark.parametrize(("index", "workers"), [(0, 2), (1, 2), (2, 3), (5, 8)])
def test_owned_tokens_hash_to_their_worker(index: int, workers: int) -> None:
    token = owned_token(index, workers)
    for size in (1, 4, 6, 8, 12):
        value = token(size)
        assert len(value) == 2 * size
        assert worker_for_key(value.encode(), workers) == index
        # As the endpoint writes it into a Call-ID.
        assert worker_for_datagram(_request(f"Call-ID: {value}@127.0.0.1".encode()),
                                   workers) == index


def test_owned_urlsafe_tokens_hash_to_their_worker() -> None:
    token = owned_token(1, 3, secrets.token_urlsafe)
    values = [token(32) for _ in range(50)]
    assert all(worker_for_key(v.encode(), 3) == 1 for v in values)
    assert len(set(values)) == 50 and all(len(v) == 43 for v in values)


def test_random_call_ids_spread_evenly() -> None:
    tokens = owned_token(0, 1)
    counts = Counter(worker_for_key(tokens(12).encode(), 2) for _ in range(4000))
    assert min(counts.values()) / max(counts.values()) > 0.85


def test_owner_names_round_trip() -> None:
    node = "host:127.0.0.1:5060"
    assert owner_index(worker_owner(node, 3), node, 4) == 3
    assert owner_index(worker_owner(node, 4), node, 4) is None  # no such worker now
    assert owner_index(node, node, 4) is None  # a single-process run's calls
    assert owner_index("other:1/worker-0", node, 4) is None
    assert owner_index(node + "/worker-x", node, 4) is None
