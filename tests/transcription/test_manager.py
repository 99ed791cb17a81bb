"""TranscriptionManager on Call Control with a fake telephony, a real media hub and a
real SQLite store; the engine is a scripted stand-in (no model is loaded: the manager's
``engine()`` is its seam), so what is tested is the manager: start/stop, the dial/answer
auto-start, track workers posting ``call.transcription``, and each refusal."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from callstream.calls.control import CallControl
from callstream.calls.exceptions import (
    AlreadyTranscribing,
    CallEnded,
    CallNotAnswered,
    InvalidCommand,
    UnsupportedValue,
)
from callstream.calls.model import Call
from callstream.calls.requests import (
    Answer,
    Hangup,
    TranscriptionSpec,
    TranscriptionStart,
    TranscriptionStop,
)
from callstream.config import Settings
from callstream.store.sql import SqlStore
from callstream.transcription.engine import RecognizerOptions, Segment, UnsupportedOption
from callstream.transcription.manager import FEATURE_KEY, Transcription, TranscriptionManager
from tests.calls.fakes import FakeTelephony, control_with, sqlite_store, stored_events

FRAME = b"\x00\x01" * 160  # 20 ms at 8 kHz


class ScriptedTrack:
    """Says "hello" (final) once it has heard 60 ms of audio."""

    def __init__(self) -> None:
        self.heard = 0

    def feed(self, pcm: bytes, sample_rate: int, *, interims: bool = True) -> list[Segment]:
        before, self.heard = self.heard, self.heard + len(pcm)
        if before < 960 <= self.heard:
            return [Segment("hello", True, 0.9, 0.0, 0.06)]
        return []

    def flush(self) -> list[Segment]:
        return []


class ScriptedEngine:
    name = "scripted"

    def check(self, options: RecognizerOptions) -> None:
        if options.language == "tlh":
            raise UnsupportedOption("Klingon is not supported.", field="language")

    def new_track(self, options: RecognizerOptions, *,
                  final_engine: ScriptedEngine | None = None) -> ScriptedTrack:
        return ScriptedTrack()


class Manager(TranscriptionManager):
    async def engine(self, spec: str) -> ScriptedEngine:  # type: ignore[override]
        return ScriptedEngine()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    async with sqlite_store(tmp_path) as store:
        yield store


@pytest.fixture
def telephony() -> FakeTelephony:
    return FakeTelephony()


@pytest.fixture
def control(store: SqlStore, telephony: FakeTelephony, tmp_path: Path
            ) -> Iterator[CallControl]:
    settings = Settings(data_dir=tmp_path, transcription_threads=1)
    control = control_with(store, telephony, hooks=[lambda calls: Manager(calls, settings)])
    yield control
    manager(control).close()


def manager(control: CallControl) -> TranscriptionManager:
    found = control.hooks[0]
    assert isinstance(found, TranscriptionManager)
    return found


async def parked(control: CallControl) -> Call:
    call = await control.incoming_call(from_="+15550001111", to="+15550002222",
                                       connection_id="default", details={})
    assert call is not None
    return call


async def answered(control: CallControl, telephony: FakeTelephony,
                   req: Answer | None = None) -> Call:
    call = await parked(control)
    await control.answer(call.id, req or Answer())
    telephony.give_media(call)
    await control.leg_answered(call, {"codec": "PCMU", "sampling_rate": 8000})
    return call


async def transcripts(store: SqlStore, call_id: str) -> list[dict[str, object]]:
    for _ in range(400):  # bounded: 20 s
        found = [p["transcription_data"] for e, p in await stored_events(store, call_id)
                 if e == "call.transcription"]
        if found:
            return found  # type: ignore[return-value]
        await asyncio.sleep(0.05)
    raise AssertionError("no call.transcription stored")


def speak(telephony: FakeTelephony, call: Call, frames: int = 4) -> None:
    hub = telephony.legs[call.id].hub
    for n in range(frames):
        hub.push_inbound(call.id, FRAME, now=asyncio.get_running_loop().time() + n * 0.02)


async def test_a_transcription_posts_what_the_track_says_until_stopped(
        control: CallControl, telephony: FakeTelephony, store: SqlStore) -> None:
    call = await answered(control, telephony)
    await manager(control).start(call.id, TranscriptionStart(
        transcription=TranscriptionSpec(transcription_tracks="both")))
    feature = call.features[FEATURE_KEY]
    assert isinstance(feature, Transcription)
    assert [w.track for w in feature.workers] == ["inbound", "outbound"]
    speak(telephony, call)
    assert await transcripts(store, call.id) == [{
        "transcript": "hello", "is_final": True, "confidence": 0.9,
        "transcription_track": "inbound"}]
    with pytest.raises(AlreadyTranscribing):
        await manager(control).start(call.id, TranscriptionStart())
    await manager(control).stop(call.id, TranscriptionStop())
    assert FEATURE_KEY not in call.features
    with pytest.raises(InvalidCommand, match="not active"):
        await manager(control).stop(call.id, TranscriptionStop())


async def test_an_answer_asking_for_transcription_starts_it(
        control: CallControl, telephony: FakeTelephony, store: SqlStore) -> None:
    call = await answered(control, telephony, Answer(transcription=TranscriptionSpec()))
    assert isinstance(call.features.get(FEATURE_KEY), Transcription)
    speak(telephony, call)
    assert (await transcripts(store, call.id))[0]["transcript"] == "hello"
    await control.leg_ended(call, cause="normal_clearing", source="caller", sip_code=None)
    assert call.features == {}


async def test_transcription_refusals(
        control: CallControl, telephony: FakeTelephony) -> None:
    waiting = await parked(control)
    with pytest.raises(CallNotAnswered, match="before it is transcribed"):
        await manager(control).start(waiting.id, TranscriptionStart())
    call = await answered(control, telephony)
    with pytest.raises(UnsupportedValue, match="Klingon") as klingon:
        await manager(control).start(call.id, TranscriptionStart(
            transcription=TranscriptionSpec(language="tlh")))
    assert klingon.value.pointer == "/transcription_engine_config/language"
    await control.hangup(call.id, Hangup())
    with pytest.raises(CallEnded):
        await manager(control).start(call.id, TranscriptionStart())
    assert FEATURE_KEY not in call.features


class MeetingTrack(ScriptedTrack):
    """Says "hello" once every track sharing ``barrier`` is inside a feed at once."""

    def __init__(self, barrier: threading.Barrier) -> None:
        super().__init__()
        self.barrier = barrier

    def feed(self, pcm: bytes, sample_rate: int, *, interims: bool = True) -> list[Segment]:
        segments = super().feed(pcm, sample_rate, interims=interims)
        if segments:
            self.barrier.wait()  # raises BrokenBarrierError after its timeout
        return segments


class MeetingEngine(ScriptedEngine):
    def __init__(self) -> None:
        self.barrier = threading.Barrier(2, timeout=10)

    def new_track(self, options: RecognizerOptions, *,
                  final_engine: ScriptedEngine | None = None) -> MeetingTrack:
        return MeetingTrack(self.barrier)


async def test_tracks_are_fed_at_once_even_with_one_recognition_thread(
        store: SqlStore, telephony: FakeTelephony, tmp_path: Path) -> None:
    """So that their interims can meet in one model call (the engine bounds the
    model's own work to the recognition threads)."""
    settings = Settings(data_dir=tmp_path, transcription_threads=1)
    meeting = MeetingEngine()

    class MeetingManager(TranscriptionManager):
        async def engine(self, spec: str) -> MeetingEngine:  # type: ignore[override]
            return meeting

    control = control_with(store, telephony,
                           hooks=[lambda calls: MeetingManager(calls, settings)])
    try:
        calls = [await answered(control, telephony, Answer(transcription=TranscriptionSpec()))
                 for _ in range(2)]
        for call in calls:
            speak(telephony, call)
        for call in calls:
            assert (await transcripts(store, call.id))[0]["transcript"] == "hello"
    finally:
        manager(control).close()
