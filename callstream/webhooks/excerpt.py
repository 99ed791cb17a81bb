"""What the delivery log keeps of a receiver's answer: by default nothing.

An API user names the webhook URL, so a body kept in the log is a way to read whatever
that URL answers, an internal service included (SSRF read-back). The log therefore keeps
no body unless the operator asks (``webhook_keep_response_body``), and then only a short
start of a textual answer (``text/plain`` or ``application/json``), never HTML, images or
anything a receiver did not mean as a message to a webhook sender.
"""

from __future__ import annotations

import codecs

#: The most a setting may keep; the parser reads no more than this of any answer.
MAX_EXCERPT_BYTES = 1024
#: Media types whose start may be kept (parameters such as ``charset`` are ignored).
EXCERPT_MEDIA_TYPES = frozenset({"text/plain", "application/json"})


def response_excerpt(content_type: str | None, body: bytes, limit: int) -> str | None:
    """The part of an answer's body the delivery log may keep, or ``None``.

    Args:
        content_type: the answer's ``Content-Type`` header, if any.
        body: the start of the body as read (at least ``limit`` bytes when there were).
        limit: bytes to keep; 0 keeps nothing.

    Returns:
        At most ``limit`` bytes of ``body``, decoded as UTF-8 (a character cut at the
        limit is dropped, bad bytes replaced); ``None`` when the limit is 0, the body is
        empty or its media type is not one of :data:`EXCERPT_MEDIA_TYPES`.
    """
    if limit <= 0 or not body or content_type is None:
        return None
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type not in EXCERPT_MEDIA_TYPES:
        return None
    # Not final: a character cut in two at the limit is left out rather than mangled.
    return codecs.getincrementaldecoder("utf-8")("replace").decode(body[:limit], final=False)
