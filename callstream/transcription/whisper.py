"""The embedded engine: Whisper (CTranslate2, via faster-whisper) made live.

Whisper is not a streaming model; this module makes it behave like one
(research/asr.md, *Streaming design*):

1. Audio is resampled to 16 kHz and run through Silero VAD (:mod:`.vad`), which cuts
   the track into utterances (threshold 0.2 for phone audio, 700 ms of silence from
   the energy-based end of speech ends one, 400 ms of padding each side, at most
   9.5 s each, a longer one cut at its quietest point and unpadded across the cut).
   Whisper never sees silence alone: it invents words there ("Okay.").
2. While an utterance goes on, an **interim** is decoded greedily on a *short*
   window: the utterance so far plus 3 s of silence. CTranslate2 takes fewer than
   3000 mel frames, which makes this ~20x cheaper than Whisper's 30 s window; the
   trailing silence and timestamp tokens keep the decoder from looping on it. The
   first interim is tried ``FIRST_INTERIM_S`` after the onset (again every
   ``RETRY_HOP_S`` until it has words; an unfinished, looping end counts up to the
   loop), then one comes every ``INTERIM_HOP_S``. Interims of several tracks that
   wait for the model at the same time are decoded in one call (:mod:`.batching`).
3. Its **final** (:meth:`WhisperEngine.decode_final`) is decoded with a beam of
   :data:`FINAL_BEAM_SIZE` on a 10 s window, or 30 s when the audio and 2 s of
   silence don't fit, up to :data:`EARLY_LEAD_S` before the VAD declares the end (no
   interim is decoded ahead of it then); when that early final ends a sentence, the
   utterance ends after ``sentence_end_silence_ms`` of silence, sooner than the VAD's
   own end. The beam is checked against the latest interim's greedy reading (a
   greedy decode of its own only when the beam has fewer words). It must cover all
   the speech: where the timestamps stop short (:mod:`.timestamps`) it is redone on
   the 30 s window and continued from the point reached; where that loops or skips,
   it is halved. Loops and repeats across a cut are removed (:mod:`.repetition`).
   Optionally a second, stronger engine decodes finals (two-pass), except while the
   track is behind; it re-reads the previous utterance's audio with this one's when
   the two were close, and keeps the words after the previous final (:mod:`.reread`).

This calls ``WhisperModel.model.generate`` (CTranslate2) directly, which is not
faster-whisper's public API: both packages are pinned in pyproject.
"""

from __future__ import annotations

import logging
import math
import threading
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from callstream.transcription import metrics
from callstream.transcription.batching import Batcher
from callstream.transcription.engine import (
    EngineUnavailable,
    RecognizerOptions,
    Segment,
    UnsupportedOption,
)
from callstream.transcription.repetition import (
    collapse_repeats,
    drop_overlap,
    until_repeat,
)
from callstream.transcription.reread import new_part
from callstream.transcription.timestamps import read_tokens
from callstream.transcription.vad import (
    SAMPLE_RATE,
    WINDOW_SAMPLES,
    Audio,
    Segmenter,
    SileroSession,
    SileroVad,
    VadEvent,
    VadEventKind,
    VadOptions,
)

log = logging.getLogger(__name__)

FIRST_INTERIM_S = 0.2  # speech before the first interim (plus the 400 ms pre-pad)
RETRY_HOP_S = 0.1  # until an utterance has its first words, try again this soon
INTERIM_HOP_S = 0.8  # audio between later interims
INTERIM_PAD_S = 3.0  # silence appended to an interim's audio (at least)
INTERIM_SPREAD_S = 2.0  # interims this close in length share a batch (padded to the longest)
EARLY_LEAD_S = 0.3  # a final is decoded this long before the VAD's end-of-speech
FINAL_WINDOW_S = 10.0  # a final's encoder window; loops fall back to 30 s
FULL_WINDOW_S = 30.0
FINAL_BEAM_SIZE = 5  # finals: beam search (see decode); 3 lost words on synthetic speech
BEAM_MIN_WORDS_SHARE = 0.8  # a beam result with fewer words than this x greedy's skipped
STALE_INTERIM_S = 1.0  # an interim that missed more of the speech than this can't vouch
FINAL_TAIL_S = 2.0  # silence a final's window has after its audio, at least
MAX_FINAL_PASSES = 4  # decodes (after window fallbacks) one final may take
MAX_UNCOVERED_S = 0.6  # speech a closed decode may leave unplaced before we decode it
MIN_REDECODE_S = 0.3  # after a lone timestamp: less speech than this left is done
MIN_PROGRESS_S = 0.5  # a continuation must start at least this far in
MAX_SPLITS = 2  # how often a final that loops or skips even on 30 s is halved
MIN_SPLIT_S = 3.0  # shorter than this is not halved
MAX_COMPRESSION_RATIO = 2.4  # above: the decoder repeats itself
MAX_WORDS_PER_SECOND = 5.0
NO_SPEECH_PROB = 0.6  # with a low log-prob, Whisper "heard" nothing
LOW_LOGPROB = -1.0
NO_SPEECH_MAX_WPS = 1.5  # a final with more words a second than this is speech anyway
TOKENS_PER_SECOND = 8  # generous cap on tokens per second of audio
SENTENCE_ENDS = (".", "?", "!")  # an early final ending so ends its utterance sooner
HINT_TOKENS = 100  # of a call's hints, in a decode's prompt
CONTEXT_TOKENS = 100  # of the previous final's end, in a two-pass final's prompt
REREAD_MAX_S = 12.0  # a re-read's audio, from the previous start (past 8 s: a 30 s window)
REREAD_MAX_GAP_S = 2.0  # silence between two utterances that a re-read spans, at most


@dataclass(frozen=True, slots=True)
class _Interim:
    """One track's request for an interim decode (see :meth:`WhisperEngine.decode`)."""

    audio: Audio
    language: str | None
    hints: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Decoded:
    text: str
    confidence: float
    looped: bool
    no_speech: bool
    covered: float  # seconds of the audio the text accounts for (see .timestamps)
    complete: bool  # the decoder closed its last segment: nothing left unsaid
    hurried: bool = False  # impossible timestamps: speech before them was skipped


def ends_sentence(text: str) -> bool:
    """Whether Whisper's punctuation says ``text`` is a whole sentence: it ends with
    ``.``, ``?`` or ``!``, and not with an ellipsis (a speaker trailing off)."""
    return text.endswith(SENTENCE_ENDS) and not text.endswith("..")


def _compression_ratio(text: str) -> float:
    data = text.encode()
    return len(data) / len(zlib.compress(data)) if data else 0.0


def _final_window(samples: int) -> float:
    """A final's encoder window: 10 s, or Whisper's own 30 s when the audio and a
    silent tail don't fit (audio to a window's edge makes Whisper defer its end)."""
    fits = samples / SAMPLE_RATE + FINAL_TAIL_S <= FINAL_WINDOW_S
    return FINAL_WINDOW_S if fits else FULL_WINDOW_S


def _quiet_middle(audio: Audio) -> int:
    """The sample to split ``audio`` at: the start of its quietest 100 ms in the middle
    third, so that the split falls between words."""
    step = SAMPLE_RATE // 10
    blocks = len(audio) // step
    power = np.square(audio[: blocks * step].reshape(blocks, step)).mean(axis=1)
    lo, hi = blocks // 3, max(blocks // 3 + 1, 2 * blocks // 3)
    return int(lo + np.argmin(power[lo:hi])) * step


def _pcm_to_float(pcm: bytes) -> Audio:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


class WhisperEngine:
    """One CTranslate2 Whisper model and one Silero VAD network, shared by all tracks.

    Args:
        model_dir: a CTranslate2 Whisper directory (model.bin, config.json,
            tokenizer.json, vocabulary.txt).
        name: what to call it in logs (``"tiny.en"``).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        workers: how many decodes may run at once (threads calling it), and how many
            batches of interims.
        vad: segmentation settings.

    Raises:
        EngineUnavailable: faster-whisper is missing or the model does not load.
    """

    def __init__(
        self,
        model_dir: Path,
        *,
        name: str,
        device: str = "cpu",
        workers: int = 1,
        vad: VadOptions | None = None,
    ) -> None:
        try:
            import ctranslate2
            from faster_whisper import WhisperModel
            from faster_whisper.tokenizer import Tokenizer
            from faster_whisper.transcribe import get_suppressed_tokens
        except ImportError as exc:
            raise EngineUnavailable(
                f"faster-whisper is not installed ({exc}); pip install faster-whisper"
            ) from exc
        if device == "auto":
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        self.device = device
        self._name = name
        self.vad_options = vad or VadOptions()
        try:
            self.model: Any = WhisperModel(
                str(model_dir),
                device=device,
                compute_type="float16" if device == "cuda" else "int8",
                cpu_threads=1,
                num_workers=max(1, workers),
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise EngineUnavailable(f"Whisper model {name} at {model_dir} failed to load: "
                                    f"{exc}") from exc
        self.multilingual = bool(self.model.model.is_multilingual)
        self._tokenizer_cls = Tokenizer
        self._tokenizers: dict[str | None, Any] = {}
        self._lock = threading.Lock()
        english = self.tokenizer("en" if self.multilingual else None)
        self.suppress_tokens = list(get_suppressed_tokens(english, [-1]))
        self.vad_session = SileroSession()
        self._interims: Batcher[_Interim, Decoded] = Batcher(
            self._decode_interims, slots=max(1, workers),
            spread=int(INTERIM_SPREAD_S * SAMPLE_RATE))

    @property
    def name(self) -> str:
        return self._name

    def tokenizer(self, language: str | None) -> Any:
        with self._lock:
            tok = self._tokenizers.get(language)
            if tok is None:
                tok = self._tokenizers[language] = self._tokenizer_cls(
                    self.model.hf_tokenizer, self.multilingual, task="transcribe",
                    language=language,
                )
            return tok

    def check(self, options: RecognizerOptions) -> None:
        language = options.language
        if not self.multilingual:
            if language not in (None, "en") and not (language or "").startswith("en-"):
                raise UnsupportedOption(
                    f"Model {self.name} transcribes English only; configure a "
                    f"multilingual Whisper model for {language!r}.", field="language")
            return
        if language is not None:
            from faster_whisper.tokenizer import _LANGUAGE_CODES

            if language.split("-")[0].lower() not in _LANGUAGE_CODES:
                raise UnsupportedOption(
                    f"Model {self.name} has no language {language!r}.", field="language")

    def new_track(self, options: RecognizerOptions, *,
                  final_engine: WhisperEngine | None = None) -> WhisperTrack:
        """A recogniser for one track; with ``final_engine``, its finals are decoded
        by that (stronger) model and its interims by this one."""
        self.check(options)
        if final_engine is not None:
            final_engine.check(options)
        return WhisperTrack(self, options, final_engine=final_engine)

    # -- decoding (any thread) --------------------------------------------------

    def decode(
        self, audio: Audio, *, window_s: float | None, language: str | None,
        hints: tuple[str, ...] = (), beam_size: int = 1, greedy_words: float | None = None,
        context: str = "",
    ) -> Decoded:
        """Decode ``audio`` on a window of ``window_s`` seconds; greedily unless
        ``beam_size`` > 1. ``window_s`` None: an interim (greedy, ``context`` unused), on
        the audio plus :data:`INTERIM_PAD_S` of silence or more: in one model call with
        other tracks' interims that are waiting for one (:meth:`_decode_interims`).
        ``greedy_words``: how many words a greedy reading of this audio has, as far as
        the caller knows (from an interim), which spares that reading here.
        ``context``: text said just before this audio (Whisper's previous-text prompt,
        after the hints)."""
        if window_s is None:
            return self._interims.submit(_Interim(audio, language, hints),
                                         key=(language, hints), size=len(audio))
        duration = len(audio) / SAMPLE_RATE
        samples = int(window_s * SAMPLE_RATE)
        encoded = self.model.encode(self._features(audio, samples))
        tokenizer = self.tokenizer(self._codes(encoded, language, 1)[0])
        prompt = _prompt(tokenizer, hints, context)
        max_new = _max_new_tokens(duration)
        if beam_size == 1:
            return self._generate(encoded, prompt, tokenizer, max_new, duration, 1)
        # Beam search is more accurate but prefers to skip a hard start outright, with
        # plausible timestamps; a greedy reading shows when it did: more words, or
        # impossible timestamps. The track's latest interim is one (of nearly the same
        # audio, free); only a beam with fewer words than it pays for the greedy
        # reading of this encoding (decoder only).
        beamed = self._generate(encoded, prompt, tokenizer, max_new, duration, beam_size)
        beam_words = len(beamed.text.split())
        if (greedy_words is not None and not beamed.hurried
                and beam_words >= BEAM_MIN_WORDS_SHARE * greedy_words):
            return beamed
        greedy = self._generate(encoded, prompt, tokenizer, max_new, duration, 1)
        if not greedy.hurried and beam_words >= BEAM_MIN_WORDS_SHARE * len(greedy.text.split()):
            return beamed
        metrics.REDECODES.labels("beam_skipped").inc()
        return greedy

    def _features(self, audio: Audio, samples: int) -> Any:
        """Log-mel features of ``audio`` cut or padded with silence to ``samples``."""
        padded = np.zeros(samples, dtype=np.float32)
        padded[: min(len(audio), samples)] = audio[:samples]
        features = self.model.feature_extractor(padded, padding=0)
        return features[:, : samples // self.model.feature_extractor.hop_length]

    def _decode_interims(self, interims: list[_Interim]) -> list[Decoded]:
        """Several tracks' interims (the same language and hints) in one encode and one
        greedy generate call: a decoder step costs about the same for one sequence as
        for eight. Each audio is padded with silence to the longest one's plus
        :data:`INTERIM_PAD_S`; the extra silence is more of what the pad is there for.
        Each result is read as a lone decode's, on its own audio's duration and token
        budget."""
        samples = max(len(i.audio) for i in interims) + int(INTERIM_PAD_S * SAMPLE_RATE)
        encoded = self.model.encode(np.stack([self._features(i.audio, samples)
                                              for i in interims]))
        language, hints = interims[0].language, interims[0].hints  # the batch's key
        languages = self._codes(encoded, language, len(interims))
        prompts = [_prompt(self.tokenizer(code), hints) for code in languages]
        budgets = [_max_new_tokens(len(i.audio) / SAMPLE_RATE) for i in interims]
        results = self._run(encoded, prompts, 1, len(prompts[0]) + max(budgets))
        metrics.INTERIM_BATCH.observe(len(interims))
        return [
            # A lone decode would have stopped at its own budget: the rest is not its.
            self._read(result, self.tokenizer(code), len(i.audio) / SAMPLE_RATE,
                       budget=budget, unfinished=True)
            for i, code, budget, result in zip(interims, languages, budgets, results,
                                               strict=True)
        ]

    def _generate(self, encoded: Any, prompt: list[int], tokenizer: Any, max_new: int,
                  duration: float, beam_size: int) -> Decoded:
        """One decode of ``encoded``."""
        result = self._run(encoded, [prompt], beam_size, len(prompt) + max_new)[0]
        return self._read(result, tokenizer, duration)

    def _run(self, encoded: Any, prompts: list[list[int]], beam_size: int,
             max_length: int) -> Any:
        """CTranslate2's ``generate`` on ``encoded`` (one or a batch), as every decode
        calls it."""
        return self.model.model.generate(
            encoded, prompts, beam_size=beam_size, max_length=max_length,
            return_scores=True, return_no_speech_prob=True, suppress_blank=True,
            suppress_tokens=self.suppress_tokens, max_initial_timestamp_index=50,
        )

    def _codes(self, encoded: Any, language: str | None, count: int) -> list[str | None]:
        """The tokenizer language of each of ``count`` encoded items: ``language``'s
        code, or the detected one when it is None; None for an English-only model."""
        if not self.multilingual:
            return [None] * count
        if language is None:  # detect_language: [[("<|en|>", p), ...], ...]
            return [d[0][0].strip("<|>") for d in self.model.model.detect_language(encoded)]
        return [language.split("-")[0].lower()] * count

    def _read(self, result: Any, tokenizer: Any, duration: float, *,
              budget: int | None = None, unfinished: bool = False) -> Decoded:
        """What one generate result says. ``budget``: the tokens kept (of a batch's
        longer run). ``unfinished`` (interims): the text of a segment the decoder did
        not close is kept too, up to where it starts repeating itself. On the first
        half second of speech tiny.en often runs its first word into a loop to the
        token budget ("4 4 4 4 4 4"); without this, interims stayed empty until the
        speech was long enough to close a segment: up to 0.9 s after the onset."""
        tokens: list[int] = result.sequences_ids[0][:budget]
        reading = read_tokens(tokens, timestamp_begin=tokenizer.timestamp_begin,
                              eot=tokenizer.eot, duration=duration)
        text = tokenizer.decode(list(reading.words)).strip()
        if unfinished and reading.unfinished:
            tail = until_repeat(tokenizer.decode(list(reading.unfinished)).strip())
            text = f"{text} {tail}".strip()
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1) if tokens else -10.0
        n_words = len(text.split())
        looped = (_compression_ratio(text) > MAX_COMPRESSION_RATIO
                  or n_words > MAX_WORDS_PER_SECOND * max(duration, 1.0))
        no_speech = result.no_speech_prob > NO_SPEECH_PROB and avg_logprob < LOW_LOGPROB
        confidence = min(1.0, max(0.0, math.exp(avg_logprob)))
        return Decoded(text, round(confidence, 4), looped, no_speech, reading.covered,
                       reading.complete, reading.hurried)

    def decode_final(
        self, audio: Audio, *, speech_end: float, language: str | None,
        hints: tuple[str, ...] = (), splits: int = MAX_SPLITS,
        greedy_words: float | None = None, context: str = "",
    ) -> Decoded | None:
        """Decode an utterance until the text accounts for all its speech.

        Where a decode stops short of ``speech_end`` (seconds into ``audio`` where the
        VAD heard the last speech) — a lone timestamp, an unfinished segment, more than
        :data:`MAX_UNCOVERED_S` unplaced — the same audio is decoded on the full window,
        then the rest from the point the timestamps reached (as faster-whisper's
        ``transcribe`` seeks). Where even the full window loops or skips (impossible
        timestamps), the audio is split at its quietest point near the middle and each
        half is decoded alone (up to ``splits`` deep). Loops left in the text are
        collapsed (:mod:`.repetition`). ``greedy_words``: the words a greedy reading of
        the whole utterance is expected to have, which can spare the beam's check (see
        :meth:`decode`). ``context``: what was said before (see :meth:`decode`); a
        decode with it that finds no words is redone without it. None: no words at
        all."""
        texts: list[str] = []
        weights: list[tuple[float, float]] = []  # (confidence, seconds it covered)
        offset = 0.0
        for _ in range(MAX_FINAL_PASSES):
            piece = audio[round(offset * SAMPLE_RATE):]
            known = greedy_words if offset == 0 else None  # it is for the audio whole
            decoded = self.decode(piece, window_s=_final_window(len(piece)), language=language,
                                  hints=hints, beam_size=FINAL_BEAM_SIZE, greedy_words=known,
                                  context=context)
            if context and not decoded.text and not texts:
                break  # the prompt silenced it (below): not worth the full window
            if decoded.looped or not decoded.complete or decoded.hurried:
                # Whisper loops, defers the rest or skips on a short window: the full one.
                metrics.REDECODES.labels("window").inc()
                decoded = self.decode(piece, window_s=FULL_WINDOW_S, language=language,
                                      hints=hints, beam_size=FINAL_BEAM_SIZE,
                                      greedy_words=known, context=context)
            if (decoded.looped or decoded.hurried) and splits > 0 and (
                    len(piece) >= MIN_SPLIT_S * SAMPLE_RATE):
                metrics.REDECODES.labels("split").inc()
                split = _quiet_middle(piece)
                halves = [
                    self.decode_final(piece[:split], speech_end=split / SAMPLE_RATE,
                                      language=language, hints=hints, splits=splits - 1,
                                      context=context),
                    self.decode_final(piece[split:], speech_end=max(
                        speech_end - offset - split / SAMPLE_RATE, 0.0), language=language,
                        hints=hints, splits=splits - 1, context=context),
                ]
                for half, samples in zip(halves, (split, len(piece) - split), strict=True):
                    if half is not None:
                        texts.append(half.text)
                        weights.append((half.confidence, samples / SAMPLE_RATE))
                break
            if not decoded.text:
                break
            if decoded.no_speech and len(decoded.text.split()) < NO_SPEECH_MAX_WPS * max(
                    speech_end - offset, 1.0):
                break  # Whisper's "nothing heard" is wrong about a run of clear words
            texts.append(decoded.text)
            reached = decoded.covered if decoded.covered > 0 else len(piece) / SAMPLE_RATE
            weights.append((decoded.confidence, max(reached, 0.1)))
            rest = speech_end - offset - reached
            if decoded.hurried or rest <= (
                    MAX_UNCOVERED_S if decoded.complete else MIN_REDECODE_S):
                break  # done, or its timestamps can't say where to go on from
            if decoded.covered < MIN_PROGRESS_S:
                break  # no usable timestamp to continue from
            offset += decoded.covered
            metrics.REDECODES.labels("continuation").inc()
        else:
            log.warning("a final still had undecoded speech after %d passes", MAX_FINAL_PASSES)
        text = collapse_repeats(" ".join(texts))
        if not text and context:
            # Whisper may take a long previous text for all there is to say and end at
            # once (base, after a 30-word final, on the 2 s rest of a cut sentence).
            metrics.REDECODES.labels("context").inc()
            return self.decode_final(audio, speech_end=speech_end, language=language,
                                     hints=hints, splits=splits, greedy_words=greedy_words)
        if not text:
            return None
        seconds = math.fsum(w for _, w in weights)
        confidence = math.fsum(c * w for c, w in weights) / seconds
        return Decoded(text, round(confidence, 4), False, False, speech_end, True)


def _prompt(tokenizer: Any, hints: tuple[str, ...], context: str = "") -> list[int]:
    """A decode's prompt: the call's hints and the text said before (Whisper's
    previous-text part, if either), then the start-of-transcript sequence."""
    prompt: list[int] = []
    if hints or context:
        prompt.append(tokenizer.sot_prev)
        if hints:
            prompt += tokenizer.encode(" " + " ".join(hints))[:HINT_TOKENS]
        if context:
            prompt += tokenizer.encode(" " + context)[-CONTEXT_TOKENS:]
    return prompt + list(tokenizer.sot_sequence)


def _max_new_tokens(duration: float) -> int:
    return min(200, int(16 + TOKENS_PER_SECOND * duration))


@dataclass(frozen=True, slots=True)
class _Heard:
    """The latest final's utterance, which the next two-pass final may re-read."""
    start: int  # sample its audio starts at
    speech_end: int  # sample its speech ends at
    text: str  # its final
    before: str  # the final before it: the re-read's previous-text prompt


@dataclass(frozen=True, slots=True)
class _EarlyFinal:
    key: tuple[int, int]  # (start, end) windows of the utterance it assumed
    decoded: Decoded | None
    start: int  # samples its audio spans
    end: int


class WhisperTrack:
    """One track's VAD state, audio and utterance progress. One caller at a time."""

    def __init__(self, engine: WhisperEngine, options: RecognizerOptions, *,
                 final_engine: WhisperEngine | None = None) -> None:
        self.engine = engine
        self.final_engine = final_engine
        self.options = options
        self._vad = SileroVad(engine.vad_session)
        self._segmenter = Segmenter(engine.vad_options)
        self._pad = int(engine.vad_options.pad_ms / 1000 * SAMPLE_RATE)
        self._min_silence = int(engine.vad_options.min_silence_ms / 1000 * SAMPLE_RATE)
        self._sentence_silence = min(self._min_silence, int(
            engine.vad_options.sentence_end_silence_ms / 1000 * SAMPLE_RATE))
        self._resampler: Any = None
        self._rate: int | None = None
        # Audio kept: samples [self._base, self._base + len(self._audio)) of the track.
        self._audio = np.zeros(0, dtype=np.float32)
        self._base = 0
        self._last_interim = 0  # sample where the latest interim's audio ended
        self._interim_words: int | None = None  # in the utterance's latest interim...
        self._interim_end = 0  # ...whose audio ended at this sample
        self._cut_start = False  # the utterance in progress is a cut one's continuation
        self._last_final = ""  # text of the latest final
        self._heard: _Heard | None = None  # its utterance, while a re-read can reach it
        self._behind = False  # the caller said it is behind (no interims this time)
        self._early: _EarlyFinal | None = None  # a final decoded before its END

    @property
    def _total(self) -> int:
        return self._base + len(self._audio)

    def _to_16k(self, pcm: bytes, sample_rate: int) -> Audio:
        if self._rate is None:
            self._rate = sample_rate
            if sample_rate != SAMPLE_RATE:
                import soxr

                self._resampler = soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1,
                                                      dtype="float32")
        elif sample_rate != self._rate:
            raise ValueError(f"track rate changed from {self._rate} to {sample_rate} Hz")
        audio = _pcm_to_float(pcm)
        if self._resampler is not None:
            audio = self._resampler.resample_chunk(audio).astype(np.float32, copy=False)
        return audio

    def feed(self, pcm: bytes, sample_rate: int, *, interims: bool = True) -> list[Segment]:
        """See :meth:`TrackRecognizer.feed`. ``interims=False`` (the caller is behind)
        also sends finals to the fast model when a stronger one is configured."""
        self._behind = not interims
        audio = self._to_16k(pcm, sample_rate)
        self._audio = np.concatenate([self._audio, audio]) if len(self._audio) else audio
        segments: list[Segment] = []
        # Window by window: an utterance's end resets the VAD before the next window.
        for offset in range(0, len(audio), WINDOW_SAMPLES):
            for prob in self._vad.probabilities(audio[offset: offset + WINDOW_SAMPLES]):
                for event in self._segmenter.push(float(prob), self._level()):
                    if event.kind is VadEventKind.START:
                        self._last_interim = event.start * WINDOW_SAMPLES
                        self._interim_words = None
                        self._cut_start = event.cut
                    else:
                        if not event.cut:
                            self._vad.reset()
                        if event.kind is VadEventKind.END:
                            segments.extend(self._final(event))
        final_ready = self._decode_early()
        if final_ready and self._sentence_over():
            for event in self._segmenter.end_at_silence():
                self._vad.reset()
                if event.kind is VadEventKind.END:
                    metrics.SENTENCE_ENDS.inc()
                    segments.extend(self._final(event))
        if (self._segmenter.in_speech and interims and self.options.interim_results
                and not final_ready):
            interim = self._interim()
            if interim is not None:
                segments.append(interim)
        self._trim()
        return segments

    def flush(self) -> list[Segment]:
        segments: list[Segment] = []
        for event in self._segmenter.finish():
            if event.kind is VadEventKind.END:
                segments.extend(self._final(event))
        self._audio = np.zeros(0, dtype=np.float32)
        return segments

    def _level(self) -> float:
        """Loudness (dB) of the window the segmenter is about to be given."""
        first = self._segmenter.position * WINDOW_SAMPLES
        window = self._slice(first, first + WINDOW_SAMPLES)
        power = float(np.mean(window * window)) if len(window) else 0.0
        return 10.0 * math.log10(power + 1e-10)

    def _pre_pad(self, start: int) -> int:
        """Where the audio of an utterance starting at sample ``start`` begins: a cut's
        continuation has no pad (that audio went to the utterance before it)."""
        return start if self._cut_start else max(start - self._pad, 0)

    def _slice(self, start: int, end: int) -> Audio:
        lo = max(start - self._base, 0)
        return self._audio[lo: max(end - self._base, lo)]

    def _interim(self) -> Segment | None:
        start_window = self._segmenter.start
        assert start_window is not None
        start = start_window * WINDOW_SAMPLES
        now = self._total
        since_onset = now - start
        if since_onset < FIRST_INTERIM_S * SAMPLE_RATE:
            return None
        hop = INTERIM_HOP_S if self._interim_words is not None else RETRY_HOP_S
        if self._last_interim > start and now - self._last_interim < hop * SAMPLE_RATE:
            return None
        self._last_interim = now
        begin = self._pre_pad(start)
        decoded = self._decode(self._slice(begin, now), window_s=None)
        if decoded.looped or decoded.no_speech or not decoded.text:
            return None
        self._interim_words = len(decoded.text.split())
        self._interim_end = now
        return Segment(decoded.text, False, decoded.confidence, begin / SAMPLE_RATE,
                       now / SAMPLE_RATE)

    def _final(self, event: VadEvent) -> list[Segment]:
        early = self._early
        self._early = None
        if early is not None and early.key == (event.start, event.end) and not event.cut:
            decoded, start, end = early.decoded, early.start, early.end
        else:
            decoded, start, end = self._decode_utterance(event.start, event.end, event.cut)
        text = decoded.text if decoded is not None else ""
        if self._cut_start:
            text = drop_overlap(self._last_final, text)  # said again across the cut
        # Kept for a two-pass re-read of the next utterance; a cut's parts aren't short.
        rereadable = (self.final_engine is not None and bool(text) and not event.cut
                      and not self._cut_start)
        self._heard = _Heard(start, min(event.end * WINDOW_SAMPLES, self._total), text,
                             self._last_final) if rereadable else None
        self._last_final = text
        if decoded is None or not text:
            return []
        return [Segment(text, True, decoded.confidence, start / SAMPLE_RATE,
                        end / SAMPLE_RATE)]

    def _decode_early(self) -> bool:
        """Decode the final of the utterance in progress as if the silence now running
        will end it, :data:`EARLY_LEAD_S` before the VAD can say so (and not before the
        silence holds the final's end pad: decoding with less cost words); the END
        that follows, if the silence lasts, then costs nothing. True when it decoded,
        or when a decode for this silence is already done: an interim now would only
        delay the final it precedes."""
        start, silence = self._segmenter.start, self._segmenter.silence_from
        wait = max(self._pad, self._min_silence - int(EARLY_LEAD_S * SAMPLE_RATE))
        if start is None or silence is None or self._behind or (
                self._total < silence * WINDOW_SAMPLES + wait):
            return False
        if self._early is not None and self._early.key == (start, silence):
            return True
        self._early = _EarlyFinal((start, silence),
                                  *self._decode_utterance(start, silence, False))
        return True

    def _sentence_over(self) -> bool:
        """The final decoded early for the silence now running ends a sentence, and
        that silence has lasted ``sentence_end_silence_ms``: the utterance is over
        without waiting out ``min_silence_ms``, which is there for pauses inside a
        sentence (at a comma, or none in the text)."""
        early, silence = self._early, self._segmenter.silence_from
        if early is None or early.decoded is None or silence is None:
            return False
        return ends_sentence(early.decoded.text) and (
            self._total >= silence * WINDOW_SAMPLES + self._sentence_silence)

    def _decode_utterance(self, start_window: int, end_window: int,
                          cut: bool) -> tuple[Decoded | None, int, int]:
        """The final decode of an utterance, and the samples its audio spans."""
        start = self._pre_pad(start_window * WINDOW_SAMPLES)
        speech_end = min(end_window * WINDOW_SAMPLES, self._total)
        end = speech_end if cut else min(speech_end + self._pad, self._total)
        engine, context = self.engine, ""
        greedy_words = self._greedy_words(start, speech_end)
        if self.final_engine is not None:
            if self._behind:
                metrics.FINALS_ON_FAST_MODEL.inc()  # catching up beats the better model
            else:
                # The stronger model reads on from the call's previous final, as Whisper
                # does across its 30 s windows: human WER 0.079 -> 0.062 with base.
                engine, context = self.final_engine, self._last_final
                reread = self._reread(start_window * WINDOW_SAMPLES, speech_end, end,
                                      greedy_words)
                if reread is not None:
                    return reread, start, end
        decoded = engine.decode_final(
            self._slice(start, end), speech_end=(speech_end - start) / SAMPLE_RATE,
            language=self.options.language, hints=self.options.hints,
            greedy_words=greedy_words, context=context)
        return decoded, start, end

    def _reread(self, speech_start: int, speech_end: int, end: int,
                greedy_words: float | None) -> Decoded | None:
        """A two-pass final decoded over the previous utterance's audio too, when that
        one was close (:data:`REREAD_MAX_GAP_S`, :data:`REREAD_MAX_S`): a sentence that
        a pause cut into pieces is heard whole again (15 human clips at 1.00x, base
        finals: WER 0.062 -> 0.050). Only the words after the previous final's are kept
        (:mod:`.reread`). None: no re-read, or one that can't say where the previous
        final ends (decode the utterance alone)."""
        heard = self._heard
        assert self.final_engine is not None
        if heard is None or self._cut_start or heard.start < self._base or (
                end - heard.start > REREAD_MAX_S * SAMPLE_RATE) or (
                speech_start - heard.speech_end > REREAD_MAX_GAP_S * SAMPLE_RATE):
            return None
        decoded = self.final_engine.decode_final(
            self._slice(heard.start, end), speech_end=(speech_end - heard.start) / SAMPLE_RATE,
            language=self.options.language, hints=self.options.hints,
            greedy_words=None if greedy_words is None else (
                greedy_words + len(heard.text.split())),
            context=heard.before)
        text = new_part(heard.text, decoded.text) if decoded is not None else None
        if decoded is None or text is None:
            metrics.REDECODES.labels("reread_unsplit").inc()
            return None
        metrics.REREADS.inc()
        return replace(decoded, text=text)

    def _greedy_words(self, start: int, speech_end: int) -> float | None:
        """The words a greedy reading of the utterance from ``start`` to ``speech_end``
        should have, from its latest interim (a greedy reading of its audio so far),
        scaled up by the speech that came after it. None (a greedy decode checks the
        beam) without an interim or with one that missed more than
        :data:`STALE_INTERIM_S` of the speech (the track was behind)."""
        if self._interim_words is None or (
                speech_end - self._interim_end > STALE_INTERIM_S * SAMPLE_RATE):
            return None
        heard = max(self._interim_end - start, 1)
        return self._interim_words * max(1.0, (speech_end - start) / heard)

    def _decode(self, audio: Audio, *, window_s: float | None) -> Decoded:
        return self.engine.decode(audio, window_s=window_s, language=self.options.language,
                                  hints=self.options.hints)

    def _trim(self) -> None:
        """Forget audio no utterance can need: before the current one's pre-pad (in
        speech) or before the last pad + min-silence span (between utterances)."""
        if self._segmenter.start is not None:
            keep_from = self._segmenter.start * WINDOW_SAMPLES - self._pad
        else:
            keep_from = self._total - self._pad - int(
                self.engine.vad_options.min_silence_ms / 1000 * SAMPLE_RATE) - WINDOW_SAMPLES
        heard = self._heard
        if heard is not None and self._total - heard.start > REREAD_MAX_S * SAMPLE_RATE:
            self._heard = heard = None  # too far back for a re-read: let its audio go
        if heard is not None:
            keep_from = min(keep_from, heard.start)
        drop = keep_from - self._base
        if drop > 0:
            self._audio = self._audio[drop:]
            self._base += drop
