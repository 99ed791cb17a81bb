"""No speech the VAD heard is left undecoded: long utterances, window-length audio.

Synthetic speech (espeak-ng) at a steady rate has no pause long enough to end an
utterance, so a four-sentence request runs past ``max_utterance_s`` and is cut, and
its pieces fill Whisper's 10 s encoder window: the case where Whisper ends with a lone
timestamp ("this goes on past the window") and a sentence used to vanish.
"""

from __future__ import annotations

import numpy as np
import pytest

from callstream.transcription.engine import RecognizerOptions
from callstream.transcription.vad import SAMPLE_RATE
from callstream.transcription.whisper import FINAL_WINDOW_S
from tests.audio import resample
from tests.corpus import align, normalize, sentences_lost
from tests.synth import espeak
from tests.transcription.test_whisper import engine, over_pcmu, run

ORDER = [
    "Hi, I am calling about the status of my order.",
    "The order number is four five two seven, and it was placed on June third.",
    "The tracking page has not changed for a whole week.",
    "Can you tell me when it will arrive?",
]


# Voices and rates where the old decoding lost a sentence or looped at the cut.
@pytest.mark.parametrize(("voice", "wpm"), [("en-us", 160), ("en-gb", 140), ("en+m3", 150),
                                            ("en-us+m7", 150)])
def test_an_utterance_longer_than_the_window_keeps_every_sentence(voice: str,
                                                                   wpm: int) -> None:
    speech = over_pcmu(espeak(" ".join(ORDER), voice=voice, wpm=wpm))
    assert len(speech) / 2 / 8000 > FINAL_WINDOW_S + 3  # one utterance, cut at least once
    segments = run(b"\0" * 8000 + speech + b"\0" * 16000, RecognizerOptions())
    finals = [s.text for s in segments if s.is_final]
    assert len(finals) >= 2, finals
    assert sentences_lost(ORDER, " ".join(finals)) == [], finals
    # Nothing said twice around the cut, no loop at the window's edge.
    assert align(normalize(" ".join(ORDER)), normalize(" ".join(finals))).insertions <= 3, finals


@pytest.mark.parametrize("voice", ["en-us", "en-gb", "en-us+m7"])
def test_a_decode_of_audio_exactly_the_window_long_covers_all_of_it(voice: str) -> None:
    sentences = ["My account number is five five two one.", "I moved to Portland last month.",
                 "The bill still goes to my old address.", "Please change it today.",
                 "Thank you very much for your help with this."]
    pcm = over_pcmu(espeak(" ".join(sentences), voice=voice, wpm=160))
    audio = np.frombuffer(resample(pcm, 8000, SAMPLE_RATE), "<i2").astype(np.float32) / 32768
    window = round(FINAL_WINDOW_S * SAMPLE_RATE)
    assert len(audio) > window
    audio = audio[:window]  # speech to the very edge: the last words are cut mid-way
    # The text within the window: everything espeak says in the first 10 s.
    inside = [s for s in sentences if len(espeak(
        " ".join(sentences[: sentences.index(s) + 1]), voice=voice, wpm=160)) / 2 / 8000 < 9.5]
    assert len(inside) >= 3
    decoded = engine().decode_final(audio, speech_end=FINAL_WINDOW_S, language="en")
    assert decoded is not None
    assert sentences_lost(inside, decoded.text) == [], decoded.text
    # Nor does the edge make it loop ("Thank you, Mary, Mary, Mary…"): against all the
    # sentences (the last ones only partly said), few words are extra.
    extra = align(normalize(" ".join(sentences)), normalize(decoded.text)).insertions
    assert extra <= 2, decoded.text
