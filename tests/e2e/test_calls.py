"""Whole calls over loopback with SIPp as the real peer, driven through the official SDK."""

from __future__ import annotations

import base64
import subprocess

import pytest
from telnyx import UnprocessableEntityError

from tests.e2e.conftest import Rig
from tests.e2e.sipp import uac, uas
from tests.helpers import free_udp_tcp_port

pytestmark = pytest.mark.slow


def _call_from_sipp(rig: Rig, hold_ms: int = 1000, scenario: str = "uac_answered.xml"
                    ) -> tuple[subprocess.Popen[bytes], str]:
    proc = uac(rig.sip_target, scenario, cwd=rig.workdir,
               local_port=free_udp_tcp_port(), media_port=free_udp_tcp_port(),
               hold_ms=hold_ms)
    initiated = rig.hooks.wait_for(
        lambda d: d.event_type == "call.initiated"
        and d.payload.get("direction") == "incoming"
        and d.payload["call_control_id"] not in _seen, timeout=20)
    ccid = initiated.payload["call_control_id"]
    _seen.add(ccid)
    return proc, ccid


_seen: set[str] = set()


def test_inbound_call_answered_by_sdk_then_remote_bye(rig: Rig) -> None:
    proc, ccid = _call_from_sipp(rig)
    initiated = rig.hooks.wait_event("call.initiated", ccid)
    assert initiated.payload["state"] == "parked"
    assert initiated.payload["from"] == "+15550001111"
    assert initiated.payload["to"] == "+15550002222"
    assert initiated.payload["client_state"] is None

    status = rig.sdk.calls.retrieve_status(ccid)
    assert status.data is not None and status.data.is_alive is True

    state = base64.b64encode(b"order-42").decode()
    rig.sdk.calls.actions.answer(ccid, client_state=state)
    answered = rig.hooks.wait_event("call.answered", ccid)
    assert answered.payload["client_state"] == state
    assert answered.payload["codec"] == "PCMU"

    assert proc.wait(30) == 0
    hangup = rig.hooks.wait_event("call.hangup", ccid)
    assert hangup.payload["hangup_cause"] == "normal_clearing"
    assert hangup.payload["hangup_source"] == "caller"
    assert hangup.payload["client_state"] == state
    assert "inbound" in hangup.payload["call_quality_stats"]

    status = rig.sdk.calls.retrieve_status(ccid)
    assert status.data is not None and status.data.is_alive is False
    with pytest.raises(UnprocessableEntityError) as info:
        rig.sdk.calls.actions.hangup(ccid)
    assert info.value.body["errors"][0]["code"] == "90018"  # type: ignore[index]


def test_hangup_is_idempotent_per_command_id(rig: Rig) -> None:
    proc, ccid = _call_from_sipp(rig, hold_ms=20000)
    rig.sdk.calls.actions.answer(ccid, command_id="a1")
    rig.sdk.calls.actions.answer(ccid, command_id="a1")  # repeat: same answer, no effect
    rig.hooks.wait_event("call.answered", ccid)
    first = rig.sdk.calls.actions.hangup(ccid, command_id="h1")
    again = rig.sdk.calls.actions.hangup(ccid, command_id="h1")
    assert first.data is not None and first.data.result == "ok"
    assert again.data is not None and again.data.result == "ok"
    hangup = rig.hooks.wait_event("call.hangup", ccid)
    assert hangup.payload["hangup_source"] == "callee"
    proc.wait(30)
    assert len([d for d in rig.hooks.events("call.answered")
                if d.payload["call_control_id"] == ccid]) == 1
    assert len([d for d in rig.hooks.events("call.hangup")
                if d.payload["call_control_id"] == ccid]) == 1
    # After the call ended, the recorded answer still stands; a new command_id gets 90018.
    assert rig.sdk.calls.actions.hangup(ccid, command_id="h1").data is not None
    with pytest.raises(UnprocessableEntityError):
        rig.sdk.calls.actions.hangup(ccid, command_id="h2")


def test_dial_a_sipp_uas_and_hang_up(rig: Rig) -> None:
    port = free_udp_tcp_port()
    proc = uas("uas_basic.xml", cwd=rig.workdir, port=port, media_port=free_udp_tcp_port())
    state = base64.b64encode(b"dialled").decode()
    call = rig.sdk.calls.dial(connection_id="default", to=f"sip:service@127.0.0.1:{port}",
                              from_="+15550003333", client_state=state, command_id="dial-1")
    assert call.data is not None
    ccid = call.data.call_control_id
    assert ccid and call.data.is_alive is False
    again = rig.sdk.calls.dial(connection_id="default", to=f"sip:service@127.0.0.1:{port}",
                               from_="+15550003333", command_id="dial-1")
    assert again.data is not None and again.data.call_control_id == ccid
    initiated = rig.hooks.wait_event("call.initiated", ccid)
    assert initiated.payload["direction"] == "outgoing"
    assert initiated.payload["state"] == "bridging"
    rig.hooks.wait_event("call.answered", ccid)
    with rig.server.client() as c:
        assert ccid in [x["call_control_id"] for x in c.get("/v2/calls").json()["data"]]
    rig.sdk.calls.actions.hangup(ccid)
    hangup = rig.hooks.wait_event("call.hangup", ccid)
    assert hangup.payload["hangup_cause"] == "normal_clearing"
    assert hangup.payload["hangup_source"] == "caller"
    assert hangup.payload["client_state"] == state
    assert proc.wait(30) == 0


def test_default_application_cannot_be_deleted(rig: Rig) -> None:
    # Deleting it used to succeed: then every inbound call got 480 and every dial 422.
    with rig.server.client() as c:
        r = c.delete("/v2/call_control_applications/default")
        assert r.status_code == 422, r.text
        err = r.json()["errors"][0]
        assert err["code"] == "10015"
        assert "'default' application cannot be deleted" in err["detail"]
        assert c.get("/v2/call_control_applications/default").status_code == 200

    proc, ccid = _call_from_sipp(rig)
    rig.sdk.calls.actions.answer(ccid)
    rig.hooks.wait_event("call.answered", ccid)
    assert proc.wait(30) == 0

    port = free_udp_tcp_port()
    uas_proc = uas("uas_basic.xml", cwd=rig.workdir, port=port, media_port=free_udp_tcp_port())
    call = rig.sdk.calls.dial(connection_id="default", to=f"sip:service@127.0.0.1:{port}",
                              from_="+15550003333")
    assert call.data is not None and call.data.call_control_id
    rig.hooks.wait_event("call.answered", call.data.call_control_id)
    rig.sdk.calls.actions.hangup(call.data.call_control_id)
    assert uas_proc.wait(30) == 0


def test_dial_timeout(rig: Rig) -> None:
    # A UDP port nobody answers on: the INVITE goes unanswered until timeout_secs.
    port = free_udp_tcp_port()
    call = rig.sdk.calls.dial(connection_id="default", to=f"sip:nobody@127.0.0.1:{port}",
                              from_="+15550003333", timeout_secs=5)
    assert call.data is not None
    hangup = rig.hooks.wait_event("call.hangup", call.data.call_control_id, timeout=15)
    assert hangup.payload["hangup_cause"] == "timeout"


@pytest.mark.parametrize(("how", "status", "cause"), [
    ("reject_busy", "486", "user_busy"),
    ("reject_decline", "603", "call_rejected"),
    ("hangup", "480", "normal_clearing"),
])
def test_parked_call_refused_by_the_application(rig: Rig, how: str, status: str,
                                                cause: str) -> None:
    proc, ccid = _call_from_sipp(rig, scenario="uac_refused.xml")
    if how == "hangup":
        rig.sdk.calls.actions.hangup(ccid)
    else:
        rig.sdk.calls.actions.reject(
            ccid, cause="USER_BUSY" if how == "reject_busy" else "CALL_REJECTED")
    hangup = rig.hooks.wait_event("call.hangup", ccid)
    assert hangup.payload["hangup_cause"] == cause
    assert hangup.payload["hangup_source"] == "callee"
    assert hangup.payload["sip_hangup_cause"] == status
    assert proc.wait(30) == 0  # SIPp got the status it expected and ACKed it
