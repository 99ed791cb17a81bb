"""Helpers for whole-call audio tests: `callstream call` as a process, pcaps, comparisons."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from callstream.media.codecs import get_codec
from tests.audio import read_wav, rtp_packets, speech, write_pcap
from tests.e2e.conftest import Rig, make_rig
from tests.receiver import Delivery

#: The servers of these tests buffer 120 ms of jitter rather than 40: the machines
#: that run them are shared and busy, and bit-exact checks must not trip on a late tick.
JITTER_BUFFER_MS = "120"


def media_rig(tmp_path_factory: pytest.TempPathFactory, rtp_ports: tuple[int, int] = (33000, 33999),
              **env: str) -> Iterator[Rig]:
    """Like conftest's ``rig``, with a deeper jitter buffer and its own RTP ports."""
    env = {"CALLSTREAM_JITTER_BUFFER_MS": JITTER_BUFFER_MS, **env}
    with make_rig(tmp_path_factory.mktemp("e2e-media"), rtp_ports, env) as rig:
        yield rig


@dataclass
class CallerProcess:
    """`python -m callstream call ...` running; its JSON summary once it ends."""

    proc: subprocess.Popen[str]
    args: list[str]

    def finish(self, timeout: float = 30.0) -> tuple[int, dict[str, Any], str]:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError(f"callstream call did not end: {self.args}\n{err}") from None
        summary = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        return self.proc.returncode, summary, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()  # closes its pipes, ended or not (else a ResourceWarning)


def start_caller(target: str, *args: str) -> CallerProcess:
    argv = [sys.executable, "-m", "callstream", "call", target, *args]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return CallerProcess(proc, argv)


def run_caller(target: str, *args: str, timeout: float = 30.0) -> tuple[int, dict[str, Any], str]:
    return start_caller(target, *args).finish(timeout)


def incoming(rig: Rig, to: str, timeout: float = 20.0) -> str:
    """The call_control_id of the incoming call to ``to`` (its user part)."""
    found = rig.hooks.wait_for(
        lambda d: d.event_type == "call.initiated" and d.payload.get("to") == to
        and d.payload.get("direction") == "incoming", timeout)
    return str(found.payload["call_control_id"])


def answer(rig: Rig, ccid: str) -> None:
    rig.sdk.calls.actions.answer(ccid)


def bridge(rig: Rig, a: str, b: str, timeout: float = 5.0) -> None:
    """Bridge two calls as soon as both are answered (90034 until then)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            rig.sdk.calls.actions.bridge(a, call_control_id_to_bridge_with=b)
            return
        except Exception as exc:  # the SDK's typed 422 while a leg is still being answered
            body = getattr(exc, "body", None)
            code = body["errors"][0]["code"] if isinstance(body, dict) else None
            if code != "90034" or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def events_for(rig: Rig, event_type: str, ccid: str) -> list[Delivery]:
    return [d for d in rig.hooks.events(event_type) if d.payload.get("call_control_id") == ccid]


# -- audio ---------------------------------------------------------------------------


def clip(name: str = "beckett", seconds: float = 3.0, rate: int = 8000,
         start: float = 0.0) -> bytes:
    """A whole number of 20 ms frames of real speech."""
    pcm = speech(name, rate)
    frame = 2 * rate // 50
    first = int(start * 50) * frame
    return pcm[first:first + int(seconds * 50) * frame]


def through_codec(pcm: bytes, codec: str) -> bytes:
    """What a receiver decodes after ``pcm`` went over the wire in ``codec``."""
    info = get_codec(codec)
    return info.new_decoder().decode(info.new_encoder().encode(pcm))


def speech_pcap(path: Path, pcm: bytes, codec: str) -> Path:
    return write_pcap(path, rtp_packets(pcm, codec))


def samples(pcm: bytes) -> npt.NDArray[np.int32]:
    return np.frombuffer(pcm, "<i2").astype(np.int32)


def onset(x: npt.NDArray[np.int32], floor: int = 8) -> int:
    """Index of the first sample louder than ``floor`` (A-law's silence decodes to ±8)."""
    loud = np.nonzero(np.abs(x) > floor)[0]
    if not len(loud):
        raise AssertionError("no audio above silence")
    return int(loud[0])


#: Most frames in a row a receiver's jitter buffer may insert while a packet is late
#: (its concealment, then silence until playout restarts).
MAX_INSERTED_RUN = 50


def match_frames(reference: bytes, recording: bytes, frame: int = 320) -> tuple[int, int]:
    """Check that every 20 ms frame of ``reference`` is in ``recording``, bit-exact, in order.

    Matching starts at the reference's first audible frame. Frames the receiver
    inserted between two sent frames (its jitter buffer concealing a late packet on a
    busy machine) are counted, not forgiven silently: the caller asserts a bound.

    Returns:
        (frames matched, frames inserted).

    Raises:
        AssertionError: a sent frame never arrived intact.
    """
    ref = samples(reference)
    first = onset(ref) * 2 // frame
    count = len(reference) // frame
    want = reference[first * frame:(first + 1) * frame]
    pos = recording.find(want)
    while pos >= 0 and pos % 2:
        pos = recording.find(want, pos + 1)
    if pos < 0:
        raise AssertionError(f"the first audible frame ({first}) never arrived intact")
    inserted = 0
    for k in range(first, count):
        want = reference[k * frame:(k + 1) * frame]
        for _ in range(MAX_INSERTED_RUN + 1):
            if recording[pos:pos + frame] == want:
                break
            if len(recording) < pos + frame:
                raise AssertionError(f"recording ends before frame {k} of {count}")
            pos += frame
            inserted += 1
        else:
            raise AssertionError(f"frame {k} of {count} never arrived intact")
        pos += frame
    return count - first, inserted


def assert_bit_exact(reference: bytes, recording: Path, label: str = "",
                     max_inserted: int = 10) -> int:
    """The recording holds every sent frame of ``reference`` bit-exact and in order."""
    got, _ = read_wav(recording)
    frames, inserted = match_frames(reference, got)
    print(f"\n[measured] {label or recording.name}: {frames} frames bit-exact, "
          f"{inserted} inserted by jitter-buffer underruns")
    assert inserted <= max_inserted, f"{inserted} frames inserted: the audio stalled"
    return frames


def contains(recording: bytes, segment: bytes) -> bool:
    """Whether ``segment`` appears sample-aligned in ``recording``."""
    at = recording.find(segment)
    while at >= 0 and at % 2:
        at = recording.find(segment, at + 1)
    return at >= 0
