"""Stream reconnect and the inbound latency bound on real calls (not collected by pytest).

Run: ``python bench/stream_resilience.py [--json out.json]``

Each scenario is one call: a real ``callstream serve``, SIPp answering a dial whose SDP
points at a test RTP socket that talks (seeded noise, so every 20 ms frame is known), and
a real WebSocket consumer (tests/ws_consumer.py).

* **Reconnect**, for several outages: the consumer cuts its TCP connection (no close
  frame) 1 s into the call and refuses upgrades for ``away`` seconds. Reported: time from
  the cut to the resumed ``start``, connect attempts, frames replayed, and of the frames
  the caller sent: received, lost, duplicated; and whether ``sequence_number`` has a gap.
* **Bound**: the consumer (4 KiB receive buffer and no read-ahead; or the system's
  default buffer and the WebSocket library's default read-ahead of 16 frames) stops
  reading for ``pause`` seconds, with the bound (0.2 s, the default) and without
  (10 s). Reported: frames dropped as overdue, and of the frames read after the pause
  how many were over 1 s old, and the oldest.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.conftest import Rig, make_rig
from tests.e2e.test_stream_edges import noise, settle
from tests.e2e.test_streaming import peer_call
from tests.ws_consumer import Connection, ws_consumer

OUTAGES = (0.0, 0.5, 1.0, 3.0)
PAUSES = (1.0, 3.0)


def metric(rig: Rig, name: str, labels: str = "") -> float:
    with rig.server.client() as http:
        text = http.get("/metrics").text
    match = re.search(rf"^{re.escape(name + labels)} ([0-9.e+]+)$", text, re.M)
    return float(match[1]) if match else 0.0


def payloads(conn: Connection) -> list[bytes]:
    return [base64.b64decode(f["media"]["payload"]) for f in conn.of("media")]


def reconnect_round(rig: Rig, away: float) -> dict[str, Any]:
    attempts = metric(rig, "callstream_stream_reconnect_attempts_total")
    replayed = metric(rig, "callstream_stream_frames_replayed_total")
    with ws_consumer() as consumer, peer_call(rig) as pc:
        rig.sdk.calls.actions.start_streaming(
            pc.ccid, stream_url=consumer.url, stream_codec="PCMU",
            extra_body={"stream_reconnect_seconds": 10})
        first = consumer.wait_connection()
        first.wait_for(lambda c: "start" in c.events())
        talker = threading.Thread(target=pc.peer.play, args=(noise(3.0 + away),))
        talker.start()
        time.sleep(1.0)
        consumer.refuse = True
        cut = time.monotonic()
        consumer.abort(first)
        time.sleep(away)
        consumer.refuse = False
        second = consumer.wait_connection(1)
        second.wait_for(lambda c: "start" in c.events())
        resumed_after = second.times[second.events().index("start")] - cut
        talker.join()
        settle(second)
        rig.sdk.calls.actions.hangup(pc.ccid)
        second.done.wait(10)
    sent = list(pc.peer.sent)
    got = payloads(first) + payloads(second)
    numbers = [int(f["sequence_number"]) for f in first.frames + second.frames
               if "sequence_number" in f]
    return {
        "away_s": away,
        "resumed_after_s": round(resumed_after, 3),
        "attempts": int(metric(rig, "callstream_stream_reconnect_attempts_total") - attempts),
        "replayed": int(metric(rig, "callstream_stream_frames_replayed_total") - replayed),
        "sent": len(sent),
        "received": len(got),
        "lost": len(set(sent) - set(got)),
        "duplicated": len(got) - len(set(got)),
        "sequence_gap": numbers != list(range(1, len(numbers) + 1)),
    }


def bound_round(rig: Rig, pause: float, label: str, rcvbuf: int | None = 4096
                ) -> dict[str, Any]:
    clip = noise(pause + 4.0)
    # A small receive buffer goes with no read-ahead; else the library's default (16).
    read_ahead = 1 if rcvbuf is not None else 16
    with ws_consumer(rcvbuf=rcvbuf, max_queue=read_ahead) as consumer, peer_call(rig) as pc:
        consumer.pause_after = 30
        consumer.pause_secs = pause
        rig.sdk.calls.actions.start_streaming(pc.ccid, stream_url=consumer.url,
                                              stream_codec="PCMU")
        conn = consumer.wait_connection()
        conn.wait_for(lambda c: "start" in c.events())
        began = time.monotonic()
        pc.peer.play(clip)
        settle(conn)
        stream_id = conn.of("start")[0]["stream_id"]
        overdue = metric(rig, "callstream_stream_frames_overdue_total",
                         f'{{stream_id="{stream_id}"}}')
        rig.sdk.calls.actions.hangup(pc.ccid)
        conn.done.wait(10)
    assert conn.paused is not None
    where = {payload: i for i, payload in enumerate(pc.peer.sent)}
    after = [at - (began + where[base64.b64decode(f["media"]["payload"])] * 0.02)
             for f, at in zip(conn.frames, conn.times, strict=True)
             if f["event"] == "media" and at >= conn.paused[1]]
    return {"bound": label, "rcvbuf": rcvbuf or "default", "pause_s": pause,
            "overdue_dropped": int(overdue),
            "read_after_pause": len(after), "over_1s_old": sum(a > 1.0 for a in after),
            "oldest_s": round(max(after), 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    results: dict[str, Any] = {"reconnect": [], "bound": []}
    with tempfile.TemporaryDirectory() as tmp:
        with make_rig(Path(tmp) / "a", (39850, 39899)) as rig:
            for away in OUTAGES:
                results["reconnect"].append(reconnect_round(rig, away))
            for pause in PAUSES:
                results["bound"].append(bound_round(rig, pause, "0.2 s"))
            results["bound"].append(bound_round(rig, PAUSES[-1], "0.2 s", rcvbuf=None))
        env = {"CALLSTREAM_STREAM_LATENCY_BOUND_SECS": "10"}
        with make_rig(Path(tmp) / "b", (39850, 39899), env) as rig:
            for pause in PAUSES:
                results["bound"].append(bound_round(rig, pause, "10 s (off)"))
            results["bound"].append(bound_round(rig, PAUSES[-1], "10 s (off)", rcvbuf=None))

    print("Reconnect (consumer cuts its TCP connection, refuses upgrades for `away` s)")
    print(f"{'away s':>7} {'resumed after s':>16} {'attempts':>9} {'replayed':>9} "
          f"{'sent':>5} {'received':>9} {'lost':>5} {'dup':>4} {'seq gap':>8}")
    for r in results["reconnect"]:
        print(f"{r['away_s']:>7} {r['resumed_after_s']:>16} {r['attempts']:>9} "
              f"{r['replayed']:>9} {r['sent']:>5} {r['received']:>9} {r['lost']:>5} "
              f"{r['duplicated']:>4} {r['sequence_gap']!s:>8}")
    print("\nInbound bound (consumer stops reading for `pause` s)")
    print(f"{'bound':>11} {'rcvbuf':>8} {'pause s':>8} {'overdue dropped':>16} "
          f"{'read after':>11} {'> 1 s old':>10} {'oldest s':>9}")
    for r in results["bound"]:
        print(f"{r['bound']:>11} {r['rcvbuf']:>8} {r['pause_s']:>8} {r['overdue_dropped']:>16} "
              f"{r['read_after_pause']:>11} {r['over_1s_old']:>10} {r['oldest_s']:>9}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
