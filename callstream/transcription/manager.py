"""Live transcription of calls: transcription_start/stop, dial/answer auto-start, webhooks.

Theory of operation
-------------------
One :class:`TranscriptionManager` per process holds the loaded engines (one per model,
loaded on first use, shared by every call) and a thread pool. The engines decode at
most ``workers`` (one per core) at once; the pool has more threads than that, up to
:data:`FEEDS_PER_WORKER` per worker, so that every busy track's feed can be under way:
tracks that want an interim at the same time then meet in the engine and are decoded
in one model call (:mod:`.batching`) instead of waiting in the pool's queue one by one.
Each transcribed track of a call gets a :class:`TrackWorker`: a bounded hub tap
(:data:`TAP_SECONDS` of audio) read by a coroutine that hands batches of frames to
the pool, one batch at a time, and posts the resulting segments as
``call.transcription`` webhooks.

The media path never waits: the hub only appends to the tap. When recognition falls
behind, it degrades in two steps instead of growing latency or memory:

1. a batch whose oldest audio is older than :data:`INTERIM_MAX_LAG_S` is recognised
   without interim decoding (finals only) — ``..._interims_skipped_total``;
2. if the tap fills anyway, its oldest frames are dropped —
   ``..._dropped_frames_total``.

Track names follow the hub and the spec: ``inbound`` is what the call's remote party
says, ``outbound`` what it hears (on a bridged call, the other party).
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from callstream.calls.exceptions import (
    AlreadyTranscribing,
    InvalidCommand,
    TranscriptionUnavailable,
    UnsupportedValue,
)
from callstream.calls.features import FeatureEvent, LegMedia
from callstream.calls.model import Call
from callstream.calls.requests import TranscriptionSpec, TranscriptionStart, TranscriptionStop
from callstream.media.transport import TapReader
from callstream.transcription import metrics
from callstream.transcription.engine import (
    Engine,
    EngineUnavailable,
    RecognizerOptions,
    Segment,
    TrackRecognizer,
    UnsupportedOption,
)
from callstream.transcription.models import (
    DEFAULT_MODEL,
    MODEL_ALIASES,
    pinned_hash,
    resolve_model,
    verify_sha256,
)

if TYPE_CHECKING:
    from callstream.calls.control import CallControl
    from callstream.config import Settings
    from callstream.store.records import Change, Receipt

log = logging.getLogger(__name__)

FEATURE_KEY = "transcription"
TAP_SECONDS = 10  # audio a track may fall behind by before frames are dropped
INTERIM_MAX_LAG_S = 0.5  # behind by more: skip interims
MIN_BATCH_FRAMES = 3  # 60 ms: fewer thread hand-offs per track
FEEDS_PER_WORKER = 8  # tracks' feeds under way at once, per decoding worker (batch bound)
AUTO_LANGUAGES = ("auto", "auto_detect")


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed transcription_start body (or dial/answer ``transcription_config``)."""

    engine: str
    tracks: tuple[str, ...]
    options: RecognizerOptions
    model: str | None  # a model the config asked for, if it names one we know
    model_pointer: str
    final_model: str | None = None  # a model for finals the config asked for


def parse_request(spec: TranscriptionSpec, *, prefix: str = "") -> Request:
    language = spec.language or "en"
    model = spec.transcription_model or spec.model
    key = "transcription_model" if spec.transcription_model else "model"
    tracks = spec.transcription_tracks
    return Request(
        engine=spec.transcription_engine,
        tracks=("inbound", "outbound") if tracks == "both" else (tracks,),
        options=RecognizerOptions(
            language=None if language.lower() in AUTO_LANGUAGES else language,
            interim_results=spec.interim_results,
            hints=spec.hints + spec.keyterms,
        ),
        model=model,
        model_pointer=f"{prefix}/transcription_engine_config/{key}",
        final_model=spec.final_model,
    )


class TranscriptionManager:
    """Runs transcriptions for :class:`CallControl`; a ``CallHooks`` for dial/answer.

    Raises:
        EngineUnavailable: at construction, when the default model can't be found
            (so a misconfigured server fails at startup, not at the first call).
    """

    def __init__(self, calls: CallControl, settings: Settings) -> None:
        self.calls = calls
        self.settings = settings
        self.workers = settings.transcription_threads or os.cpu_count() or 1
        # A thread per track being fed (the pool starts them as feeds come), bounded;
        # the engines keep the model's own work to `workers` at once.
        self.pool = ThreadPoolExecutor(self.workers * FEEDS_PER_WORKER,
                                       thread_name_prefix="transcribe")
        self._engines: dict[Path, Engine] = {}
        self._loading: dict[Path, asyncio.Lock] = {}
        if importlib.util.find_spec("faster_whisper") is None:
            raise EngineUnavailable("faster-whisper is not installed: pip install "
                                    "faster-whisper==1.2.1")
        for spec in {settings.transcription_model, *settings.transcription_engines.values(),
                     *([settings.transcription_final_model]
                       if settings.transcription_final_model else [])}:
            self._resolve(spec)

    # -- engines -------------------------------------------------------------------

    def _resolve(self, spec: str) -> Path:
        return resolve_model(spec, data_dir=self.settings.data_dir,
                             allow_download=self.settings.transcription_allow_download)

    def model_for(self, request: Request) -> str:
        """Which model spec a request gets: a Whisper model it names, else its engine's."""
        if request.model:
            aliases = {**MODEL_ALIASES, **self.settings.transcription_models}
            if request.model in aliases:
                return aliases[request.model]
        return self.settings.transcription_engines.get(
            request.engine, self.settings.transcription_model)

    async def engine(self, spec: str) -> Engine:
        """The loaded engine for a model spec; loads it (in the pool) on first use."""
        loop = asyncio.get_running_loop()
        path = await loop.run_in_executor(self.pool, self._resolve, spec)
        engine = self._engines.get(path)
        if engine is not None:
            return engine
        lock = self._loading.setdefault(path, asyncio.Lock())
        async with lock:
            engine = self._engines.get(path)
            if engine is None:
                engine = await loop.run_in_executor(self.pool, self._load, path, spec)
                self._engines[path] = engine
        return engine

    def _load(self, path: Path, spec: str) -> Engine:
        from callstream.transcription.vad import VadOptions
        from callstream.transcription.whisper import WhisperEngine

        expected = pinned_hash(path)
        if expected is not None:
            verify_sha256(path / "model.bin", expected)
        name = MODEL_ALIASES.get(spec, Path(spec).name or DEFAULT_MODEL)
        started = time.perf_counter()
        engine = WhisperEngine(path, name=name, device=self.settings.transcription_device,
                               workers=self.workers, vad=VadOptions(
                                   min_silence_ms=self.settings.transcription_end_silence_ms,
                                   sentence_end_silence_ms=(
                                       self.settings.transcription_sentence_end_silence_ms)))
        log.info("loaded Whisper %s from %s on %s in %.2f s", name, path, engine.device,
                 time.perf_counter() - started)
        return engine

    # -- commands ------------------------------------------------------------------

    async def start(self, call_control_id: str, req: TranscriptionStart) -> Receipt:
        request = parse_request(req.transcription)
        engines = await self._engine_or_error(request)

        async def action(call: Call, change: Change) -> None:
            self._start(call, request, *engines)

        return await self.calls.run_command(call_control_id, req, action)

    async def stop(self, call_control_id: str, req: TranscriptionStop) -> Receipt:
        async def action(call: Call, change: Change) -> None:
            feature = call.features.pop(FEATURE_KEY, None)
            if not isinstance(feature, Transcription):
                raise InvalidCommand("Transcription is not active.")
            feature.stop("transcription_stop")

        return await self.calls.run_command(call_control_id, req, action)

    def final_model_for(self, request: Request, prefix: str = "") -> str | None:
        """The model spec for finals (two-pass): the one the request names in
        ``final_model``, else ``transcription_final_model``; None: one model does all."""
        if request.final_model is None:
            return self.settings.transcription_final_model
        aliases = {**MODEL_ALIASES, **self.settings.transcription_models}
        if request.final_model not in aliases:
            raise UnsupportedValue(
                f"final_model {request.final_model!r} is none of the models here: "
                f"{', '.join(sorted(aliases))}.",
                pointer=f"{prefix}/transcription_engine_config/final_model")
        return aliases[request.final_model]

    async def _engine_or_error(self, request: Request,
                               prefix: str = "") -> tuple[Engine, Engine | None]:
        """The request's engine and, for two-pass finals, its final engine."""
        spec = self.model_for(request)
        final_spec = self.final_model_for(request, prefix)
        final: Engine | None = None
        pointer = request.model_pointer if request.model else f"{prefix}/transcription_engine"
        try:
            engine = await self.engine(spec)
            engine.check(request.options)
            if final_spec is not None:
                if request.final_model:
                    pointer = f"{prefix}/transcription_engine_config/final_model"
                final = await self.engine(final_spec)
                final.check(request.options)
        except EngineUnavailable as exc:
            raise TranscriptionUnavailable(str(exc), pointer=pointer) from exc
        except UnsupportedOption as exc:
            raise UnsupportedValue(
                str(exc),
                pointer=f"{prefix}/transcription_engine_config/{exc.field}",
            ) from exc
        return engine, (None if final is engine else final)

    def _start(self, call: Call, request: Request, engine: Engine,
               final_engine: Engine | None) -> None:
        media = self.calls.media(call, purpose="transcribed")
        if FEATURE_KEY in call.features:
            raise AlreadyTranscribing("Stop the running transcription first.")
        call.features[FEATURE_KEY] = Transcription(self, call, media, engine, request,
                                                   final_engine=final_engine)

    # -- CallHooks -----------------------------------------------------------------

    async def before_dial(self, call: Call) -> None:
        return None

    async def answered(self, call: Call) -> None:
        setup = call.setup
        if setup is None or setup.transcription is None:
            return
        request = parse_request(setup.transcription, prefix="/transcription_config")
        engines = await self._engine_or_error(request, "/transcription_config")

        async def action(live: Call, change: Change) -> None:
            if FEATURE_KEY not in live.features:
                self._start(live, request, *engines)

        await self.calls.run_command(call.id, TranscriptionStart(), action)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class Transcription:
    """A running transcription of one call (a :class:`~callstream.calls.features.Feature`)."""

    def __init__(self, manager: TranscriptionManager, call: Call, media: LegMedia,
                 engine: Engine, request: Request, *,
                 final_engine: Engine | None = None) -> None:
        self.request = request
        self.call_control_id = call.id
        self.workers = [
            TrackWorker(manager, call, media,
                        engine.new_track(request.options, final_engine=final_engine), track)
            for track in request.tracks
        ]
        model = engine.name + (f", finals {final_engine.name}" if final_engine else "")
        log.info("call %s: transcription started (%s engine, model %s, %s)", call.id,
                 request.engine, model, " and ".join(request.tracks) + " track"
                 + ("s" if len(request.tracks) > 1 else ""),
                 extra={"call_control_id": call.id})

    def stop(self, reason: str) -> None:
        """Stop listening; utterances in progress still get their finals."""
        for worker in self.workers:
            worker.stop()
        log.info("call %s: transcription stopped (%s)", self.call_control_id, reason,
                 extra={"call_control_id": self.call_control_id})

    def detach(self, reason: str) -> list[FeatureEvent]:
        # The spec defines no stop webhook; finals of cut-off speech follow on their own.
        self.stop(reason)
        return []


class TrackWorker:
    """Feeds one track's frames to its recogniser off the event loop, posts segments."""

    def __init__(self, manager: TranscriptionManager, call: Call, media: LegMedia,
                 recognizer: TrackRecognizer, track: str) -> None:
        self.manager = manager
        self.call = call
        self.track = track
        self.recognizer = recognizer
        self.tap = media.hub.open_tap(
            media.leg, track, max_frames=TAP_SECONDS * 50)
        self._reader = TapReader(self.tap)
        self._dropped = 0
        metrics.TRACKS.inc()
        self.task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        self.tap.close()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        pool = self.manager.pool
        recognizer = self.recognizer
        try:
            while True:
                frame = await self._reader.get()
                if frame is None:
                    break
                frames = [frame, *self.tap.drain()]
                while len(frames) < MIN_BATCH_FRAMES and not self.tap.closed:
                    more = await self._reader.get()
                    if more is None:
                        break
                    frames.append(more)
                    frames.extend(self.tap.drain())
                self._count_drops()
                lag = loop.time() - frames[0].time
                metrics.LAG_SECONDS.observe(lag)
                interims = lag < INTERIM_MAX_LAG_S
                if not interims:
                    metrics.INTERIMS_SKIPPED.inc()
                pcm = b"".join(f.pcm for f in frames)
                started = time.perf_counter()
                segments = await loop.run_in_executor(
                    pool, functools.partial(recognizer.feed, pcm, frames[0].sample_rate,
                                            interims=interims))
                spent = time.perf_counter() - started
                metrics.DECODE_SECONDS.observe(spent)
                metrics.BUSY_SECONDS.inc(spent)
                await self._post(segments)
            await self._post(await loop.run_in_executor(pool, recognizer.flush))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("call %s: transcription of the %s track failed", self.call.id,
                          self.track)
        finally:
            self._count_drops()
            metrics.TRACKS.dec()

    def _count_drops(self) -> None:
        if self.tap.dropped > self._dropped:
            metrics.DROPPED_FRAMES.inc(self.tap.dropped - self._dropped)
            self._dropped = self.tap.dropped

    async def _post(self, segments: list[Segment]) -> None:
        for segment in segments:
            metrics.SEGMENTS.labels("final" if segment.is_final else "interim").inc()
            await self.manager.calls.leg_event(self.call, "call.transcription", {
                "transcription_data": {
                    "transcript": segment.text,
                    "is_final": segment.is_final,
                    "confidence": segment.confidence,
                    "transcription_track": self.track,
                },
            })
