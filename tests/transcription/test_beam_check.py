"""A final's beam search is checked against a greedy reading of its audio: the track's
latest interim when there is one (free), else a greedy decode of the same encoding."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

from callstream.transcription.engine import RecognizerOptions
from callstream.transcription.whisper import (
    FINAL_BEAM_SIZE,
    FINAL_WINDOW_S,
    WhisperEngine,
)
from tests.corpus import clip, phone_band
from tests.transcription.test_whisper import FRAME, engine, over_pcmu

FINAL_FRAMES = int(FINAL_WINDOW_S * 50)  # encoder frames of a final's 10 s window


class CountingModel:
    """The CTranslate2 model, counting its decodes by (beam size, encoder frames)."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.calls: Counter[tuple[int, int]] = Counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def generate(self, encoded: Any, prompts: Any, **kwargs: Any) -> Any:
        self.calls[(kwargs["beam_size"], encoded.shape[1])] += 1
        return self._model.generate(encoded, prompts, **kwargs)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> tuple[WhisperEngine, CountingModel]:
    eng = engine()
    counting = CountingModel(eng.model.model)
    monkeypatch.setattr(eng.model, "model", counting)
    return eng, counting


def audio(name: str) -> np.ndarray[Any, np.dtype[np.float32]]:
    pcm = over_pcmu(phone_band(clip(name)))
    samples = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0
    return np.repeat(samples, 2)  # 8 -> 16 kHz is enough for this


def skipped() -> float:
    return REGISTRY.get_sample_value("callstream_transcription_redecodes_total",
                                     {"reason": "beam_skipped"}) or 0.0


def test_without_an_interim_the_beam_is_checked_by_a_greedy_decode(
        counted: tuple[WhisperEngine, CountingModel]) -> None:
    eng, model = counted
    decoded = eng.decode(audio("goforward"), window_s=FINAL_WINDOW_S, language="en",
                         beam_size=FINAL_BEAM_SIZE)
    assert decoded.text
    assert model.calls == {(FINAL_BEAM_SIZE, FINAL_FRAMES): 1, (1, FINAL_FRAMES): 1}


def test_an_interim_with_no_more_words_spares_the_greedy_decode(
        counted: tuple[WhisperEngine, CountingModel]) -> None:
    eng, model = counted
    speech = audio("goforward")
    checked = eng.decode(speech, window_s=FINAL_WINDOW_S, language="en",
                         beam_size=FINAL_BEAM_SIZE)
    model.calls.clear()
    words = len(checked.text.split())
    spared = eng.decode(speech, window_s=FINAL_WINDOW_S, language="en",
                        beam_size=FINAL_BEAM_SIZE, greedy_words=words)
    assert spared.text == checked.text
    assert model.calls == {(FINAL_BEAM_SIZE, FINAL_FRAMES): 1}


def test_an_interim_with_more_words_than_the_beam_still_gets_it_checked(
        counted: tuple[WhisperEngine, CountingModel]) -> None:
    # The interim heard far more than the beam: the greedy reading of this audio
    # decides, as without an interim (here it agrees with the beam).
    eng, model = counted
    before = skipped()
    decoded = eng.decode(audio("goforward"), window_s=FINAL_WINDOW_S, language="en",
                         beam_size=FINAL_BEAM_SIZE, greedy_words=1000)
    assert decoded.text
    assert model.calls == {(FINAL_BEAM_SIZE, FINAL_FRAMES): 1, (1, FINAL_FRAMES): 1}
    assert skipped() == before


def test_a_track_with_interims_checks_its_finals_against_them(
        counted: tuple[WhisperEngine, CountingModel]) -> None:
    eng, model = counted
    pcm = b"\0" * 8000 + over_pcmu(phone_band(clip("goforward"))) + b"\0" * 24000
    texts = {}
    for interims in (False, True):
        model.calls.clear()
        track = eng.new_track(RecognizerOptions(interim_results=interims))
        segments = [s for i in range(0, len(pcm), FRAME) for s in track.feed(pcm[i:i + FRAME],
                                                                             8000)]
        texts[interims] = [s.text for s in segments + track.flush() if s.is_final]
        greedy_checks = model.calls[(1, FINAL_FRAMES)]
        assert model.calls[(FINAL_BEAM_SIZE, FINAL_FRAMES)] >= 1
        assert greedy_checks == (0 if interims else model.calls[(FINAL_BEAM_SIZE,
                                                                FINAL_FRAMES)]), model.calls
    assert texts[True] == texts[False] and texts[True]


def test_an_interim_from_long_before_the_end_does_not_vouch_for_the_beam(
        counted: tuple[WhisperEngine, CountingModel]) -> None:
    # The track falls behind after its first interims (no more interims): the last
    # one read a fraction of the utterance, so the final's beam gets its greedy check.
    eng, model = counted
    item = clip("sense_and_sensibility_01_austen_64kb-0870")  # 22 words, ~7 s
    pcm = b"\0" * 8000 + over_pcmu(phone_band(item)) + b"\0" * 24000
    track = eng.new_track(RecognizerOptions(interim_results=True))
    onset = 8000 + 2 * 12000  # 1.5 s of the clip in, with interims
    segments = [s for i in range(0, onset, FRAME) for s in track.feed(pcm[i:i + FRAME], 8000)]
    assert any(not s.is_final for s in segments)
    model.calls.clear()
    segments = [s for i in range(onset, len(pcm), FRAME)
                for s in track.feed(pcm[i:i + FRAME], 8000, interims=False)]
    assert [s for s in segments + track.flush() if s.is_final]
    assert model.calls[(1, FINAL_FRAMES)] == model.calls[(FINAL_BEAM_SIZE, FINAL_FRAMES)] >= 1
