"""The rig's audio check (tests/e2e/fork_sink.py) catches each way a frame can go wrong."""

from __future__ import annotations

from tests.e2e.fork_sink import Arrival, check_frames

SENT = [bytes([i]) * 172 for i in range(10)]


def arrived(*indices: int) -> list[Arrival]:
    return [Arrival(0.02 * n, SENT[i]) for n, i in enumerate(indices)]


def test_a_gapless_run_from_any_frame_passes() -> None:
    check = check_frames(SENT, arrived(3, 4, 5, 6))
    assert (check.frames, check.problem) == (4, "")
    assert abs(check.max_gap_s - 0.02) < 1e-9


def test_a_lost_frame_fails() -> None:
    assert check_frames(SENT, arrived(3, 4, 6)).problem == (
        "packet 2 after the first: sent packet 6, expected 5")


def test_reordered_and_repeated_frames_fail() -> None:
    assert "sent packet 5, expected 4" in check_frames(SENT, arrived(3, 5, 4)).problem
    assert "sent packet 3, expected 4" in check_frames(SENT, arrived(3, 3)).problem


def test_a_changed_byte_fails() -> None:
    bad = [Arrival(0.0, SENT[1]), Arrival(0.02, SENT[2][:-1] + b"\x00")]
    assert check_frames(SENT, bad).problem == (
        "packet 1 after the first: not one the caller sent")


def test_no_audio_fails() -> None:
    assert check_frames(SENT, []).problem == "no packet arrived"
    assert check_frames(SENT, [Arrival(0.0, b"x")]).problem == (
        "the first packet is none the caller sent")
