"""The sans-I/O HTTP/1.1 subset webhooks use: every framing, any split, garbage refused."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callstream.webhooks.http11 import HttpProtocolError, ResponseParser, build_request


def parse(
    data: bytes, *, cuts: Sequence[int] = (), keep: int = 1024, eof: bool = False
) -> ResponseParser:
    parser = ResponseParser(keep)
    last = 0
    for cut in sorted(c for c in cuts if 0 < c < len(data)):
        parser.feed(data[last:cut])
        last = cut
    parser.feed(data[last:])
    if eof:
        parser.feed_eof()
    return parser


def test_request_bytes() -> None:
    raw = build_request("POST", "/hooks?a=1", "example.com:8080",
                        [("content-type", "application/json")], b'{"x":1}')
    assert raw == (b"POST /hooks?a=1 HTTP/1.1\r\nhost: example.com:8080\r\n"
                   b"content-type: application/json\r\ncontent-length: 7\r\n\r\n{\"x\":1}")
    assert b"content-length" not in build_request("GET", "/", "h", [], b"")


def test_header_injection_is_refused() -> None:
    with pytest.raises(ValueError, match="line break"):
        build_request("POST", "/", "h", [("x", "a\r\nevil: 1")], b"")


RESPONSES = [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 200, b"hello", True),
    (b"HTTP/1.1 204 No Content\r\n\r\n", 204, b"", True),
    (b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nx-trailer: 1\r\n\r\n", 500, b"abcde", True),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n",
     201, b"", True),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, b"ok", False),
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", 200, b"ok",
     False),
]


@pytest.mark.parametrize(("raw", "status", "body", "keep_alive"), RESPONSES)
@given(cuts=st.lists(st.integers(0, 200), max_size=6))
@settings(max_examples=40, deadline=None)
def test_framings_at_any_split(raw: bytes, status: int, body: bytes, keep_alive: bool,
                               cuts: list[int]) -> None:
    parser = parse(raw, cuts=cuts)
    assert (parser.status, bytes(parser.body), parser.complete) == (status, body, True)
    assert parser.keep_alive is keep_alive


def test_body_until_close() -> None:
    parser = parse(b"HTTP/1.1 200 OK\r\n\r\nstream", eof=False)
    assert parser.status == 200 and not parser.complete and not parser.keep_alive
    parser.feed_eof()
    assert parser.complete and bytes(parser.body) == b"stream"


def test_only_the_start_of_a_long_body_is_kept() -> None:
    parser = parse(b"HTTP/1.1 500 X\r\ncontent-length: 5000\r\n\r\n" + b"x" * 5000, keep=10)
    assert bytes(parser.body) == b"x" * 10 and parser.body_size == 5000 and parser.complete


def test_cut_short_body_is_an_error_at_eof() -> None:
    parser = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
    with pytest.raises(HttpProtocolError, match="before the end"):
        parser.feed_eof()


@pytest.mark.parametrize("raw", [
    b"SSH-2.0-OpenSSH\r\n\r\n",
    b"HTTP/1.1 abc OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabXX",
])
def test_garbage_is_refused(raw: bytes) -> None:
    with pytest.raises(HttpProtocolError):
        parse(raw)


def test_endless_head_is_refused() -> None:
    parser = ResponseParser()
    with pytest.raises(HttpProtocolError, match="head over"):
        for _ in range(100):
            parser.feed(b"x-header: " + b"y" * 1000 + b"\r\n")


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_random_bytes_never_escape_as_other_errors(data: bytes) -> None:
    parser = ResponseParser()
    with contextlib.suppress(HttpProtocolError):
        parser.feed(b"HTTP/1.1 200 OK\r\n" + data)
        parser.feed_eof()
