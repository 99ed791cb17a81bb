"""The browser's calls beside the switch's SIP calls, behind one Telephony.

:class:`WebRtcGateway` is what Call Control talks to (``calls.telephony``): a
command for a call that came in from a browser runs here, any other goes on to
the switch. To the application a browser call is an ordinary incoming call:
``call.initiated`` (``from`` names the browser's user), parked until answered or
rejected (``sip_park_timeout_secs`` as for SIP), then ``answer``, streaming,
forking, transcription and bridges to SIP legs as usual.

The reports one call causes (answered, DTMF, ended) run on one task chain per
call, in order, as the switch does for a dialog.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from callstream.calls.exceptions import CallEnded
from callstream.calls.features import LegMedia, notify_dtmf
from callstream.calls.model import Call
from callstream.calls.telephony import Telephony, TelephonyReports
from callstream.config import Settings
from callstream.media.hub import Bridge, MediaHub, bridge
from callstream.telephony.causes import UNSPECIFIED, rejection_cause
from callstream.webrtc.metrics import WEBRTC_LEGS, WEBRTC_REFUSED
from callstream.webrtc.offer import Offer, OfferError
from callstream.webrtc.tokens import TokenBook

if TYPE_CHECKING:  # aiortc loads with the first browser call (below), not at server start
    from callstream.webrtc.leg import WebRtcLeg

log = logging.getLogger(__name__)


class TooManyLegs(Exception):
    """``webrtc_max_legs`` browser legs are up."""


class NoApplication(Exception):
    """The call names no active application."""


@dataclass(slots=True)
class BrowserCall:
    """A browser's call as the gateway holds it."""

    call: Call
    leg: WebRtcLeg
    session: str  # the secret in its resource's URL, which lets its page hang up
    bridge: Bridge | None = None
    timer: asyncio.TimerHandle | None = None
    chain: asyncio.Task[None] | None = None  # its latest report, run in order


@dataclass(frozen=True, slots=True)
class Answer:
    """Our SDP answer and the session's name in its resource URL."""

    sdp: str
    session: str


class WebRtcGateway:
    """Telephony for browser calls; every other call goes to ``sip`` (the switch).

    Args:
        settings: ``webrtc_*`` and ``sip_park_timeout_secs``.
        reports: Call Control.
        sip: The switch.
        draw: Makes tokens and session names (``secrets.token_urlsafe``; a worker's
            hash to itself: docs/architecture.md, "Processes").
        legs_elsewhere: How many browser legs the node's other workers hold, so that
            ``webrtc_max_legs`` is the node's limit (none in one process).
    """

    def __init__(self, settings: Settings, reports: TelephonyReports, sip: Telephony,
                 draw: Callable[[int], str] = secrets.token_urlsafe,
                 legs_elsewhere: Callable[[], Awaitable[int]] | None = None) -> None:
        self.settings = settings
        self.reports = reports
        self.sip = sip
        self._draw = draw
        self._legs_elsewhere = legs_elsewhere
        self.tokens = TokenBook(settings.webrtc_token_ttl_secs, draw)
        self.calls: dict[str, BrowserCall] = {}  # by call_control_id
        self.sessions: dict[str, str] = {}  # session (URL secret) -> call_control_id

    async def call_in(self, offer: Offer, *, connection_id: str, from_: str,
                      to: str) -> tuple[Call, Answer]:
        """A browser's offer: announce the call (``call.initiated``) and answer the SDP.

        Raises:
            TooManyLegs: ``webrtc_max_legs`` are up (nothing was announced).
            NoApplication: ``connection_id`` names no active application.
            OfferError: aiortc could not run the offer (the call ended at once).
        """
        legs = len(self.calls)
        if self._legs_elsewhere is not None and legs < self.settings.webrtc_max_legs:
            legs += await self._legs_elsewhere()
        if legs >= self.settings.webrtc_max_legs:
            WEBRTC_REFUSED.labels("max_legs").inc()
            log.warning("WebRTC offer refused: %d legs are up (webrtc_max_legs)", legs)
            raise TooManyLegs(f"{self.settings.webrtc_max_legs} WebRTC legs are up")
        call = await self.reports.incoming_call(
            from_=from_, to=to, connection_id=connection_id,
            details={"webrtc": True, "from_sip_uri": f"webrtc:{from_}"})
        if call is None:
            raise NoApplication(f"no active application {connection_id!r}")
        # aiortc takes 0.2 s of CPU to import: paid by the first browser call, not by every
        # server start (most servers never see a browser).
        from callstream.webrtc.leg import WebRtcLeg, enable_telephone_event, ice_servers

        enable_telephone_event()
        rec = call.record
        settings = self.settings
        leg = WebRtcLeg(rec.call_leg_id, MediaHub(rec.call_session_id),
                        ice_servers(settings.webrtc_ice_servers, settings.webrtc_ice_username,
                                    settings.webrtc_ice_credential),
                        on_dtmf=functools.partial(self._on_dtmf, call.id),
                        on_gone=functools.partial(self._on_gone, call.id))
        browser = BrowserCall(call, leg, self._draw(32))
        self.calls[call.id] = browser
        self.sessions[browser.session] = call.id
        WEBRTC_LEGS.inc()
        try:
            sdp = await leg.answer(offer)
        except Exception as exc:
            log.info("call %s: the WebRTC offer could not be run: %s", call.id, exc)
            self._end(browser, UNSPECIFIED, "unknown", None)
            raise OfferError(f"the offer could not be run: {exc}") from None
        if not leg.closed:
            browser.timer = asyncio.get_running_loop().call_later(
                self.settings.sip_park_timeout_secs, self._park_timeout, call.id)
        log.info("call %s: received from the browser user %s to %s (WebRTC)", call.id, from_,
                 to, extra={"call_control_id": call.id})
        return call, Answer(sdp, browser.session)

    def hangup_session(self, session: str) -> bool:
        """The browser's DELETE: its call ends (the caller hung up); False if none."""
        browser = self.calls.get(self.sessions.get(session, ""))
        if browser is None:
            return False
        self._end(browser, "normal_clearing", "caller", None)
        return True

    # -- events of a leg ------------------------------------------------------------

    def _schedule(self, browser: BrowserCall, job: Callable[[], Awaitable[None]]) -> None:
        browser.chain = asyncio.get_running_loop().create_task(_chained(browser.chain, job))

    def _on_dtmf(self, call_id: str, digit: str) -> None:
        browser = self.calls.get(call_id)
        if browser is not None:
            self._schedule(browser, functools.partial(self._dtmf, browser.call, digit))

    async def _dtmf(self, call: Call, digit: str) -> None:
        notify_dtmf(call, digit, asyncio.get_running_loop().time())
        await self.reports.leg_event(call, "call.dtmf.received",
                                     {"digit": digit, "from": call.record.from_,
                                      "to": call.record.to})

    def _on_gone(self, call_id: str, why: str) -> None:
        browser = self.calls.get(call_id)
        if browser is not None:
            self._end(browser, "normal_clearing", "caller", None)

    def _park_timeout(self, call_id: str) -> None:
        browser = self.calls.get(call_id)
        if browser is not None and not browser.leg.answered:
            log.info("call %s: not answered in %g s (sip_park_timeout_secs)", call_id,
                     self.settings.sip_park_timeout_secs)
            self._end(browser, "timeout", "callee", None)

    def _end(self, browser: BrowserCall, cause: str, source: str, code: int | None) -> None:
        """Close the leg now; report the end on the call's chain."""
        if self.calls.pop(browser.call.id, None) is None:
            return
        self.sessions.pop(browser.session, None)
        WEBRTC_LEGS.dec()
        if browser.timer is not None:
            browser.timer.cancel()
        if browser.bridge is not None:
            browser.bridge.close()
            browser.bridge = None
        browser.leg.close()
        self._schedule(browser, functools.partial(
            self.reports.leg_ended, browser.call, cause=cause, source=source, sip_code=code,
            quality=None))

    # -- Telephony --------------------------------------------------------------------

    async def dial(self, call: Call, target_uri: str, *, from_uri: str,
                   display_name: str | None, headers: list[tuple[str, str]]) -> None:
        await self.sip.dial(call, target_uri, from_uri=from_uri, display_name=display_name,
                            headers=headers)

    def answer(self, call: Call) -> None:
        browser = self.calls.get(call.id)
        if browser is None:
            self.sip.answer(call)
            return
        from callstream.webrtc.leg import WIRE_MEDIA  # loaded by call_in

        if browser.leg.closed:
            raise CallEnded(f"Call {call.id} has already ended.")
        browser.leg.answered = True
        if browser.timer is not None:
            browser.timer.cancel()
        self._schedule(browser, functools.partial(self.reports.leg_answered, call,
                                                  dict(WIRE_MEDIA)))

    def reject(self, call: Call, status: int, reason: str) -> None:
        browser = self.calls.get(call.id)
        if browser is None:
            self.sip.reject(call, status, reason)
        else:
            self._end(browser, rejection_cause(status), "callee", status)

    def hangup(self, call: Call, headers: list[tuple[str, str]]) -> None:
        browser = self.calls.get(call.id)
        if browser is None:
            self.sip.hangup(call, headers)
        else:
            self._end(browser, "normal_clearing", "callee", None)

    def bridge(self, a: Call, b: Call) -> None:
        one, other = self.calls.get(a.id), self.calls.get(b.id)
        if one is None and other is None:
            self.sip.bridge(a, b)
            return
        media_a, media_b = self.media(a), self.media(b)
        joined = bridge(media_a.hub, media_a.leg, media_b.hub, media_b.leg)
        for browser in (one, other):
            if browser is not None:
                browser.bridge = joined

    def unbridge(self, call: Call) -> None:
        browser = self.calls.get(call.id)
        if browser is None:
            self.sip.unbridge(call)
        elif browser.bridge is not None:
            browser.bridge.close()
            browser.bridge = None

    def media(self, call: Call) -> LegMedia:
        browser = self.calls.get(call.id)
        return self.sip.media(call) if browser is None else browser.leg.media()

    async def stop(self) -> None:
        for browser in list(self.calls.values()):
            self._end(browser, "normal_clearing", "callee", None)


async def _chained(before: asyncio.Task[None] | None, job: Callable[[], Awaitable[Any]]) -> None:
    if before is not None:
        await asyncio.wait([before])  # the call's previous report first (never raises)
    try:
        await job()
    except Exception:
        log.exception("webrtc: %r failed", job)
