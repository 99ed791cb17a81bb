"""The real-speech ASR corpus (research/asr.md): 15 utterances, ~100 s, 241 words.

Every clip comes from a registry package, fetched once with ``pip download`` into the
test cache (see :mod:`tests.audio`) and read straight from the archive:

* the ``pocketsphinx`` 5.1.1 **sdist** (BSD-2): five LibriVox utterances of *Sense and
  Sensibility*, five "cards" prompts, ``goforward.raw`` and two "forever" takes, with
  CMU's own transcriptions;
* the ``moonshine-voice`` 0.1.5 wheel (MIT package; LibriVox public domain): ``beckett``
  and ``two_cities``.

:func:`phone_band` turns a clip into what a G.711 call carries (8 kHz, 300-3400 Hz);
the µ-law step happens on the wire. :func:`normalize` and :func:`wer` score Whisper's
written-out text ("Mr.", "10") against the spoken-form references.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from tests.audio import cache_dir, read_wav, resample, speech

POCKETSPHINX = "pocketsphinx==5.1.1"
_PS_DATA = "pocketsphinx-5.1.1/test/data/"

#: Clips whose references are not in the sdist's transcription files.
_KNOWN_TEXT = {
    "goforward": "go forward ten meters",
    "input_2_16k": "feels like these days go on forever",
    "input_4_16k": "feels like these days go on forever",
    "beckett": "ever tried ever failed no matter try again fail again fail better",
    "two_cities": (
        "it was the best of times it was the worst of times it was the age of wisdom it was "
        "the age of foolishness it was the epoch of belief it was the epoch of incredulity "
        "it was the season of light it was the season of darkness it was the spring of hope "
        "it was the winter of despair we had everything before us we had nothing before us "
        "we were all going direct to heaven we were all going direct the other way in short "
        "the period was so far like the present period that some of its noisiest "
        "authorities insisted on its being received for good or for evil in the "
        "superlative degree of comparison only"
    ),
}


@dataclass(frozen=True, slots=True)
class Clip:
    id: str
    reference: str
    pcm: bytes  # 16-bit mono at `rate`
    rate: int

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / self.rate


@cache
def _pocketsphinx_sdist() -> Path:
    target = cache_dir() / "sdists"
    found = sorted(target.glob("pocketsphinx-*.tar.gz"))
    if found:
        return found[-1]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
         "--no-binary=:all:", "-d", str(target), POCKETSPHINX],
        check=True, timeout=600,
    )
    found = sorted(target.glob("pocketsphinx-*.tar.gz"))
    if not found:
        raise RuntimeError(f"pip download {POCKETSPHINX} produced no sdist in {target}")
    return found[-1]


def _transcriptions(text: str) -> dict[str, str]:
    """CMU ``<s> words </s> (id)`` lines."""
    refs = {}
    for line in text.splitlines():
        match = re.match(r"\s*<s>(.*)</s>\s*\((\S+)\)", line)
        if match:
            refs[match[2]] = " ".join(match[1].split())
    return refs


@cache
def corpus() -> tuple[Clip, ...]:
    """All 15 clips, in a fixed order, at their recorded rates."""
    clips: list[Clip] = []
    with tarfile.open(_pocketsphinx_sdist()) as tar:
        def read(name: str) -> bytes:
            member = tar.extractfile(_PS_DATA + name)
            if member is None:
                raise RuntimeError(f"{name} missing from the pocketsphinx sdist")
            return member.read()

        refs = _transcriptions(read("librivox/transcription").decode())
        refs.update(_transcriptions(read("cards/cards.transcription").decode()))
        for fileid in read("librivox/fileids").decode().split():
            pcm, rate = read_wav(read(f"librivox/{fileid}.wav"))
            clips.append(Clip(fileid, refs[fileid], pcm, rate))
        for n in range(1, 6):
            fileid = f"{n:03d}"
            pcm, rate = read_wav(read(f"cards/{fileid}.wav"))
            clips.append(Clip(fileid, refs[fileid], pcm, rate))
        clips.append(Clip("goforward", _KNOWN_TEXT["goforward"], read("goforward.raw"), 16000))
        for take in ("input_2_16k", "input_4_16k"):
            pcm, rate = read_wav(read(f"forever/{take}.wav"))
            clips.append(Clip(take, _KNOWN_TEXT[take], pcm, rate))
    for name in ("beckett", "two_cities"):
        clips.append(Clip(name, _KNOWN_TEXT[name], speech(name, 16000), 16000))
    return tuple(clips)


def clip(clip_id: str) -> Clip:
    for item in corpus():
        if item.id == clip_id:
            return item
    raise KeyError(clip_id)


def phone_band(item: Clip, rate: int = 8000) -> bytes:
    """The clip at ``rate`` band-limited to 300-3400 Hz, 3 dB down (as a phone line)."""
    pcm = resample(item.pcm, item.rate, rate)
    samples = np.frombuffer(pcm, "<i2").astype(np.float64)
    spectrum = np.fft.rfft(samples)
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    spectrum[(freqs < 300) | (freqs > 3400)] = 0
    out = np.fft.irfft(spectrum, len(samples)) * 10 ** (-3 / 20)
    return bytes(np.clip(out, -32768, 32767).astype("<i2").tobytes())


def noise(seconds: float, rate: int = 8000, level_db: float = -30.0, seed: int = 7) -> bytes:
    """Band-limited Gaussian noise (a hissy line), ``level_db`` below full scale RMS."""
    rng = np.random.default_rng(seed)
    samples = rng.normal(0, 32768 * 10 ** (level_db / 20), int(seconds * rate))
    return bytes(np.clip(samples, -32768, 32767).astype("<i2").tobytes())


# -- scoring -------------------------------------------------------------------

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
         "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
         "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_WORDS = {"mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint", "metres": "meters"}


def _number(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + _number(rest))
    return " ".join(_ONES[int(d)] for d in str(n))


def normalize(text: str) -> list[str]:
    """Lower case, no punctuation, digits spelled out, common abbreviations expanded."""
    text = text.lower().replace("-", " ")
    text = re.sub(r"(\d),(\d)", r"\1\2", text)
    text = re.sub(r"[^a-z0-9' ]", " ", text)
    words: list[str] = []
    for word in text.split():
        word = word.strip("'")
        if not word:
            continue
        if word.isdigit():
            words.extend(_number(int(word)).split() if len(word) < 4 else
                         [_ONES[int(d)] for d in word])
        else:
            words.append(_WORDS.get(word, word))
    return words


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edit distance in words, reference word count) after :func:`normalize`."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)], len(ref)


@dataclass(frozen=True, slots=True)
class Alignment:
    """A minimum-edit alignment of hypothesis words to reference words.

    Attributes:
        hits: per reference word, whether it is matched exactly.
        present: per reference word, whether some hypothesis word stands for it
            (matched or substituted; not deleted).
        substitutions, deletions, insertions: the edits (their sum is the distance).
    """

    hits: tuple[bool, ...]
    present: tuple[bool, ...]
    substitutions: int
    deletions: int
    insertions: int


def align(reference: list[str], hypothesis: list[str]) -> Alignment:
    rows = [list(range(len(hypothesis) + 1))]
    for i, r in enumerate(reference, 1):
        row = [i]
        for j, h in enumerate(hypothesis, 1):
            row.append(min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + (r != h)))
        rows.append(row)
    hits = [False] * len(reference)
    present = [False] * len(reference)
    subs = dels = ins = 0
    i, j = len(reference), len(hypothesis)
    while i > 0 or j > 0:
        if i > 0 and j > 0 and rows[i][j] == rows[i - 1][j - 1] + (
                reference[i - 1] != hypothesis[j - 1]):
            hits[i - 1] = reference[i - 1] == hypothesis[j - 1]
            present[i - 1] = True
            subs += not hits[i - 1]
            i, j = i - 1, j - 1
        elif i > 0 and rows[i][j] == rows[i - 1][j] + 1:
            dels += 1
            i -= 1
        else:
            ins += 1
            j -= 1
    return Alignment(tuple(hits), tuple(present), subs, dels, ins)


#: A sentence with less of its words than this heard (matched or misheard, not
#: missing) counts as lost.
LOST_BELOW = 0.3


def sentence_scores(sentences: list[str], hypothesis: str) -> list[tuple[float, float]]:
    """Per reference sentence: (share of its words the hypothesis has exactly, share it
    has some word for), aligned over the whole text so a word elsewhere does not count.
    A misheard sentence scores low on the first; only a lost one on the second."""
    words = [normalize(s) for s in sentences]
    alignment = align([w for ws in words for w in ws], normalize(hypothesis))
    out, at = [], 0
    for ws in words:
        n = max(len(ws), 1)
        out.append((sum(alignment.hits[at: at + len(ws)]) / n,
                    sum(alignment.present[at: at + len(ws)]) / n))
        at += len(ws)
    return out


def sentences_lost(sentences: list[str], hypothesis: str) -> list[str]:
    return [s for s, (_, heard) in zip(sentences, sentence_scores(sentences, hypothesis),
                                       strict=True) if heard < LOST_BELOW]


def wer(reference: str, hypothesis: str) -> float:
    errors, words = word_errors(reference, hypothesis)
    return errors / max(words, 1)
