"""What a transcription logs when it starts and stops (docs/logging.md).

A stand-in engine that hears nothing: these tests are about the lines, not about speech
(the real Whisper engine is tested in test_whisper.py and tests/e2e/test_transcription.py,
which load a model).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any, cast

import pytest

from callstream.calls.features import LegMedia
from callstream.media.hub import MediaHub
from callstream.transcription.engine import RecognizerOptions, Segment
from callstream.transcription.manager import Request, Transcription, TranscriptionManager

CALL_ID = "v3:log-lines"


class _Deaf:
    """Hears nothing; the engine and track recogniser at once."""

    name = "deaf"

    def check(self, options: RecognizerOptions) -> None:
        return None

    def new_track(self, options: RecognizerOptions, *, final_engine: _Deaf | None = None) -> _Deaf:
        return self

    def feed(self, pcm: bytes, sample_rate: int, *, interims: bool = True) -> list[Segment]:
        return []

    def flush(self) -> list[Segment]:
        return []


@pytest.mark.parametrize(("tracks", "words"), [
    (("inbound",), "inbound track"), (("inbound", "outbound"), "inbound and outbound tracks"),
])
async def test_start_and_stop_lines_name_the_call_engine_and_why(
        caplog: pytest.LogCaptureFixture, tracks: tuple[str, ...], words: str) -> None:
    caplog.set_level("INFO", logger="callstream.transcription.manager")
    hub = MediaHub("session")
    hub.add_leg("leg", 8000)
    media = LegMedia(hub=hub, leg="leg", codec="PCMU", sample_rate=8000, payload_type=0)
    with ThreadPoolExecutor(1) as pool:
        manager = cast(TranscriptionManager, SimpleNamespace(pool=pool, calls=None))
        call = cast(Any, SimpleNamespace(id=CALL_ID))
        request = Request(engine="Google", tracks=tracks, options=RecognizerOptions(),
                          model=None, model_pointer="/transcription_engine")
        transcription = Transcription(manager, call, media, cast(Any, _Deaf()), request)
        assert transcription.detach("hangup") == []
        async with asyncio.timeout(10):
            await asyncio.gather(*(w.task for w in transcription.workers))
    hub.close()
    lines = [(r.getMessage(), getattr(r, "call_control_id", None)) for r in caplog.records]
    assert lines == [
        (f"call {CALL_ID}: transcription started (Google engine, model deaf, {words})",
         CALL_ID),
        (f"call {CALL_ID}: transcription stopped (hangup)", CALL_ID),
    ]
