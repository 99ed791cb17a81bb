"""Codec names as users write them: ``--codec G722,PCMU`` and ``preferred_codecs``.

Telnyx's ``preferred_codecs`` on dial and answer is one comma-separated string
("G722,PCMU"), most preferred first; ``callstream call --codec`` takes the same
names. Both are read here, so a name means the same codec everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable

from callstream.sip.offer_answer import G722, L16_16K, PCMA, PCMU, Codec

#: The names we take, and the codec each one offers.
CODECS: dict[str, Codec] = {"PCMU": PCMU, "PCMA": PCMA, "G722": G722, "L16": L16_16K}


class UnknownCodec(ValueError):
    """A codec name we can't run, or a list naming none."""


def parse_codec_names(texts: Iterable[str]) -> tuple[Codec, ...]:
    """``["G722,pcmu", "PCMA"]`` -> the codecs in that order, each once.

    Names are case-insensitive; blanks between commas are ignored.

    Raises:
        UnknownCodec: A name not in :data:`CODECS`, or no name at all.
    """
    codecs: list[Codec] = []
    for text in texts:
        for name in text.split(","):
            name = name.strip().upper()
            if not name:
                continue
            codec = CODECS.get(name)
            if codec is None:
                raise UnknownCodec(f"unknown codec {name!r}: choose from {', '.join(CODECS)}")
            if codec not in codecs:
                codecs.append(codec)
    if not codecs:
        raise UnknownCodec("no codec named")
    return tuple(codecs)
