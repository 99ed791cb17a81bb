"""Real-peer tests: SIPp calls callstream and callstream calls SIPp, over loopback.

Marked slow; skipped when the ``sipp`` binary (Debian package sip-tester) is missing.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from pathlib import Path

import pytest

from callstream.sip.endpoint import CallAnswered, DialogEnded, EndReason, IncomingCall, SipEvent
from callstream.sip.offer_answer import answer_offer
from callstream.sip.transport import SipTransport
from tests.e2e.sipp import DATA as E2E_DATA
from tests.e2e.sipp import media_ports

from .helpers import DATA, OFFER, EventLog

SIPP = shutil.which("sipp")
pytestmark = pytest.mark.slow


def test_sipp_is_installed() -> None:
    # .ci/run installs sip-tester; a missing sipp must fail, not skip the real-peer tests.
    assert SIPP is not None, "sipp is missing: apt-get install sip-tester"
#: Seconds a whole scenario may take.
SCENARIO_TIMEOUT = 30.0


def free_port() -> int:
    """A port free for UDP and TCP right now (a race, but a short one)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


async def run_sipp(args: list[str], cwd: Path) -> tuple[int, str]:
    assert SIPP is not None
    process = await asyncio.create_subprocess_exec(
        SIPP,
        *args,
        "-nostdin",
        "-timeout",
        "20",
        "-timeout_error",
        "-m",
        "1",
        "-mp",
        str(media_ports(free_port())),
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), SCENARIO_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")[-3000:]


class AnsweringUas(EventLog):
    """Rings and answers every call with a real SDP answer to the offer."""

    def __init__(self) -> None:
        super().__init__()
        self.transport: SipTransport | None = None

    def __call__(self, event: SipEvent) -> None:
        super().__call__(event)
        if isinstance(event, IncomingCall) and self.transport is not None:
            assert event.offer is not None
            answer, params = answer_offer(
                event.offer, local_addr="127.0.0.1", local_port=41000, session_id=1
            )
            assert params.codec == "PCMU" and params.telephone_event_pt == 101
            with self.transport.command() as now:
                self.transport.endpoint.ring(event.handle, now)
                self.transport.endpoint.answer(event.handle, answer, now)


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_sipp_calls_callstream(transport: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        uas = AnsweringUas()
        server = await SipTransport.start("127.0.0.1", 0, uas)
        uas.transport = server
        try:
            code, output = await run_sipp(
                [
                    "-sf",
                    str(DATA / "sipp_uac_basic.xml"),
                    "-t",
                    transport,
                    "-i",
                    "127.0.0.1",
                    "-p",
                    str(free_port()),
                    f"127.0.0.1:{server.local_addr[1]}",
                ],
                tmp_path,
            )
            assert code == 0, output
            await asyncio.wait_for(uas.wait_for_type(DialogEnded), 20)
        finally:
            await server.close()
        incoming, ended = uas.events
        assert isinstance(incoming, IncomingCall)
        assert incoming.transport == ("tcp" if transport == "t1" else "udp")
        assert ended == DialogEnded(incoming.handle, EndReason.REMOTE_BYE)
        assert server.endpoint.stats.parse_errors == 0

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_TIMEOUT + 5))


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_callstream_calls_sipp(transport: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        log = EventLog()
        events = log.events
        client = await SipTransport.start("127.0.0.1", 0, log)
        sipp_port = free_port()
        sipp = asyncio.create_task(
            run_sipp(
                ["-sf", str(E2E_DATA / "uas_basic.xml"), "-t", transport, "-i", "127.0.0.1",
                 "-p", str(sipp_port)], tmp_path
            )
        )
        try:
            await asyncio.sleep(0.3)  # let SIPp bind; INVITE retransmission covers a slow start
            suffix = ";transport=tcp" if transport == "t1" else ""
            with client.command() as now:
                handle = client.endpoint.invite(
                    f"sip:service@127.0.0.1:{sipp_port}{suffix}",
                    from_uri=f"sip:callstream@127.0.0.1:{client.local_addr[1]}",
                    sdp=OFFER,
                    now=now,
                )
            await asyncio.wait_for(log.wait_for_type(CallAnswered), 20)
            await asyncio.sleep(0.2)
            with client.command() as now:
                client.endpoint.bye(handle, now)
            await asyncio.wait_for(log.wait_for_type(DialogEnded), 20)
            assert events[-1] == DialogEnded(handle, EndReason.LOCAL_BYE, 200)
            code, output = await sipp
            assert code == 0, output
        finally:
            if not sipp.done():
                sipp.cancel()
            await asyncio.gather(sipp, return_exceptions=True)
            await client.close()

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_TIMEOUT + 5))
