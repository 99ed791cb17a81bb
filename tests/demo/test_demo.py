"""``callstream demo --once`` end to end: a real server, app, bot, fork and caller.

The demo runs as a subprocess exactly as a newcomer runs it; these tests check its exit
code, its terminal view and its ``--json`` summary. A second run with a transcription
model that does not exist must fail, with the failing part named on one line.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from callstream.demo.audio import CALLER_TEXT, CALLER_WAV, GREETING_WAV
from callstream.demo.report import voiced_seconds, word_error_rate
from callstream.demo.runner import pick_port
from callstream.telephony.caller import load_wav, write_wav
from tests.helpers import free_port, free_udp_tcp_port

BARGE_IN_AT_S = 8  # the interactive test's caller speaks again this long after the answer
RUN_TIMEOUT_S = 150  # a run takes ~15 s alone; generous for a loaded 2-core machine


def run_demo(tmp_path: Path, *extra: str, env: dict[str, str] | None = None,
             http: str | None = None, sip: str | None = None,
             ) -> tuple[subprocess.CompletedProcess[str], dict[str, Any] | None]:
    out = tmp_path / "out.json"
    (tmp_path / "tmp").mkdir(exist_ok=True)  # the demo's temporary directories go here
    http = http or f"127.0.0.1:{free_port()}"
    sip = sip or f"127.0.0.1:{free_udp_tcp_port()}"
    proc = subprocess.run(
        [sys.executable, "-m", "callstream", "demo", "--once", "--json", str(out),
         "--http", http, "--sip", sip, *extra],
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=tmp_path,
        env={**os.environ, "TMPDIR": str(tmp_path / "tmp"), **(env or {})})
    summary = json.loads(out.read_text()) if out.exists() else None
    return proc, summary


@pytest.mark.slow
def test_demo_once_checks_every_part(tmp_path: Path) -> None:
    proc, summary = run_demo(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert summary is not None and summary["ok"] is True and summary["reason"] is None
    assert all(summary["checks"].values()) and len(summary["checks"]) == 9

    # What the newcomer sees: where everything is, the live events, the transcript.
    out = proc.stdout
    assert "/console" in out and "sip:demo@127.0.0.1:" in out and "API key" in out
    for line in ("call.initiated", "call.answered", "streaming.started", "call.fork.started",
                 "transcript  inbound interim", "transcript  inbound final",
                 "bot: mark 'greeting' echoed", "bot: mark 'reply-1' echoed", "call.hangup",
                 "counters: bot heard", "callstream demo: OK"):
        assert line in out, line

    # The summary: the transcript of the bundled speech, counters, events, timings.
    inbound = " ".join(summary["transcript"]["inbound"])
    assert word_error_rate(CALLER_TEXT, inbound) <= 0.35
    assert summary["transcript"]["interims"] > 0
    assert summary["transcript"]["outbound"]  # the greeting and the reply, transcribed
    counters = summary["counters"]
    assert counters["fork_rx_packets"] > 100 and counters["fork_tx_packets"] > 100
    assert counters["bot_replies"] >= 1 and counters["bot_marks_echoed"] >= 2
    assert counters["webhooks_refused"] == 0 and counters["webhooks_undelivered"] == 0
    assert counters["webhooks_verified"] >= len(summary["events"])
    assert counters["webhooks_delivered"] == counters["webhooks_verified"]
    events = summary["events"]
    assert events[0] == "call.initiated" and "call.hangup" in events
    assert {"call.answered", "streaming.started", "streaming.stopped", "call.fork.started",
            "call.fork.stopped", "call.transcription"} <= set(events)
    assert summary["call"]["status"] == "answered"
    assert summary["audio"]["heard_voiced_s"] > summary["audio"]["greeting_voiced_s"]
    timings = summary["timings"]
    assert timings["answered_s"] is not None and timings["first_final_s"] is not None
    # Its temporary data dir and the call's files are removed at exit.
    assert not list((tmp_path / "tmp").glob("callstream-demo-*"))


def test_demo_that_cannot_start_says_why_on_one_line(tmp_path: Path) -> None:
    proc, summary = run_demo(
        tmp_path, env={"CALLSTREAM_TRANSCRIPTION_MODEL": str(tmp_path / "no-model")})
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines() == [
        f"callstream demo: FAILED — could not start: {tmp_path / 'no-model'} is not a "
        "CTranslate2 Whisper model directory (it needs model.bin, config.json, "
        "tokenizer.json)."]
    assert "Traceback" not in proc.stderr
    assert summary is None
    assert not list((tmp_path / "tmp").glob("callstream-demo-*"))  # its temporary data dir is gone


@pytest.mark.parametrize("flag", ["--http", "--sip"])
def test_a_port_in_use_is_named_with_its_flag(tmp_path: Path, flag: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        proc, _ = run_demo(tmp_path, "--data-dir", str(tmp_path / "data"),
                           **{flag.strip("-"): address})
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines() == [
        f"callstream demo: FAILED — could not start: {address} is in use — is another "
        f"callstream running? use {flag} HOST:PORT, or leave it out to pick a free port"]
    assert "Traceback" not in proc.stderr


def test_bad_flags_exit_2(tmp_path: Path) -> None:
    for args in (["--log-level", "loud"], ["--json", str(tmp_path / "nowhere" / "x.json")]):
        proc = subprocess.run([sys.executable, "-m", "callstream", "demo", *args],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("callstream demo: bad --") or \
            proc.stderr.startswith("callstream demo: can't write --json")


def test_pick_port_takes_the_default_when_free_else_another() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        other = pick_port(taken, (socket.SOCK_STREAM,))
        assert other != taken
    port = free_port()
    assert pick_port(port, (socket.SOCK_STREAM,)) == port


class LineReader:
    """Collects a subprocess's stdout lines in a thread, so waits are bounded."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                left = deadline - time.monotonic()
                assert left > 0, f"no {text!r} in:\n" + "\n".join(self.lines[-40:])
                self._changed.wait(left)

    def join(self) -> None:
        self._thread.join(10)

    @property
    def text(self) -> str:
        with self._changed:
            return "\n".join(self.lines)


@pytest.mark.slow
def test_demo_answers_any_caller_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """The interactive demo: a second program calls the printed SIP URI and hears the bot;
    talking over the bot's reply clears it."""
    (tmp_path / "tmp").mkdir()
    with subprocess.Popen(
        [sys.executable, "-m", "callstream", "demo", "--http", f"127.0.0.1:{free_port()}",
         "--sip", f"127.0.0.1:{free_udp_tcp_port()}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "TMPDIR": str(tmp_path / "tmp")},
    ) as proc:
        try:
            reader = LineReader(proc)
            uri = reader.wait_for("call it", timeout=90).split()[2]
            assert uri.startswith("sip:demo@127.0.0.1:")
            heard = tmp_path / "heard.wav"
            # The sentence, then again 8 s after the answer, while the bot plays it back
            # (the greeting ends at ~6.4 s): barge-in.
            speech, rate = load_wav(CALLER_WAV, 8000)
            gap = b"\0\0" * (BARGE_IN_AT_S * rate)
            script = speech + gap[: 2 * BARGE_IN_AT_S * rate - len(speech)] + speech
            write_wav(tmp_path / "script.wav", script, rate)
            call = subprocess.run(
                [sys.executable, "-m", "callstream", "call", uri, "--play",
                 str(tmp_path / "script.wav"), "--record", str(heard), "--duration", "21",
                 "--quiet"],
                capture_output=True, text=True, timeout=90)
            assert call.returncode == 0, call.stderr
            reader.wait_for("call.hangup", timeout=30)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        reader.join()
    out = reader.text
    for line in ("call.answered", "streaming.started", "call.fork.started",
                 "bot: mark 'greeting' echoed", "bot: clear (the caller talked over the reply)",
                 "bot: mark 'reply-1' echoed", "bot: mark 'reply-2' echoed",
                 "transcript  inbound final", "stopping…"):
        assert line in out, line
    # The cleared reply's mark came back at the clear, before the second utterance ended.
    assert out.index("bot: clear") < out.index("bot: mark 'reply-1' echoed") < out.index(
        "playing back what they said (reply-2)")
    # The caller heard the greeting and then its own words played back.
    pcm, rate = load_wav(heard)
    greeting, _ = load_wav(GREETING_WAV, rate)
    speech, _ = load_wav(CALLER_WAV, rate)
    assert voiced_seconds(pcm, rate) >= (0.8 * voiced_seconds(greeting, rate)
                                         + 0.5 * voiced_seconds(speech, rate))
    assert not list((tmp_path / "tmp").glob("callstream-demo-*"))
