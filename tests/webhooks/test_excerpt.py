"""response_excerpt: what of a receiver's answer the delivery log may keep, by table."""

from __future__ import annotations

import pytest

from callstream.webhooks.excerpt import response_excerpt


@pytest.mark.parametrize(
    ("content_type", "body", "limit", "expected"),
    [
        ("application/json", b'{"ok":true}', 256, '{"ok":true}'),
        ("Application/JSON; charset=utf-8", b"abcdef", 3, "abc"),
        ("text/plain", b"hello", 256, "hello"),
        ("text/plain", "é".encode() * 3, 3, "é"),  # a character cut at the limit is left out
        ("text/plain", b"a\xffb", 256, "a\ufffdb"),  # bad bytes are replaced
        ("text/html", b"<html>", 256, None),
        ("application/xml", b"<a/>", 256, None),
        ("application/json+evil", b"{}", 256, None),
        (None, b"secret", 256, None),
        ("application/json", b"", 256, None),
        ("application/json", b"{}", 0, None),  # keeping turned off
    ],
)
def test_response_excerpt(
    content_type: str | None, body: bytes, limit: int, expected: str | None
) -> None:
    assert response_excerpt(content_type, body, limit) == expected
