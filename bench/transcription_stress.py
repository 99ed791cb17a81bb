"""The stress evaluation of live transcription (``bench/transcription.py --stress``).

One corpus can fool a tuning; this one is built to land cuts everywhere:

* **synthetic speech**: espeak-ng (Debian package ``espeak-ng``) reads the call-centre
  texts below (order numbers, names, addresses, dates, phone numbers) in several
  voices and variants at 130-180 words a minute. espeak's steady delivery has no
  pause long enough to end an utterance, so most of them run past
  ``max_utterance_s`` and get cut;
* **human speech**: the real-speech corpus of the tests (``tests/corpus.py``);
* each at tempos 0.90x, 1.00x and 1.10x (varispeed: resampled, so pitch moves too),
  so the same words meet the VAD's limits at different points.

Every item goes phone band (8 kHz, 300-3400 Hz) and through PCMU, then:

* **live**: a :class:`~callstream.transcription.whisper.WhisperTrack` fed 20 ms frames
  in 60 ms batches (as the server's worker takes them), interims on. A simulated
  real-time clock gives each batch its arrival time; the single worker starts it when
  both it and the previous batch are done, and takes the batch's measured process CPU
  time (the bench does one thing at a time). Segments are "emitted" when their batch
  finishes. A batch whose oldest audio is over 0.5 s old decodes no interims, as in
  the server.
* **offline**: the same model on the same (PCMU) audio, whole clip, with
  faster-whisper's own ``transcribe`` and its defaults (beam 5, temperature fallback).

Reported per item and pooled (synthetic / human / all): WER of the live finals and
offline; **sentences lost** (a reference sentence of which fewer than 30 % of the
words have any hypothesis word aligned to them, i.e. missing rather than misheard;
human clips count as sentences of at most 15 words); inserted words; WER of the last
interim before each final (what a live reader saw last); speech onset ->
first interim and end of speech -> final (p50/p95, by the simulated clock, so they
are what one dedicated core would give); CPU per track (live recogniser process CPU per
second of audio) and the tracks per core it implies.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soxr

from bench.transcription import last_interims
from callstream.transcription.engine import RecognizerOptions
from callstream.transcription.manager import INTERIM_MAX_LAG_S, MIN_BATCH_FRAMES
from callstream.transcription.whisper import WhisperEngine
from tests.corpus import align, corpus, normalize, phone_band, sentences_lost
from tests.synth import espeak
from tests.transcription.test_whisper import over_pcmu

RATE = 8000
FRAME_BYTES = 320  # 20 ms of 8 kHz s16
LEAD_S = 1.0
TAIL_S = 2.0
TEMPOS = (0.90, 1.00, 1.10)
HUMAN_SENTENCE_WORDS = 15

#: What the synthetic callers say: call-centre requests with numbers, names, places.
TEXTS: tuple[tuple[str, ...], ...] = (
    ("Hi, I am calling about the status of my order.",
     "The order number is four five two seven, and it was placed on June third.",
     "The tracking page has not changed for a whole week.",
     "Can you tell me when it will arrive?"),
    ("Hello, this is Margaret Olsen.",
     "I live at forty two Maple Street in Springfield, Illinois.",
     "My internet has been down since Tuesday morning.",
     "Please send a technician as soon as possible."),
    ("Good afternoon, my name is David Kowalski.",
     "I would like to book a table for six people on Friday at seven thirty.",
     "One of us needs a wheelchair accessible seat.",
     "You can reach me at five five five, two one nine, eight eight four zero."),
    ("I want to dispute a charge on my credit card.",
     "It was for one hundred and twenty nine dollars from a store in Denver.",
     "I have never been to Colorado.",
     "The last four digits of the card are three three eight one."),
    ("Yes, I need to change my flight.",
     "The confirmation code is K, L, seven, nine, two, Q.",
     "I am flying from Boston to San Francisco on the fourteenth of March.",
     "I would prefer an evening departure if one is available."),
    ("Hi, this is Doctor Patel's office calling for Susan Miller.",
     "Your test results came back and everything looks normal.",
     "Please call us back to schedule your next checkup.",
     "Our number is six one seven, four four two, one zero zero nine."),
)

#: (voice, words a minute): espeak-ng voices and variants.
VOICES: tuple[tuple[str, int], ...] = (
    ("en-us", 160), ("en-us+f3", 145), ("en-gb", 170), ("en+m3", 150), ("en-us+m7", 180),
    ("en-us+f4", 130),
)


@dataclass(frozen=True, slots=True)
class Item:
    kind: str  # "synthetic" or "human"
    name: str
    sentences: tuple[str, ...]
    pcm: bytes  # 8 kHz s16le, phone band, through PCMU, with lead and tail silence
    onset: float  # seconds into pcm
    end: float


@dataclass
class Live:
    finals: list[tuple[float, str]] = field(default_factory=list)
    interims: list[tuple[float, str]] = field(default_factory=list)
    cpu_s: float = 0.0


def speech_span(pcm: bytes) -> tuple[float, float]:
    """First and last 20 ms frame within 20 dB of the loudest (seconds)."""
    samples = np.frombuffer(pcm, "<i2").astype(np.float64)
    n = len(samples) // 160
    rms = np.sqrt(np.mean(samples[: n * 160].reshape(n, 160) ** 2, axis=1))
    loud = np.nonzero(rms > rms.max() * 0.1)[0]
    return float(loud[0] * 160 / RATE), float((loud[-1] + 1) * 160 / RATE)


def varispeed(pcm: bytes, tempo: float) -> bytes:
    if tempo == 1.0:
        return pcm
    samples = np.frombuffer(pcm, "<i2")
    return bytes(soxr.resample(samples, round(RATE * tempo), RATE).astype("<i2").tobytes())


def band_limit(pcm: bytes) -> bytes:
    samples = np.frombuffer(pcm, "<i2").astype(np.float64)
    spectrum = np.fft.rfft(samples)
    freqs = np.fft.rfftfreq(len(samples), 1 / RATE)
    spectrum[(freqs < 300) | (freqs > 3400)] = 0
    out = np.fft.irfft(spectrum, len(samples)) * 10 ** (-3 / 20)
    return bytes(np.clip(out, -32768, 32767).astype("<i2").tobytes())


def _item(kind: str, name: str, sentences: tuple[str, ...], speech: bytes) -> Item:
    body = over_pcmu(speech)
    onset, end = speech_span(body)
    pcm = b"\0\0" * int(LEAD_S * RATE) + body + b"\0\0" * int(TAIL_S * RATE)
    return Item(kind, name, sentences, pcm, LEAD_S + onset, LEAD_S + end)


def _chunks(reference: str) -> tuple[str, ...]:
    words = reference.split()
    return tuple(" ".join(words[i: i + HUMAN_SENTENCE_WORDS])
                 for i in range(0, len(words), HUMAN_SENTENCE_WORDS))


def items(*, synthetic: int, human: int, tempos: tuple[float, ...] = TEMPOS) -> Iterator[Item]:
    """``synthetic`` (text, voice) pairs and ``human`` corpus clips, at every tempo."""
    pairs = [(t, v) for i, t in enumerate(TEXTS) for j, v in enumerate(VOICES)
             if (i + j) % 2 == 0][:synthetic]
    for text, (voice, wpm) in pairs:
        speech = band_limit(espeak(" ".join(text), voice=voice, wpm=wpm))
        for tempo in tempos:
            yield _item("synthetic", f"text{TEXTS.index(text)}/{voice}/{wpm}/x{tempo:.2f}",
                        text, varispeed(speech, tempo))
    for clip in list(corpus())[:human]:
        speech = phone_band(clip)
        for tempo in tempos:
            yield _item("human", f"{clip.id}/x{tempo:.2f}", _chunks(clip.reference),
                        varispeed(speech, tempo))


def run_live(engine: WhisperEngine, pcm: bytes, *,
             final_engine: WhisperEngine | None = None) -> Live:
    track = engine.new_track(RecognizerOptions(interim_results=True),
                             final_engine=final_engine)
    batch = FRAME_BYTES * MIN_BATCH_FRAMES
    seconds = batch / 2 / RATE
    live = Live()
    finish = 0.0
    for at in range(0, len(pcm), batch):
        chunk = pcm[at: at + batch]
        arrival = (at + len(chunk)) / 2 / RATE
        start = max(arrival, finish)
        interims = start - (arrival - seconds) < INTERIM_MAX_LAG_S
        cpu0 = time.process_time()
        segments = track.feed(chunk, RATE, interims=interims)
        spent = time.process_time() - cpu0
        live.cpu_s += spent
        finish = start + spent
        for s in segments:
            (live.finals if s.is_final else live.interims).append((finish, s.text))
    cpu0 = time.process_time()
    segments = track.flush()
    live.cpu_s += time.process_time() - cpu0
    live.finals += [(finish, s.text) for s in segments]
    return live


def run_offline(engine: WhisperEngine, pcm: bytes) -> str:
    samples = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0
    audio = soxr.resample(samples, RATE, 16000).astype(np.float32)
    segments, _ = engine.model.transcribe(audio, language="en")
    return " ".join(s.text.strip() for s in segments)


def score(item: Item, live: Live, offline: str) -> dict[str, Any]:
    reference = normalize(" ".join(item.sentences))
    finals = " ".join(text for _, text in live.finals)
    live_align = align(reference, normalize(finals))
    off_align = align(reference, normalize(offline))
    interim_align = align(reference, normalize(" ".join(last_interims(live.finals,
                                                                      live.interims))))
    first = [t - item.onset for t, _ in live.interims if t > item.onset]
    final = [t - item.end for t, _ in live.finals if t > item.end - 0.3]
    return {
        "kind": item.kind, "item": item.name, "words": len(reference),
        "audio_s": round(len(item.pcm) / 2 / RATE, 2),
        "live_errors": live_align.substitutions + live_align.deletions + live_align.insertions,
        "offline_errors": off_align.substitutions + off_align.deletions + off_align.insertions,
        "interim_errors": (interim_align.substitutions + interim_align.deletions
                           + interim_align.insertions),
        "live_inserted": live_align.insertions, "offline_inserted": off_align.insertions,
        "live_lost": sentences_lost(list(item.sentences), finals),
        "offline_lost": sentences_lost(list(item.sentences), offline),
        "first_interim_s": round(first[0], 3) if first else None,
        "final_s": round(final[0], 3) if final else None,
        "cpu_s": round(live.cpu_s, 3),
        "finals": finals, "offline": offline,
    }


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 3)


def pooled(rows: list[dict[str, Any]]) -> dict[str, Any]:
    words = sum(r["words"] for r in rows)
    cpu = sum(r["cpu_s"] for r in rows) / sum(r["audio_s"] for r in rows)
    first = [r["first_interim_s"] for r in rows if r["first_interim_s"] is not None]
    final = [r["final_s"] for r in rows if r["final_s"] is not None]
    return {
        "items": len(rows), "words": words,
        "wer_live": round(sum(r["live_errors"] for r in rows) / words, 4),
        "wer_offline": round(sum(r["offline_errors"] for r in rows) / words, 4),
        "wer_last_interims": round(sum(r["interim_errors"] for r in rows) / words, 4),
        "sentences": sum(len(r["sentences"]) for r in rows),
        "lost_live": sum(len(r["live_lost"]) for r in rows),
        "lost_offline": sum(len(r["offline_lost"]) for r in rows),
        "inserted_live": sum(r["live_inserted"] for r in rows),
        "inserted_offline": sum(r["offline_inserted"] for r in rows),
        "first_interim_p50_s": pct(first, 0.5), "first_interim_p95_s": pct(first, 0.95),
        "final_p50_s": pct(final, 0.5), "final_p95_s": pct(final, 0.95),
        "cpu_per_track": round(cpu, 4), "tracks_per_core": round(1 / cpu, 1),
    }


def evaluate(engine: WhisperEngine, *, final_engine: WhisperEngine | None, synthetic: int,
             human: int, offline: bool = True,
             tempos: tuple[float, ...] = TEMPOS) -> dict[str, Any]:
    rows = []
    for item in items(synthetic=synthetic, human=human, tempos=tempos):
        live = run_live(engine, item.pcm, final_engine=final_engine)
        off = run_offline(final_engine or engine, item.pcm) if offline else ""
        row = score(item, live, off)
        row["sentences"] = list(item.sentences)
        rows.append(row)
        print(f"{row['item']:52} WER live {row['live_errors'] / row['words']:.3f} "
              f"offline {row['offline_errors'] / row['words']:.3f} lost "
              f"{len(row['live_lost'])}/{len(row['offline_lost'])} ins "
              f"{row['live_inserted']}/{row['offline_inserted']} first "
              f"{row['first_interim_s']} final {row['final_s']}", flush=True)
    groups = {"all": rows, **{k: [r for r in rows if r["kind"] == k]
                              for k in ("synthetic", "human")}}
    return {"pooled": {k: pooled(v) for k, v in groups.items() if v}, "items": rows,
            "median_final_s": statistics.median(
                [r["final_s"] for r in rows if r["final_s"] is not None] or [0.0])}
