// The console's softphone: a WebRTC call from this page into the server
// (/static/callstream-webrtc.js), with a token the page asks for with its session.
// Call / Hang up / Mute, a DTMF keypad, and level meters for the microphone and for
// what the call plays back; the transcript of both sides is the Transcript panel's.
"use strict";

const KEYS = "123456789*0#";
const LEVEL_MS = 100;
window.phone = { call: null, timer: null };

function phoneState(text) { $("phone-state").textContent = text; }

function showLevel(bar, label, level) {
  // audioLevel is linear 0..1; show dBFS like the call cards.
  const db = level > 0 ? 20 * Math.log10(level) : FLOOR_DB;
  const share = Math.max(0, Math.min(1, (db + METER_RANGE_DB) / METER_RANGE_DB));
  $(bar).style.width = `${(share * 100).toFixed(1)}%`;
  $(label).textContent = db <= FLOOR_DB ? "silent" : `${db.toFixed(1)} dBFS`;
}

function phoneButtons(inCall) {
  $("phone-call").disabled = inCall;
  $("phone-hangup").disabled = !inCall;
  $("phone-mute").disabled = !inCall;
  for (const key of $("keypad").children) key.disabled = !inCall;
}

function phoneEnded(reason) {
  clearInterval(window.phone.timer);
  window.phone.call = null;
  phoneButtons(false);
  $("phone-mute").textContent = "Mute";
  showLevel("phone-in", "phone-in-db", 0);
  showLevel("phone-out", "phone-out-db", 0);
  phoneState(reason === "hangup" ? "hung up" : "call ended");
}

async function phoneCall() {
  phoneButtons(true);
  $("phone-hangup").disabled = true;
  phoneState("calling…");
  try {
    const response = await post("/v2/webrtc/tokens", { from: $("phone-from").value || "console" });
    if (!response.ok) throw new Error(await errorText(response));
    const { token } = (await response.json()).data;
    const call = await CallstreamWebRTC.call({ token, audio: $("phone-audio") });
    window.phone.call = call;
    call.onended = phoneEnded;
    phoneButtons(true);
    phoneState(`in call ${short(call.callControlId)}`);
    window.phone.timer = setInterval(async () => {
      if (call.ended) return;
      const levels = await call.levels();
      showLevel("phone-in", "phone-in-db", call.muted ? 0 : levels.input);
      showLevel("phone-out", "phone-out-db", levels.output);
    }, LEVEL_MS);
  } catch (err) {
    phoneButtons(false);
    phoneState("idle");
    const toast = $("action-error");
    toast.textContent = `call: ${err.message || err}`;
    toast.hidden = false;
    setTimeout(() => { toast.hidden = true; }, 6000);
  }
}

for (const key of KEYS) {
  const button = el("button", { type: "button", disabled: true, "data-key": key }, key);
  button.addEventListener("click", () => window.phone.call && window.phone.call.sendDtmf(key));
  $("keypad").append(button);
}
$("phone-call").addEventListener("click", phoneCall);
$("phone-hangup").addEventListener("click", () => window.phone.call && window.phone.call.hangUp());
$("phone-mute").addEventListener("click", () => {
  const call = window.phone.call;
  if (!call) return;
  call.mute(!call.muted);
  $("phone-mute").textContent = call.muted ? "Unmute" : "Mute";
});
