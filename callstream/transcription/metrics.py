"""Prometheus metrics of live transcription (served on /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TRACKS = Gauge("callstream_transcription_tracks", "Tracks being transcribed now")
SEGMENTS = Counter(
    "callstream_transcription_segments_total", "Transcript segments emitted", ["kind"]
)
DECODE_SECONDS = Histogram(
    "callstream_transcription_feed_seconds",
    "Worker time per recogniser call (VAD plus any decoding)",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
BUSY_SECONDS = Counter(
    "callstream_transcription_busy_seconds_total", "Worker time spent recognising"
)
INTERIMS_SKIPPED = Counter(
    "callstream_transcription_interims_skipped_total",
    "Recogniser calls made without interim decoding because the track was behind",
)
DROPPED_FRAMES = Counter(
    "callstream_transcription_dropped_frames_total",
    "20 ms frames lost because transcription could not keep up (tap queue full)",
)
LAG_SECONDS = Histogram(
    "callstream_transcription_lag_seconds",
    "Age of the oldest audio when a recogniser call starts",
    buckets=(0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
REDECODES = Counter(
    "callstream_transcription_redecodes_total",
    "Extra decodes of a final's audio: on the full 30 s window (window), from where the "
    "timestamps stopped (continuation), in halves when even 30 s loops or skips (split); "
    "beam_skipped: the beam search result skipped words and the greedy one was taken; "
    "context: a final decoded with the previous final as prompt had no words and was "
    "decoded without it; reread_unsplit: a re-read final (see rereads) did not show "
    "where the previous final ended, and its utterance was decoded alone",
    ["reason"],
)
FINALS_ON_FAST_MODEL = Counter(
    "callstream_transcription_finals_on_fast_model_total",
    "Finals decoded by the interim model instead of the configured final model, because "
    "the track was behind",
)
SENTENCE_ENDS = Counter(
    "callstream_transcription_sentence_ends_total",
    "Utterances ended after transcription_sentence_end_silence_ms, not the full end "
    "silence, because their early final ended a sentence",
)
INTERIM_BATCH = Histogram(
    "callstream_transcription_interim_batch_size",
    "Tracks' interims decoded in one model call (several when they queued together)",
    buckets=(1, 2, 3, 4, 6, 8),
)
REREADS = Counter(
    "callstream_transcription_rereads_total",
    "Two-pass finals decoded over the previous utterance's audio too (a sentence a pause "
    "had split), of which only the words after the previous final were emitted",
)
