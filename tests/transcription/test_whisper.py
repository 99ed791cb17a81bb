"""The streaming Whisper recogniser on real phone-band speech, fed 20 ms at a time."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from callstream.media.codecs import get_codec
from callstream.transcription.engine import RecognizerOptions, Segment, UnsupportedOption
from callstream.transcription.models import resolve_model
from callstream.transcription.vad import VadOptions
from callstream.transcription.whisper import WhisperEngine, ends_sentence
from tests.corpus import clip, noise, phone_band, wer

FRAME = 320  # 20 ms of 8 kHz s16
SENTENCE_ENDS = "callstream_transcription_sentence_ends_total"


@cache
def engine() -> WhisperEngine:
    return WhisperEngine(resolve_model("tiny.en", data_dir=Path("/nonexistent")),
                         name="tiny.en")


def over_pcmu(pcm: bytes) -> bytes:
    codec = get_codec("PCMU")
    enc, dec = codec.new_encoder(), codec.new_decoder()
    return b"".join(dec.decode(enc.encode(pcm[i:i + FRAME]))
                    for i in range(0, len(pcm) - FRAME + 1, FRAME))


def run(pcm: bytes, options: RecognizerOptions) -> list[Segment]:
    track = engine().new_track(options)
    out = [s for i in range(0, len(pcm), FRAME) for s in track.feed(pcm[i:i + FRAME], 8000)]
    return out + track.flush()


def speech_span(pcm: bytes) -> tuple[float, float]:
    """First and last 20 ms frame within 20 dB of the loudest (seconds), as the bench."""
    samples = np.frombuffer(pcm, "<i2").astype(np.float64)
    n = len(samples) // 160
    rms = np.sqrt(np.mean(samples[: n * 160].reshape(n, 160) ** 2, axis=1))
    loud = np.nonzero(rms > rms.max() * 0.1)[0]
    return float(loud[0] * 160 / 8000), float((loud[-1] + 1) * 160 / 8000)


def timed(pcm: bytes, on: WhisperEngine | None = None) -> list[tuple[float, Segment]]:
    """Each segment with the seconds of audio fed when it came (audio time: no clock)."""
    track = (on or engine()).new_track(RecognizerOptions(interim_results=True))
    return [((i + FRAME) / 16000, s) for i in range(0, len(pcm), FRAME)
            for s in track.feed(pcm[i:i + FRAME], 8000)]


def test_finals_transcribe_speech_and_interims_come_first() -> None:
    item = clip("sense_and_sensibility_01_austen_64kb-0870")
    pcm = b"\0" * 8000 + over_pcmu(phone_band(item)) + b"\0" * 16000
    arrivals = timed(pcm)
    segments = [s for _, s in arrivals]
    finals = [s for s in segments if s.is_final]
    assert finals and wer(item.reference, " ".join(s.text for s in finals)) <= 0.15
    # Silero drops 0.3 s after this clip's energy end; the 700 ms of silence are
    # counted from the energy end, and the final is decoded before they run out
    # (0.96 s when they were counted from Silero's drop).
    _, end = speech_span(pcm)
    final_at = next(at for at, s in arrivals if s.is_final)
    assert final_at - end < 0.85, (end, final_at)
    assert not segments[0].is_final
    first = segments[0]
    # The first interim covers well under a second of speech (onset ~0.5 s in).
    assert first.end - 0.5 < 1.2, first
    for s in segments:
        assert 0.0 <= s.start <= s.end <= len(pcm) / 16000 + 0.1


def test_no_interims_unless_asked() -> None:
    item = clip("goforward")
    segments = run(over_pcmu(phone_band(item)) + b"\0" * 16000, RecognizerOptions())
    assert segments and all(s.is_final for s in segments)
    assert wer(item.reference, " ".join(s.text for s in segments)) <= 0.25


def test_silence_and_noise_give_nothing() -> None:
    pcm = b"\0" * 16000 + over_pcmu(noise(4.0, level_db=-35.0)) + b"\0" * 16000
    assert run(pcm, RecognizerOptions(interim_results=True)) == []


def test_an_english_model_refuses_other_languages() -> None:
    with pytest.raises(UnsupportedOption) as info:
        engine().new_track(RecognizerOptions(language="fr"))
    assert info.value.field == "language"
    engine().check(RecognizerOptions(language="en-US"))
    engine().check(RecognizerOptions(language=None))


def test_the_track_rate_is_fixed() -> None:
    track = engine().new_track(RecognizerOptions())
    track.feed(b"\0" * FRAME, 8000)
    with pytest.raises(ValueError, match="rate changed"):
        track.feed(b"\0" * 640, 16000)


def test_segments_check_themselves() -> None:
    with pytest.raises(ValueError):
        Segment("x", True, 1.5, 0.0, 1.0)
    with pytest.raises(ValueError):
        Segment("x", True, 0.5, 2.0, 1.0)


def test_the_first_interim_of_a_short_command_comes_on_its_first_word() -> None:
    # tiny.en loops on its first word ("4 4 4 4 …") until "four queen of clubs" is
    # nearly over; the interim shows that word rather than nothing (it came 0.9 s in).
    pcm = b"\0" * 16000 + over_pcmu(phone_band(clip("002"))) + b"\0" * 16000
    onset, _ = speech_span(pcm)
    interims = [(at, s) for at, s in timed(pcm) if not s.is_final]
    assert interims and interims[0][0] - onset < 0.6, (onset, interims[:2])



@pytest.mark.parametrize(("text", "expected"), [
    ("I need to change my flight.", True),
    ("Can you tell me when it will arrive?", True),
    ("Stop!", True),
    ("It was the age of wisdom,", False),  # a pause at a comma: the sentence goes on
    ("and then I was", False),
    ("so I was...", False),  # trailing off
    ("Well..", False),
    ("", False),
])
def test_what_ends_a_sentence(text: str, expected: bool) -> None:
    assert ends_sentence(text) is expected


@cache
def patient_engine() -> WhisperEngine:
    """The engine with sentence ends ignored: every utterance waits out the silence."""
    return WhisperEngine(resolve_model("tiny.en", data_dir=Path("/nonexistent")),
                         name="tiny.en", vad=VadOptions(sentence_end_silence_ms=10_000))


def test_a_final_that_ends_a_sentence_does_not_wait_out_the_silence() -> None:
    item = clip("sense_and_sensibility_01_austen_64kb-0870")
    pcm = b"\0" * 8000 + over_pcmu(phone_band(item)) + b"\0" * 24000
    _, end = speech_span(pcm)
    silence_s = VadOptions().min_silence_ms / 1000
    sentence_s = VadOptions().sentence_end_silence_ms / 1000
    before = REGISTRY.get_sample_value(SENTENCE_ENDS) or 0.0
    finals = [(at, s) for at, s in timed(pcm) if s.is_final]
    assert len(finals) == 1 and ends_sentence(finals[0][1].text), finals
    assert REGISTRY.get_sample_value(SENTENCE_ENDS) == before + 1
    # By audio time: the sentence-end silence, not the full one.
    assert sentence_s <= finals[0][0] - end < silence_s, (end, finals)
    patient = [(at, s) for at, s in timed(pcm, patient_engine()) if s.is_final]
    assert REGISTRY.get_sample_value(SENTENCE_ENDS) == before + 1
    assert [s.text for _, s in patient] == [finals[0][1].text]
    assert patient[0][0] - end >= silence_s, (end, patient)
