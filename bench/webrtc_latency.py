"""Mouth-to-ear latency a browser hears through callstream (not collected by pytest).

Run: ``python bench/webrtc_latency.py [--bursts 20] [--json out.json]``

Headless Chromium (Debian's /usr/bin/chromium via Playwright) sends 100 ms tone bursts
from a Web Audio graph and times, on the same AudioContext clock, when each comes back:

* **direct** — two RTCPeerConnections in the page, one sending to the other: the
  browser's own path (capture, Opus, jitter buffer, playout into Web Audio);
* **callstream** — a call with ``/static/callstream-webrtc.js`` to a real server whose
  application answered with a bidirectional stream (``--codec``: L16, the leg's own
  16 kHz, or PCMU, both ways) to a WebSocket bot that sends each frame of a burst straight
  back (its own time: the bot's ``reply`` is inline, microseconds).

callstream's added latency is the difference of the medians: browser -> hub -> stream
-> bot -> playback -> hub -> browser, less what the browser costs on its own; "steady"
takes the last half of the bursts, once the browser's jitter buffer has drained what the
call's set-up left in it.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from playwright.sync_api import sync_playwright

from callstream.media.codecs import get_codec
from callstream.media.codecs.pcm import byteswap
from tests.e2e.conftest import make_rig
from tests.ws_consumer import Connection, Consumer, ws_consumer

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--autoplay-policy=no-user-gesture-required"]

#: The rate of each stream codec (the bot echoes what it gets, so it plays at that rate:
#: L16 streams are 16 kHz, and ``stream_bidirectional_sampling_rate`` defaults to 8000;
#: the SDK's ``answer`` does not name that field yet).
STREAM_RATES = {"L16": 16000, "PCMU": 8000}
#: The bot echoes the bursts, not the silence between them, as a bot speaks and pauses.
#: Echoing every frame would keep a queue in front of each reply for good: the audio from
#: before the socket opened (delivered in one burst) and any burst of network jitter,
#: since a queue that never runs dry drains at exactly the rate it fills.
LOUD_PEAK = 1000
#: Page side: a gated 1 kHz oscillator into a MediaStream, and a worklet that stamps
#: (AudioContext time) the first sample of a burst that comes back.
SETUP_JS = """async () => {
  const ctx = new AudioContext({ sampleRate: 48000 });
  const code = `class Detector extends AudioWorkletProcessor {
    constructor() {
      super(); this.armed = false; this.port.onmessage = () => { this.armed = true; };
    }
    process(inputs) {
      const ch = inputs[0][0];
      if (ch && this.armed) for (let i = 0; i < ch.length; i++) if (Math.abs(ch[i]) > 0.05) {
        this.port.postMessage(currentTime + i / sampleRate); this.armed = false; break;
      }
      return true;
    }
  }
  registerProcessor("detector", Detector);`;
  const blob = new Blob([code], { type: "text/javascript" });
  await ctx.audioWorklet.addModule(URL.createObjectURL(blob));
  const osc = ctx.createOscillator();
  osc.frequency.value = 1000;
  const gate = ctx.createGain();
  gate.gain.value = 0;
  const dest = ctx.createMediaStreamDestination();
  osc.connect(gate).connect(dest);
  osc.start();
  window.bench = { ctx, gate, dest };
}"""

LISTEN_JS = """(stream) => {
  const { ctx } = window.bench;
  const sink = new Audio(); sink.muted = true; sink.srcObject = stream; sink.play();
  const detector = new AudioWorkletNode(ctx, "detector");
  ctx.createMediaStreamSource(stream).connect(detector);
  window.bench.detector = detector;
}"""

BURSTS_JS = """async (count) => {
  const { ctx, gate, detector } = window.bench;
  const results = [];
  for (let n = 0; n < count; n++) {
    const heard = new Promise((resolve) => {
      detector.port.onmessage = (event) => resolve(event.data);
      setTimeout(() => resolve(null), 2000);
    });
    detector.port.postMessage("arm");
    const start = ctx.currentTime + 0.05;
    gate.gain.setValueAtTime(0.5, start);
    gate.gain.setValueAtTime(0, start + 0.1);
    const at = await heard;
    results.push(at === null ? null : (at - start) * 1000);
    await new Promise((resolve) => setTimeout(resolve, 700));
  }
  return results;
}"""

#: The receiving peer connection's jitter buffer: mean delay of what it played, in ms.
JITTER_JS = """async (pc) => {
  let delay = null;
  (await pc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "audio" && r.jitterBufferEmittedCount)
      delay = 1000 * r.jitterBufferDelay / r.jitterBufferEmittedCount;
  });
  return delay;
}"""

DIRECT_JS = """async () => {
  const a = new RTCPeerConnection(), b = new RTCPeerConnection();
  a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
  b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
  const got = new Promise((resolve) => {
    b.ontrack = (e) => resolve(e.streams[0] || new MediaStream([e.track]));
  });
  a.addTrack(window.bench.dest.stream.getAudioTracks()[0], window.bench.dest.stream);
  await a.setLocalDescription(await a.createOffer());
  await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription(await b.createAnswer());
  await a.setRemoteDescription(b.localDescription);
  window.direct = { a, b };
  return got;
}"""


#: Big-endian L16 or PCMU payloads to little-endian PCM.
DECODERS = {"L16": byteswap, "PCMU": get_codec("PCMU").new_decoder().decode}
CODEC: list[str] = []  # the run's stream codec (--codec)


def echo(consumer: Consumer, conn: Connection, frame: dict[str, Any]) -> list[str]:
    media = frame.get("media")
    if frame.get("event") == "media" and isinstance(media, dict) and media.get(
            "track") == "inbound" and loud(media["payload"]):
        return [json.dumps({"event": "media", "media": {"payload": media["payload"]}})]
    return []


def loud(payload: str) -> bool:
    """Whether a media payload (L16 big-endian or PCMU) carries a burst."""
    raw = base64.b64decode(payload)
    pcm = DECODERS[CODEC[0]](raw) if CODEC else raw
    return bool(np.abs(np.frombuffer(pcm, dtype="<i2")).max(initial=0) > LOUD_PEAK)


def fmt(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "-"


def summary(values: list[float | None], jitter_ms: float | None) -> dict[str, Any]:
    got = sorted(v for v in values if v is not None)
    # The last half: after the browser's jitter buffer has drained what the call's
    # set-up left in it (docs/webrtc.md, "Figures").
    steady = sorted(v for v in values[len(values) // 2:] if v is not None)
    return {"bursts": len(values), "heard": len(got), "browser_jitter_buffer_ms": jitter_ms,
            "first_ms": values[0] if values else None,
            "steady_median_ms": statistics.median(steady) if steady else None,
            "median_ms": statistics.median(got) if got else None,
            "p90_ms": got[int(0.9 * (len(got) - 1))] if got else None,
            "min_ms": got[0] if got else None, "all_ms": values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bursts", type=int, default=20)
    parser.add_argument("--codec", default="L16", choices=["L16", "PCMU"],
                        help="the stream's codec both ways (L16: the leg's own, no resampling)")
    parser.add_argument("--json")
    args = parser.parse_args()
    CODEC.append(args.codec)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, make_rig(
            Path(tmp), (39900, 39999)) as rig, ws_consumer() as bot, sync_playwright() as p:
        bot.reply = echo
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page()
        page.set_default_timeout(60_000)
        page.goto(rig.server.base_url + "/healthz")
        page.add_script_tag(url="/static/callstream-webrtc.js")
        page.evaluate(SETUP_JS)

        page.evaluate("async () => { window.bench.direct = await (" + DIRECT_JS + ")(); }")
        page.evaluate("() => (" + LISTEN_JS + ")(window.bench.direct)")
        time.sleep(1.0)
        bursts = page.evaluate(BURSTS_JS, args.bursts)
        results["direct"] = summary(bursts, page.evaluate(JITTER_JS, page.evaluate_handle(
            "window.direct.b")))
        page.evaluate("() => { window.direct.a.close(); window.direct.b.close(); }")

        with rig.server.client() as api:
            token = api.post("/v2/webrtc/tokens", json={"from": "bench"}).json()["data"]["token"]
        ccid = page.evaluate("""async (token) => {
            window.call = await CallstreamWebRTC.call({ token, stream: window.bench.dest.stream });
            return window.call.callControlId;
        }""", token)
        # Play the call from its first packet, as a page's <audio> would: a track nobody
        # plays piles its packets up in Chromium's jitter buffer, which then takes many
        # seconds to drain (that was most of the first bursts' delay before).
        page.evaluate("() => (" + LISTEN_JS + ")(window.call.remoteStream)")
        rig.hooks.wait_event("call.initiated", ccid)
        rig.sdk.calls.actions.answer(
            ccid, stream_url=bot.url, stream_track="inbound_track", stream_codec=args.codec,
            stream_bidirectional_mode="rtp", stream_bidirectional_codec=args.codec,
            extra_body={"stream_bidirectional_sampling_rate": STREAM_RATES[args.codec]})
        rig.hooks.wait_event("call.answered", ccid, timeout=60)
        bot.wait_connection(timeout=60)
        time.sleep(1.0)
        bursts = page.evaluate(BURSTS_JS, args.bursts)
        results["callstream"] = summary(bursts, page.evaluate(JITTER_JS, page.evaluate_handle(
            "window.call.pc")))
        page.evaluate("window.call.hangUp()")
        browser.close()
    direct, through = results["direct"]["median_ms"], results["callstream"]["median_ms"]
    if direct is not None and through is not None:
        results["added_ms"] = through - direct
    direct, through = (results[name]["steady_median_ms"] for name in ("direct", "callstream"))
    if direct is not None and through is not None:
        results["added_steady_ms"] = through - direct
    print(f"{'path':<12} {'heard':>6} {'first ms':>9} {'median ms':>10} {'p90 ms':>8} "
          f"{'min ms':>8} {'steady ms':>10} {'browser jitter buffer ms':>25}")
    for name in ("direct", "callstream"):
        row = results[name]
        print(f"{name:<12} {row['heard']:>3}/{row['bursts']:<2} {fmt(row['first_ms']):>9} "
              f"{fmt(row['median_ms']):>10} {fmt(row['p90_ms']):>8} {fmt(row['min_ms']):>8} "
              f"{fmt(row['steady_median_ms']):>10} {fmt(row['browser_jitter_buffer_ms']):>25}")
    if "added_ms" in results:
        print(f"added by callstream (median): {results['added_ms']:.1f} ms")
    if "added_steady_ms" in results:
        print(f"added by callstream (steady median): {results['added_steady_ms']:.1f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
