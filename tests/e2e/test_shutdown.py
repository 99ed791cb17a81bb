"""SIGTERM with a live call: a drain (drain_timeout_secs) that the call outlives, then the
call is hung up and its call.hangup is stored before exit."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from telnyx import Telnyx

from tests.e2e.sipp import uac
from tests.helpers import free_udp_tcp_port, running_server, stored_events
from tests.receiver import webhook_receiver

pytestmark = pytest.mark.slow


def test_sigterm_hangs_up_live_calls(tmp_path: Path) -> None:
    with webhook_receiver() as hooks, running_server(
        tmp_path / "d", env={"CALLSTREAM_WEBHOOK_URL": hooks.url,
                             "CALLSTREAM_RTP_PORT_MIN": "32000",
                             "CALLSTREAM_RTP_PORT_MAX": "32999",
                             "CALLSTREAM_DRAIN_TIMEOUT_SECS": "1"}
    ) as server:
        proc = uac(f"127.0.0.1:{server.sip_port}", "uac_answered.xml", cwd=tmp_path,
                   local_port=free_udp_tcp_port(), media_port=free_udp_tcp_port(),
                   hold_ms=30000)
        ccid = hooks.wait_event("call.initiated").payload["call_control_id"]
        sdk = Telnyx(api_key=server.api_key, base_url=server.api_url, max_retries=0)
        sdk.calls.actions.answer(ccid)
        hooks.wait_event("call.answered", ccid)
        assert server.stop(signal.SIGTERM) == 0, server.log()
        assert "drain: 1 calls still live after 1 s; hanging them up" in server.log()
        proc.wait(30)
        events = stored_events(server.data_dir)
        hangups = [e for e in events if e["event_type"] == "call.hangup"]
        assert len(hangups) == 1
        payload = hangups[0]["payload"]
        assert payload["call_control_id"] == ccid  # type: ignore[index]
        # As documented (docs/cluster.md, "Draining a node"): hung up by this side.
        assert (payload["hangup_cause"], payload["hangup_source"]) == (  # type: ignore[index]
            "normal_clearing", "callee")
        server.start()  # the `running_server` context stops it again
