"""Re-reading: a two-pass final decoded over the previous utterance's audio too."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY

from callstream.transcription import whisper
from callstream.transcription.engine import RecognizerOptions, Segment
from callstream.transcription.reread import new_part
from callstream.transcription.whisper import REREAD_MAX_S
from tests.corpus import clip, normalize, phone_band, wer
from tests.transcription.test_two_pass import second_engine
from tests.transcription.test_whisper import FRAME, engine, over_pcmu

REREADS = "callstream_transcription_rereads_total"
REDECODES = "callstream_transcription_redecodes_total"


@pytest.mark.parametrize(("previous", "text", "expected"), [
    # A sentence split by a pause, heard whole again.
    ("It was the epoch of belief.",
     "It was the epoch of belief. It was the epoch of incredulity.",
     "It was the epoch of incredulity."),
    # The previous final's last word heard differently is that word, not a new one.
    ("It was the epoch of infidelity.",
     "The epoch of incredulity. It was the season of light.",
     "It was the season of light."),
    # Half the previous words heard differently: still where they end.
    ("There are some of its noisiest authorities, insistent on it being received.",
     "The sum of its noisiest authority is insistent on its being received for good or "
     "for evil", "for good or for evil"),
    # Repeated words in the new part are kept (the split is by position, not content).
    ("Call me at", "Call me at five five five, five five five.", "five five five, five five five."),
])
def test_the_new_part_follows_the_previous_final(previous: str, text: str,
                                                 expected: str) -> None:
    assert new_part(previous, text) == expected


@pytest.mark.parametrize(("previous", "text"), [
    ("Ever tried. Ever failed.", "Completely different words came out of this decode."),
    ("It was the age of wisdom.", "It was the age of wisdom."),  # nothing new
    ("It was the age of wisdom.", ""),
    ("", "It was the age of wisdom."),
])
def test_a_reread_that_cannot_be_split_is_refused(previous: str, text: str) -> None:
    assert new_part(previous, text) is None


def rereads() -> float:
    return REGISTRY.get_sample_value(REREADS) or 0.0


def two_utterances(gap_s: float, monkeypatch: pytest.MonkeyPatch
                   ) -> tuple[list[Segment], list[float]]:
    """Two clips ``gap_s`` apart on one two-pass track: its finals, and the seconds of
    audio each of the final engine's decodes of a final was given."""
    finals_engine = second_engine()
    heard: list[float] = []
    decode_final = finals_engine.decode_final

    def recording(audio: Any, **kwargs: Any) -> Any:
        heard.append(len(audio) / 16000)
        return decode_final(audio, **kwargs)

    monkeypatch.setattr(finals_engine, "decode_final", recording)
    first = over_pcmu(phone_band(clip("goforward")))
    second = over_pcmu(phone_band(clip("input_2_16k")))
    pcm = first + b"\0" * int(gap_s * 16000) + second + b"\0" * 16000
    track = engine().new_track(RecognizerOptions(), final_engine=finals_engine)
    out = [s for i in range(0, len(pcm), FRAME) for s in track.feed(pcm[i:i + FRAME], 8000)]
    out += track.flush()
    assert len(out) == 2 and all(s.is_final for s in out), out
    return out, heard


def test_a_close_utterance_is_reread_with_the_one_before(
        monkeypatch: pytest.MonkeyPatch) -> None:
    before = rereads()
    finals, heard = two_utterances(1.0, monkeypatch)
    assert rereads() == before + 1
    # The second final's decode heard both clips, and says only the second one's words.
    assert max(heard) > len(clip("goforward").pcm) / 2 / clip("goforward").rate + 3.0
    # Its words, up to the reference's length: on some CPUs (an AMD EPYC here) the model
    # adds a phrase over the trailing silence ("I'm so sorry."), which is not the reread's.
    second = clip("input_2_16k").reference
    said = " ".join(normalize(finals[1].text)[:len(normalize(second))])
    assert wer(second, said) <= 0.3, finals
    assert "forward" not in finals[1].text.lower()
    assert wer(clip("goforward").reference, finals[0].text) <= 0.25, finals


def test_an_utterance_long_after_the_previous_is_decoded_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    before = rereads()
    finals, heard = two_utterances(3.0, monkeypatch)
    assert rereads() == before
    assert max(heard) < 5.0  # input_2_16k and its pads, not goforward too
    # Its words, up to the reference's length: on some CPUs (an AMD EPYC here) the model
    # adds a phrase over the trailing silence ("I'm so sorry."), which is not the reread's.
    second = clip("input_2_16k").reference
    said = " ".join(normalize(finals[1].text)[:len(normalize(second))])
    assert wer(second, said) <= 0.3, finals


def test_the_fast_model_alone_never_rereads() -> None:
    before = rereads()
    pcm = (over_pcmu(phone_band(clip("goforward"))) + b"\0" * 16000
           + over_pcmu(phone_band(clip("input_2_16k"))) + b"\0" * 16000)
    track = engine().new_track(RecognizerOptions())
    finals = [s for i in range(0, len(pcm), FRAME) for s in track.feed(pcm[i:i + FRAME], 8000)]
    assert len(finals) == 2
    assert rereads() == before
    assert len(track._audio) / 16000 < 2.0  # nor keeps the utterance before for one


def test_a_track_lets_the_previous_utterance_go_when_too_far_back_to_reread() -> None:
    track = engine().new_track(RecognizerOptions(), final_engine=second_engine())
    pcm = over_pcmu(phone_band(clip("goforward"))) + b"\0" * int(
        (REREAD_MAX_S + 1) * 16000)
    finals = [s for i in range(0, len(pcm), FRAME) for s in track.feed(pcm[i:i + FRAME], 8000)]
    assert len(finals) == 1
    kept = len(track._audio) / 16000
    assert kept < 2.0, kept  # the pad and the end silence, not the utterance before


def test_a_reread_that_cannot_be_split_falls_back_to_the_utterance_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(whisper, "new_part", lambda previous, text: None)
    before = REGISTRY.get_sample_value(REDECODES, {"reason": "reread_unsplit"}) or 0.0
    finals, heard = two_utterances(1.0, monkeypatch)
    # Re-read (both clips), then decoded alone: the second final is still its words.
    assert REGISTRY.get_sample_value(REDECODES, {"reason": "reread_unsplit"}) == before + 1
    assert heard[1] > 5.0 > heard[2]  # both clips, then input_2_16k and its pads
    # Its words, up to the reference's length: on some CPUs (an AMD EPYC here) the model
    # adds a phrase over the trailing silence ("I'm so sorry."), which is not the reread's.
    second = clip("input_2_16k").reference
    said = " ".join(normalize(finals[1].text)[:len(normalize(second))])
    assert wer(second, said) <= 0.3, finals
