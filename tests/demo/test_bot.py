"""The demo bot's core (sans-I/O): greeting, utterances, replies, marks, barge-in."""

from __future__ import annotations

import base64
import json
import math

import numpy as np
import pytest

from callstream.demo.bot import (
    FRAME_BYTES,
    GREETING_MARK,
    MAX_FRAME_BYTES,
    MAX_MESSAGE_BYTES,
    Clear,
    EchoBot,
    Play,
    StreamMark,
    StreamMedia,
    StreamStart,
    StreamStop,
    level_dbfs,
    read_frame,
    to_frames,
)
from callstream.media.codecs.g711 import ulaw_encode

SILENCE = ulaw_encode(b"\0\0" * FRAME_BYTES)


def tone(amplitude: float = 0.3, index: int = 0) -> bytes:
    t = (np.arange(FRAME_BYTES) + index * FRAME_BYTES) / 8000.0
    pcm = (amplitude * 32767 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()
    return ulaw_encode(pcm)


def feed(bot: EchoBot, frames: list[bytes]) -> list[Play | Clear]:
    actions: list[Play | Clear] = []
    for frame in frames:
        actions += bot.inbound(frame)
    return actions


def test_level_of_silence_and_tone() -> None:
    assert level_dbfs(b"") == -math.inf
    assert level_dbfs(SILENCE) < -60
    assert -14 < level_dbfs(tone(0.3)) < -10  # a sine at 0.3 FS: -13.5 dBFS RMS


def test_greets_first_with_a_mark() -> None:
    bot = EchoBot(b"greet")
    assert bot.start() == [Play(b"greet", GREETING_MARK)]
    assert bot.stats.marks_sent == 1
    assert not bot.replying  # the greeting is not a reply: it is never cleared


def test_an_utterance_is_played_back_after_the_pause() -> None:
    bot = EchoBot(b"g")
    speech = [tone(index=i) for i in range(50)]  # 1 s
    assert feed(bot, [SILENCE] * 20 + speech) == []
    actions = feed(bot, [SILENCE] * 34)  # 0.68 s: not yet a pause
    assert actions == []
    actions = feed(bot, [SILENCE])  # 0.7 s of quiet ends it
    assert len(actions) == 1
    play = actions[0]
    assert isinstance(play, Play) and play.mark == "reply-1"
    # Pre-roll (200 ms) + the speech + 5 frames of the trailing quiet, byte for byte.
    assert play.audio == b"".join([SILENCE] * 10 + speech + [SILENCE] * 5)
    assert bot.replying
    assert bot.stats.utterances == bot.stats.replies == 1


def test_short_bursts_are_not_repeated() -> None:
    bot = EchoBot(b"g")
    assert feed(bot, [tone()] * 5 + [SILENCE] * 60) == []  # 100 ms < MIN_SPEECH_S
    assert bot.stats.replies == 0


def test_a_long_utterance_is_cut_at_the_limit() -> None:
    bot = EchoBot(b"g", max_utterance_s=1.0)
    actions = feed(bot, [tone(index=i) for i in range(60)])
    assert len(actions) == 1 and isinstance(actions[0], Play)
    assert len(actions[0].audio) == 50 * FRAME_BYTES
    # Speech that goes on is the same turn: it does not clear its own first part.
    assert feed(bot, [tone()] * 10) == []
    assert bot.stats.clears == 0


def test_talking_over_a_reply_clears_it_and_marks_end_the_reply() -> None:
    bot = EchoBot(b"g")
    feed(bot, [tone()] * 30 + [SILENCE] * 35)
    assert bot.replying
    actions = bot.inbound(tone())
    assert actions == [Clear("the caller talked over the reply")]
    assert bot.stats.clears == 1
    bot.mark("reply-1")  # callstream echoes the cleared mark at once
    assert not bot.replying
    assert bot.stats.marks_echoed == 1
    bot.mark("reply-1")  # an echo twice, or an unknown name, counts once
    bot.mark("nonsense")
    assert bot.stats.marks_echoed == 1


def test_talking_over_the_greeting_does_not_clear_it() -> None:
    bot = EchoBot(b"g")
    bot.start()
    assert feed(bot, [tone()] * 30) == []
    assert bot.stats.clears == 0


def test_oversized_payloads_are_ignored() -> None:
    bot = EchoBot(b"g")
    assert bot.inbound(b"\x00" * (MAX_FRAME_BYTES + 1)) == []
    assert bot.stats.ignored == 1 and bot.stats.frames_in == 0


def test_frames_on_the_wire() -> None:
    media, mark = to_frames(Play(b"\x01\x02", "reply-1"))
    assert json.loads(media) == {"event": "media",
                                 "media": {"payload": base64.b64encode(b"\x01\x02").decode()}}
    assert json.loads(mark) == {"event": "mark", "mark": {"name": "reply-1"}}
    assert [json.loads(f) for f in to_frames(Clear("x"))] == [{"event": "clear"}]


def test_reading_callstreams_frames() -> None:
    start = {"event": "start", "sequence_number": "1", "stream_id": "s",
             "start": {"call_control_id": "v3:x", "media_format": {
                 "encoding": "PCMU", "sample_rate": 8000, "channels": 1}}}
    assert read_frame(json.dumps(start)) == StreamStart("v3:x", "PCMU")
    media = {"event": "media", "media": {"track": "inbound", "chunk": "1", "timestamp": "0",
                                         "payload": base64.b64encode(b"\xff" * 160).decode()}}
    assert read_frame(json.dumps(media).encode()) == StreamMedia(b"\xff" * 160)
    assert read_frame(json.dumps({"event": "mark", "mark": {"name": "reply-1"}})) == (
        StreamMark("reply-1"))
    assert read_frame('{"event":"stop","stop":{}}') == StreamStop()


@pytest.mark.parametrize("message", [
    "not json", "[]", '{"event":"connected","version":"1.0.0"}',
    '{"event":"media","media":{"track":"outbound","payload":"AAA="}}',
    '{"event":"media","media":{"payload":"not base64!"}}',
    '{"event":"media","media":"nope"}', '{"event":5}', '{"event":"start"}',
    '{"event":"media","media":{"payload":""}}', '{"event":"dtmf","dtmf":{"digit":"1"}}',
    '{"event":"media","media":{"payload":"' + "A" * MAX_MESSAGE_BYTES + '"}}',
])
def test_frames_the_bot_does_not_use_are_none(message: str) -> None:
    assert read_frame(message) is None


def test_a_start_without_a_media_format_has_no_encoding() -> None:
    assert read_frame('{"event":"start","start":{"media_format":3}}') == StreamStart("", "")
    assert read_frame('{"event":"stop"}') == StreamStop()
