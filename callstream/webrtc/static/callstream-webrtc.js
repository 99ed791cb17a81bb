// callstream-webrtc.js: place a call to a callstream server from a web page.
// No build step, no dependencies: load it with <script src="/static/callstream-webrtc.js">
// and call `await CallstreamWebRTC.call({token})` (docs/webrtc.md).
//
// The offer goes to POST /v2/webrtc/sessions (WHIP-style: SDP in, SDP out, ICE candidates
// gathered before the POST, no trickle); hangUp() sends DELETE to the session's URL.
(function (global) {
  "use strict";

  const SESSIONS = "/v2/webrtc/sessions";

  function iceGathered(pc, timeoutMs) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        if (pc.iceGatheringState === "complete") {
          pc.removeEventListener("icegatheringstatechange", done);
          resolve();
        }
      };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, timeoutMs);  // send what we have: host candidates come first
    });
  }

  class Call {
    constructor(pc, sender, local, ownsLocal, remote, location, callControlId) {
      this.pc = pc;
      this.sender = sender;
      this.localStream = local;
      this.remoteStream = remote;
      this.location = location;
      this.callControlId = callControlId;
      this.ended = false;
      this.onended = null;  // called once with a reason: "hangup", "remote", "failed"
      this._ownsLocal = ownsLocal;
      const watch = () => {
        const dtls = sender.transport && sender.transport.state;
        if (dtls === "closed" || dtls === "failed") this._end("remote");
        else if (pc.connectionState === "failed") this._end("failed");
      };
      pc.addEventListener("connectionstatechange", watch);
      if (sender.transport) sender.transport.addEventListener("statechange", watch);
    }

    // Send DTMF digits (0-9 * # A-D) as RFC 4733 telephone-events.
    sendDtmf(digits, durationMs = 100, gapMs = 70) {
      if (!this.sender.dtmf || !this.sender.dtmf.canInsertDTMF) return false;
      this.sender.dtmf.insertDTMF(digits, durationMs, gapMs);
      return true;
    }

    // Mute (true) or unmute (false) the microphone; the call stays up.
    mute(on) {
      for (const track of this.localStream.getAudioTracks()) track.enabled = !on;
    }

    get muted() {
      return this.localStream.getAudioTracks().every((track) => !track.enabled);
    }

    // Audio levels 0..1 of what we send (input) and what we hear (output).
    async levels() {
      const out = { input: 0, output: 0 };
      (await this.pc.getStats()).forEach((report) => {
        if (report.type === "media-source" && report.kind === "audio") out.input = report.audioLevel || 0;
        if (report.type === "inbound-rtp" && report.kind === "audio") out.output = report.audioLevel || 0;
      });
      return out;
    }

    // Hang up: the server ends the call (call.hangup) and the connection closes.
    async hangUp() {
      if (this.ended) return;
      this._end("hangup");
      try {
        await fetch(this.location, { method: "DELETE", keepalive: true });
      } catch (err) {
        // The peer connection is closed either way; the server sees it go.
      }
    }

    _end(reason) {
      if (this.ended) return;
      this.ended = true;
      this.pc.close();
      if (this._ownsLocal) for (const track of this.localStream.getTracks()) track.stop();
      if (this.onended) this.onended(reason);
    }
  }

  // Place a call. options:
  //   token       from POST /v2/webrtc/tokens (made by your backend), or
  //   apiKey      an API key (only where the page is yours alone: it can do anything)
  //   server      the server's origin ("" for the page's own)
  //   stream      a MediaStream to send (default: the microphone)
  //   audio       an <audio> element to play the call in (autoplay)
  //   iceServers  RTCIceServer list (default: none, enough on loopback and LANs)
  //   query       with apiKey: {connection_id, from, to}
  async function call(options) {
    const server = options.server || "";
    const ownsLocal = !options.stream;
    const local = options.stream || await navigator.mediaDevices.getUserMedia({ audio: true });
    const pc = new RTCPeerConnection({ iceServers: options.iceServers || [] });
    const remote = new MediaStream();
    pc.addEventListener("track", (event) => {
      remote.addTrack(event.track);
      if (options.audio) options.audio.srcObject = remote;
    });
    const sender = pc.addTrack(local.getAudioTracks()[0], local);
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await iceGathered(pc, 2000);
      const query = options.apiKey && options.query ? "?" + new URLSearchParams(options.query) : "";
      const response = await fetch(server + SESSIONS + query, {
        method: "POST",
        headers: {
          "content-type": "application/sdp",
          authorization: "Bearer " + (options.token || options.apiKey),
        },
        body: pc.localDescription.sdp,
      });
      const text = await response.text();
      if (response.status !== 201) {
        let detail = text;
        try { detail = JSON.parse(text).errors[0].detail; } catch (err) { /* not JSON */ }
        throw new Error("callstream refused the call (" + response.status + "): " + detail);
      }
      await pc.setRemoteDescription({ type: "answer", sdp: text });
      return new Call(pc, sender, local, ownsLocal, remote,
        server + response.headers.get("location"), response.headers.get("x-call-control-id"));
    } catch (err) {
      pc.close();
      if (ownsLocal) for (const track of local.getTracks()) track.stop();
      throw err;
    }
  }

  global.CallstreamWebRTC = { call, Call };
})(window);
