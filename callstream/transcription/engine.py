"""The speech-recognition interface every transcription engine implements.

An :class:`Engine` is loaded once per process (one model, shared by every call) and
hands out one :class:`TrackRecognizer` per transcribed track. A recogniser is fed the
track's audio in arrival order and returns :class:`Segment` objects: interim guesses
while someone speaks and one final transcript per utterance.

Recognisers are synchronous and CPU-bound: the transcription manager calls them from
a worker thread, one call at a time per track (never two at once on the same
recogniser), so an engine needs no locking of its own per track. Several tracks'
recognisers do run at the same time on different threads; what they share (the model)
must allow that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Self


class EngineUnavailable(Exception):
    """The engine or its model can't be used here; the message says why and what to do."""


class UnsupportedOption(ValueError):
    """A transcription option this engine can't honour (e.g. a language the model lacks).

    Attributes:
        field: the engine-config key at fault (``"language"``...).
    """

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class Segment:
    """A piece of transcript.

    Attributes:
        text: what was said (may be empty only for an interim that saw no words yet).
        is_final: False for an interim guess that later segments replace.
        confidence: 0..1, the decoder's mean token probability.
        start: seconds from the first audio the recogniser was fed.
        end: seconds from the first audio, where this segment's audio stops.
    """

    text: str
    is_final: bool
    confidence: float
    start: float
    end: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must be within 0..1, got {self.confidence}")
        if self.end < self.start:
            raise ValueError(f"segment ends ({self.end}) before it starts ({self.start})")


@dataclass(frozen=True, slots=True)
class RecognizerOptions:
    """What a call asked for (from ``transcription_engine_config``).

    Attributes:
        language: a language code (``"en"``), or None to let the model detect it.
        interim_results: whether interim segments are wanted at all.
        hints: words or phrases to bias recognition towards (``hints``/``keyterms``).
    """

    language: str | None = "en"
    interim_results: bool = False
    hints: tuple[str, ...] = field(default_factory=tuple)


class TrackRecognizer(Protocol):
    """Recognition state of one track. Not thread-safe: one caller at a time."""

    def feed(self, pcm: bytes, sample_rate: int, *, interims: bool = True) -> list[Segment]:
        """Take the next audio (s16le mono) and return the segments it completes.

        Args:
            pcm: any number of samples following the previous call's.
            sample_rate: their rate; it must stay the same for the track.
            interims: False when the caller is behind and wants no interim decoding
                this time (finals are never skipped).
        """
        ...

    def flush(self) -> list[Segment]:
        """The track ended: finish the utterance in progress (a final, if any words)."""
        ...


class Engine(Protocol):
    """A loaded model, shared by all tracks of the process."""

    @property
    def name(self) -> str:
        """What the model is, for logs and metrics (``"tiny.en"``)."""
        ...

    def check(self, options: RecognizerOptions) -> None:
        """Raise :class:`UnsupportedOption` when ``options`` can't be honoured."""
        ...

    def new_track(self, options: RecognizerOptions, *,
                  final_engine: Self | None = None) -> TrackRecognizer:
        """A recogniser for one more track; with ``final_engine`` (two-pass), that
        engine decodes its finals while this one decodes its interims."""
        ...
