"""Two-pass finals: which model decodes a final, and the fall-back when behind."""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest
from prometheus_client import REGISTRY

from callstream.calls.exceptions import UnsupportedValue
from callstream.calls.requests import TranscriptionSpec
from callstream.config import Settings
from callstream.transcription.engine import RecognizerOptions, Segment
from callstream.transcription.manager import TranscriptionManager, parse_request
from callstream.transcription.models import resolve_model
from callstream.transcription.whisper import Decoded, WhisperEngine
from tests.audio import resample
from tests.corpus import clip, phone_band, wer
from tests.transcription.test_whisper import FRAME, engine, over_pcmu

FALLBACKS = "callstream_transcription_finals_on_fast_model_total"
REDECODES = "callstream_transcription_redecodes_total"


@cache
def second_engine() -> WhisperEngine:
    """Another tiny.en: a final engine that is not the interim one (base may be absent)."""
    return WhisperEngine(resolve_model("tiny.en", data_dir=Path("/nonexistent")),
                         name="tiny.en (finals)")


def fallbacks() -> float:
    return REGISTRY.get_sample_value(FALLBACKS) or 0.0


def transcribe(*, behind: bool) -> list[Segment]:
    item = clip("goforward")
    pcm = over_pcmu(phone_band(item)) + b"\0" * 16000
    track = engine().new_track(RecognizerOptions(), final_engine=second_engine())
    out = [s for i in range(0, len(pcm), FRAME)
           for s in track.feed(pcm[i:i + FRAME], 8000, interims=not behind)]
    assert wer(item.reference, " ".join(s.text for s in out if s.is_final)) <= 0.25
    return out


def test_finals_use_the_final_model_and_fall_back_when_behind() -> None:
    before = fallbacks()
    transcribe(behind=False)
    assert fallbacks() == before
    transcribe(behind=True)
    assert fallbacks() == before + 1  # one utterance, one final on the fast model


def manager(**settings: Any) -> TranscriptionManager:
    fake = SimpleNamespace(settings=Settings(**settings))
    return cast(TranscriptionManager, fake)


@pytest.mark.parametrize(("settings", "config", "expected"), [
    ({}, {}, None),
    ({"transcription_final_model": "base"}, {}, "base"),
    ({}, {"final_model": "openai/whisper-base"}, "base"),
    ({"transcription_models": {"mine": "/models/small"}}, {"final_model": "mine"},
     "/models/small"),
])
def test_the_final_model_comes_from_the_call_or_the_server(
        settings: dict[str, Any], config: dict[str, Any], expected: str | None) -> None:
    request = parse_request(TranscriptionSpec(**config))
    assert TranscriptionManager.final_model_for(manager(**settings), request) == expected


def test_an_unknown_final_model_is_refused_with_its_pointer() -> None:
    request = parse_request(TranscriptionSpec(final_model="/etc/passwd"))
    with pytest.raises(UnsupportedValue) as info:
        TranscriptionManager.final_model_for(manager(), request, "/transcription_config")
    assert info.value.pointer == "/transcription_config/transcription_engine_config/final_model"


def test_the_server_settings_shape_the_engines_segmentation() -> None:
    settings = Settings(transcription_end_silence_ms=900,
                        transcription_sentence_end_silence_ms=400)
    fake = cast(TranscriptionManager, SimpleNamespace(settings=settings, workers=1))
    path = resolve_model("tiny.en", data_dir=Path("/nonexistent"))
    loaded = TranscriptionManager._load(fake, path, "tiny.en")
    assert isinstance(loaded, WhisperEngine)
    assert loaded.vad_options.min_silence_ms == 900
    assert loaded.vad_options.sentence_end_silence_ms == 400


def test_a_two_pass_final_reads_on_from_the_previous_final(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Two utterances on one track: the final engine's decodes of the second carry the
    # first final's text in their prompt (Whisper's previous-text prompt).
    finals_engine = second_engine()
    prompts: list[list[int]] = []
    model = finals_engine.model.model

    class Recording:
        def __getattr__(self, name: str) -> Any:
            return getattr(model, name)

        def generate(self, encoded: Any, batch: list[list[int]], **kwargs: Any) -> Any:
            prompts.append(batch[0])
            return model.generate(encoded, batch, **kwargs)

    monkeypatch.setattr(finals_engine.model, "model", Recording())
    speech = over_pcmu(phone_band(clip("goforward")))
    other = over_pcmu(phone_band(clip("input_2_16k")))
    pcm = speech + b"\0" * 48000 + other + b"\0" * 16000  # 3 s apart: too far to re-read
    track = engine().new_track(RecognizerOptions(), final_engine=finals_engine)
    finals = [s for i in range(0, len(pcm), FRAME) for s in track.feed(pcm[i:i + FRAME], 8000)]
    finals += track.flush()
    assert len(finals) == 2 and all(s.is_final for s in finals), finals
    tokenizer = finals_engine.tokenizer(None)
    first = tokenizer.encode(" " + finals[0].text)
    assert prompts[0] == list(tokenizer.sot_sequence)  # nothing said before it
    # (tiny.en, so prompted, may hear nothing: then it decodes again without the prompt)
    assert [tokenizer.sot_prev, *first, *tokenizer.sot_sequence] in prompts[1:]


def test_a_final_that_the_previous_text_silences_is_decoded_without_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Base, prompted with a 30-word final, decoded the 2 s rest of a cut sentence as
    # nothing at all (the sentence was lost); without the prompt it heard it.
    # Here the model answers nothing whenever it is prompted.
    finals_engine = second_engine()
    decode = finals_engine.decode
    contexts: list[str] = []

    def silenced(audio: Any, **kwargs: Any) -> Decoded:
        contexts.append(kwargs["context"])
        decoded = decode(audio, **kwargs)
        return replace(decoded, text="") if kwargs["context"] else decoded

    monkeypatch.setattr(finals_engine, "decode", silenced)
    item = clip("goforward")
    samples = np.frombuffer(resample(over_pcmu(phone_band(item)), 8000, 16000), "<i2")
    audio = samples.astype(np.float32) / 32768.0
    before = REGISTRY.get_sample_value(REDECODES, {"reason": "context"}) or 0.0
    final = finals_engine.decode_final(audio, speech_end=len(audio) / 16000, language=None,
                                       context="The previous final said a lot of words.")
    assert final is not None and wer(item.reference, final.text) <= 0.25, final
    assert contexts[0] and not any(contexts[1:])  # one decode prompted, not two windows
    assert REGISTRY.get_sample_value(REDECODES, {"reason": "context"}) == before + 1
