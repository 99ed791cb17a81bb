"""Interims of several tracks decoded in one model call read as they do one by one."""

from __future__ import annotations

import numpy as np
import soxr

from callstream.transcription.engine import RecognizerOptions
from callstream.transcription.whisper import SAMPLE_RATE, _Interim
from tests.corpus import corpus, normalize, phone_band
from tests.transcription.test_whisper import FRAME, engine, over_pcmu


def starts(count: int) -> list[np.ndarray]:
    """The first 1.0, 1.6, 2.2... s of the first corpus clips, over PCMU, at 16 kHz:
    interims of different lengths (the longest pads the others' silence by 1.8 s)."""
    out = []
    for i, item in enumerate(list(corpus())[:count]):
        pcm = np.frombuffer(over_pcmu(phone_band(item)), "<i2").astype(np.float32) / 32768
        audio = soxr.resample(pcm, 8000, SAMPLE_RATE).astype(np.float32)
        out.append(audio[: int((1.0 + 0.6 * i) * SAMPLE_RATE)])
    return out


def read(text: str) -> str:
    """What a text says, letters and digits only."""
    return "".join(normalize(text))


def test_batched_interims_read_as_lone_ones() -> None:
    eng = engine()
    interims = [_Interim(audio, "en", ()) for audio in starts(4)]
    alone = [eng._decode_interims([interim])[0] for interim in interims]
    together = eng._decode_interims(interims)
    # The same letters: on some CPUs (an AMD EPYC here) a batch's padding changes the
    # model's arithmetic just enough to flip a hyphen or a trailing "...".
    assert [read(d.text) for d in together] == [read(d.text) for d in alone]
    assert all(d.text for d in alone)
    assert [(d.looped, d.no_speech) for d in together] == [(d.looped, d.no_speech)
                                                            for d in alone]


def test_a_track_s_interims_go_through_the_batcher() -> None:
    eng = engine()
    before = eng._interims.items
    track = eng.new_track(RecognizerOptions(interim_results=True))
    pcm = over_pcmu(phone_band(corpus()[0]))[: 8000 * 2 * 2]  # 2 s of speech
    interims = [s for i in range(0, len(pcm), FRAME * 3)
                for s in track.feed(pcm[i:i + FRAME * 3], 8000) if not s.is_final]
    assert interims
    assert eng._interims.items > before
