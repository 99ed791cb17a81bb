"""The switch: binds SIP dialogs and their legs to Call Control for the calls this process owns.

It implements :class:`callstream.calls.telephony.Telephony` (commands from the API go
out as SIP and media set-up) and reports back through
:class:`callstream.calls.telephony.TelephonyReports`. Everything the switch does for
one dialog — its SIP events, its DTMF, the reports its commands cause — runs on one
task chain per dialog, in order, so a call's reports can never overtake each other;
different calls proceed side by side, so one call waiting for its media sockets or the
store does not hold up the INVITEs queued behind it. A command (``answer``,
``reject``) runs under the call's lock in Call Control, so the report it causes is
queued on the chain, never awaited in place.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from callstream.calls.exceptions import CallEnded
from callstream.calls.features import LegMedia, notify_dtmf
from callstream.calls.model import Call
from callstream.calls.state import CallState
from callstream.calls.telephony import TelephonyReports
from callstream.config import Settings
from callstream.media.dtmf import DtmfDigit
from callstream.media.hub import Bridge, MediaHub, bridge
from callstream.media.latch import StrictRtp
from callstream.media.session import SessionEvent
from callstream.media.transport import Pacer, PortAllocator
from callstream.sip import endpoint as sip
from callstream.sip.exceptions import InvalidCallState, SipError
from callstream.sip.offer_answer import Codec, MediaParams, negotiate
from callstream.sip.sdp import SdpSession
from callstream.sip.transport import SipTransport
from callstream.sip.uri import parse_uri
from callstream.sip_admission import RefusalLog, admission_options
from callstream.store.records import DEFAULT_APP_ID
from callstream.telephony.causes import UNSPECIFIED, failure_cause, rejection_cause
from callstream.telephony.codecs import parse_codec_names
from callstream.telephony.leg import Leg, MediaOptions

log = logging.getLogger(__name__)

#: Seconds an outgoing INVITE rings when the dial gave no ``timeout_secs``.
DEFAULT_RING_SECS = 30.0


@dataclass(slots=True)
class SwitchedCall:
    """A Call Control call as the switch holds it: the call, its leg, its bridge."""

    call: Call
    leg: Leg
    offer: SdpSession | None = None  # the peer's INVITE offer, answered on `answer`
    bridge: Bridge | None = None
    end_cause: str | None = None  # set when we end the call for a reason of our own
    timers: list[asyncio.TimerHandle] = field(default_factory=list)

    @property
    def handle(self) -> str:
        return self.leg.handle


class Switch:
    """SIP and media for the server's calls (see the module docstring)."""

    def __init__(self, settings: Settings, reports: TelephonyReports, *,
                 sip_transport: type[SipTransport] = SipTransport) -> None:
        self.settings = settings
        self._sip_transport = sip_transport  # a worker's relays (callstream/workers/)
        self.reports = reports
        host, _ = settings.sip_host_port
        self.media_options = MediaOptions(
            host=settings.media_address or host, strict_rtp=StrictRtp(settings.strict_rtp),
            jitter_prefetch_ms=settings.jitter_buffer_ms,
        )
        self._transport: SipTransport | None = None
        self.ports = PortAllocator(settings.rtp_port_min, settings.rtp_port_max)
        self.pacer = Pacer()
        self.by_handle: dict[str, SwitchedCall] = {}
        self.by_call: dict[str, SwitchedCall] = {}  # by call_control_id
        self._chains: dict[str, asyncio.Task[None]] = {}  # dialog handle -> its latest job
        self._refusals = RefusalLog()

    @property
    def signaling(self) -> SipTransport:
        if self._transport is None:
            raise RuntimeError("switch is not started")
        return self._transport

    async def start(self) -> None:
        host, port = self.settings.sip_host_port
        self._transport = await self._sip_transport.start(
            host,
            port,
            self._on_sip_event,
            advertised_host=self.settings.media_address,
            make_endpoint=functools.partial(
                sip.SipEndpoint, user_agent="callstream", **admission_options(self.settings)
            ),
            tcp_idle_timeout=self.settings.sip_tcp_idle_timeout,
            max_tcp_connections=self.settings.sip_tcp_max_connections,
        )

    def drain(self) -> None:
        """Take no new calls (new INVITEs and OPTIONS probes get 503); live ones go on."""
        with self.signaling.command():
            self.signaling.endpoint.drain()

    async def stop(self) -> None:
        for switched in list(self.by_handle.values()):
            self._release_media(switched)
        self.pacer.stop()
        await self.signaling.close()
        for task in list(self._chains.values()):
            task.cancel()

    # -- one ordered chain per dialog ---------------------------------------------

    def _on_sip_event(self, event: sip.SipEvent) -> None:
        self._schedule(getattr(event, "handle", ""), functools.partial(self._handle, event))

    def _schedule(self, handle: str, job: Callable[[], Awaitable[None]]) -> None:
        """Run ``job`` after everything queued before it for this dialog."""
        task = asyncio.get_running_loop().create_task(self._chained(self._chains.get(handle), job))
        self._chains[handle] = task
        task.add_done_callback(functools.partial(self._chain_done, handle))

    @staticmethod
    async def _chained(before: asyncio.Task[None] | None,
                       job: Callable[[], Awaitable[None]]) -> None:
        if before is not None:
            await asyncio.wait([before])  # the dialog's previous job first (never raises)
        try:
            await job()
        except Exception:
            log.exception("switch: %r failed", job)

    def _chain_done(self, handle: str, task: asyncio.Task[None]) -> None:
        if self._chains.get(handle) is task:
            del self._chains[handle]

    # -- SIP events -----------------------------------------------------------------

    async def _handle(self, event: sip.SipEvent) -> None:
        if isinstance(event, sip.IncomingCall):
            await self._incoming(event)
            return
        if isinstance(event, sip.RequestForbidden | sip.RequestRefused):
            self._refusals.report(event)
            return
        switched = self.by_handle.get(getattr(event, "handle", ""))
        if switched is None:
            return
        call = switched.call
        incoming = call.record.direction == "incoming"
        if isinstance(event, sip.CallProgress):
            log.info("call %s: %s (%d %s)", call.id,
                     "ringing" if event.status == 180 else "progress", event.status,
                     event.reason, extra=_fields(call))
        elif isinstance(event, sip.CallAnswered):
            await self._outgoing_answered(switched, event)
        elif isinstance(event, sip.CallFailed):
            cause = switched.end_cause or failure_cause(event.status)
            await self._ended(switched, cause, "callee" if incoming or event.status != 487
                              else "caller", event.status)
        elif isinstance(event, sip.CallCancelled):
            if event.reason is sip.CancelReason.SETUP_TIMEOUT:
                # Nobody answered or rejected it within sip_park_timeout_secs: 480 sent.
                log.info("call %s: not answered in %g s (sip_park_timeout_secs): 480",
                         call.id, self.settings.sip_park_timeout_secs)
                await self._ended(switched, "timeout", "callee", 480)
            else:
                await self._ended(switched, "originator_cancel", "caller", 487)
        elif isinstance(event, sip.DialogEnded):
            cause = switched.end_cause or "normal_clearing"
            if event.reason is sip.EndReason.REMOTE_BYE:
                await self._ended(switched, cause, "caller" if incoming else "callee", 200)
            elif event.reason is sip.EndReason.LOCAL_BYE:
                await self._ended(switched, cause, "callee" if incoming else "caller", 200)
            else:
                await self._ended(switched, UNSPECIFIED, "unknown", None)
        elif isinstance(event, sip.DtmfReceived):
            await self._dtmf(switched, event.digit)
        elif isinstance(event, sip.ReinviteReceived):
            switched.leg.renegotiate(self.signaling, event)

    def _refuse(self, handle: str, status: int, reason: str) -> None:
        with self.signaling.command() as now:
            self.signaling.endpoint.reject(handle, status, reason, now)

    async def _incoming(self, event: sip.IncomingCall) -> None:
        if event.offer is None:
            self._refuse(event.handle, 488, "Not Acceptable Here")
            return
        try:
            params = negotiate(event.offer, supported=self.media_options.codecs)
        except SipError as exc:  # no common codec, no audio stream
            log.info("incoming call %s: %s", event.call_id, exc)
            self._refuse(event.handle, 488, "Not Acceptable Here")
            return
        from_uri = parse_uri(event.from_uri)
        to_uri = parse_uri(event.to_uri)
        details: dict[str, Any] = {
            "from_sip_uri": event.from_uri,
            "to_sip_uri": event.to_uri,
            "offered_codecs": params.codec,
            "sip_call_id": event.call_id,
        }
        if event.from_display:
            details["caller_id_name"] = event.from_display
        call = await self.reports.incoming_call(
            from_=from_uri.user or event.from_uri,
            to=to_uri.user or event.to_uri,
            connection_id=DEFAULT_APP_ID,
            details=details,
        )
        if call is None:
            self._refuse(event.handle, 480, "Temporarily Unavailable")
            return
        # Held until the leg is ready to answer: call.initiated is out, and its deliverer
        # may be another process (--workers), so an answer can come while media opens.
        async with self.reports.lock(call.id):
            host, port = event.source[0], event.source[1]
            log.info("call %s: received from %s to %s (SIP %s from %s, codec %s/%d)",
                     call.id, event.from_uri, event.to_uri, event.transport.upper(),
                     f"[{host}]:{port}" if ":" in host else f"{host}:{port}", params.codec,
                     params.clock_rate, extra=_fields(call, source=f"{host}:{port}"))
            try:
                leg = await self._open_leg(call, params)
            except Exception:
                log.exception("call %s: no media ports", call.id)
                self._refuse(event.handle, 503, "Service Unavailable")
            else:
                leg.handle = event.handle
                self._index(SwitchedCall(call, leg, offer=event.offer))
                with self.signaling.command() as now:
                    self.signaling.endpoint.ring(event.handle, now)
                return
        # reject() ends the SIP call without an event: end the call here (it takes the lock).
        await self.reports.leg_ended(call, cause=UNSPECIFIED, source="callee", sip_code=503,
                                     quality=None)

    async def _open_leg(self, call: Call, params: MediaParams | None) -> Leg:
        rec = call.record
        return await Leg.open(
            rec.call_leg_id, MediaHub(rec.call_session_id), self.media_options, ports=self.ports,
            pacer=self.pacer, params=params,
            on_event=functools.partial(self._on_media_event, call.id),
        )

    def _index(self, switched: SwitchedCall) -> None:
        self.by_handle[switched.handle] = switched
        self.by_call[switched.call.id] = switched

    def _on_media_event(self, call_id: str, event: SessionEvent) -> None:
        switched = self.by_call.get(call_id)
        if isinstance(event, DtmfDigit) and switched is not None:
            self._schedule(switched.handle, functools.partial(self._dtmf, switched, event.digit))

    async def _dtmf(self, switched: SwitchedCall, digit: str) -> None:
        call = switched.call
        notify_dtmf(call, digit, self._now())
        await self.reports.leg_event(
            call, "call.dtmf.received", {"digit": digit, "from": call.record.from_,
                                         "to": call.record.to}
        )

    async def _outgoing_answered(self, switched: SwitchedCall, event: sip.CallAnswered) -> None:
        try:
            params = switched.leg.accept(event.sdp)
        except SipError as exc:
            log.info("call %s: unusable answer: %s", switched.call.id, exc)
            switched.end_cause = UNSPECIFIED
            with self.signaling.command() as now:
                self.signaling.endpoint.hangup(switched.handle, now)
            return
        self._cancel_timers(switched)
        self._limit_time(switched)
        await self.reports.leg_answered(switched.call, _media_fields(params))

    def _limit_time(self, switched: SwitchedCall) -> None:
        limit = switched.call.record.details.get("time_limit_secs")
        if limit:
            switched.timers.append(asyncio.get_running_loop().call_later(
                float(limit), self._limit, switched, "time_limit"))

    async def _ended(self, switched: SwitchedCall, cause: str, source: str,
                     sip_code: int | None) -> None:
        quality = None
        if switched.call.state in (CallState.ANSWERED, CallState.HANGING_UP):
            quality = switched.leg.session.quality().as_webhook()
        self._release_media(switched)
        self.by_handle.pop(switched.handle, None)
        self.by_call.pop(switched.call.id, None)
        await self.reports.leg_ended(
            switched.call, cause=cause, source=source, sip_code=sip_code, quality=quality
        )

    def _release_media(self, switched: SwitchedCall) -> None:
        self._cancel_timers(switched)
        if switched.bridge is not None:
            switched.bridge.close()
            switched.bridge = None
            peer = self.by_call.get(switched.call.bridged_with or "")
            if peer is not None:
                peer.bridge = None
        switched.leg.close()

    @staticmethod
    def _cancel_timers(switched: SwitchedCall) -> None:
        for timer in switched.timers:
            timer.cancel()
        switched.timers.clear()

    def _limit(self, switched: SwitchedCall, cause: str) -> None:
        if switched.handle in self.by_handle:
            self._give_up(switched, cause)

    def _give_up(self, switched: SwitchedCall, cause: str) -> None:
        switched.end_cause = cause
        endpoint = self.signaling.endpoint
        unanswered = endpoint.call_state(switched.handle) is not sip.DialogPhase.CONFIRMED
        with self.signaling.command() as now:
            endpoint.hangup(switched.handle, now)
        if unanswered and switched.call.record.direction == "outgoing":
            # An unanswered INVITE may take 32 s (Timer B) to die when the peer is silent
            # (CANCEL waits for a provisional, RFC 3261 §9.1); the call ends for the
            # application now and the transaction winds down on its own.
            self._schedule(switched.handle,
                           functools.partial(self._ended, switched, cause, "caller", None))

    def _end_silently_ended(self, switched: SwitchedCall, cause: str, status: int) -> None:
        # The endpoint ends a call we reject without an event, so the leg ends here.
        self._schedule(switched.handle,
                       functools.partial(self._ended, switched, cause, "callee", status))

    # -- Telephony: commands from Call Control ------------------------------------

    async def dial(
        self,
        call: Call,
        target_uri: str,
        *,
        from_uri: str,
        display_name: str | None,
        headers: list[tuple[str, str]],
    ) -> None:
        asked = _media_request(call)
        leg = await self._open_leg(call, None)
        leg.set_send_silence_when_idle(asked.send_silence_when_idle)
        # preferred_codecs lead the offer; the rest follow, so the call still connects.
        preferred = asked.preferred_codecs or ()
        offer = leg.offer(preferred + tuple(c for c in self.media_options.codecs
                                            if c not in preferred))
        try:
            with self.signaling.command() as now:
                leg.handle = self.signaling.endpoint.invite(
                    target_uri, from_uri=from_uri, sdp=offer, now=now,
                    from_display=display_name, headers=headers,
                )
        except Exception:
            leg.close()  # Call Control ends the call; its sockets go now
            raise
        switched = SwitchedCall(call, leg)
        self._index(switched)
        log.info("call %s: dialling %s from %s", call.id, target_uri, from_uri,
                 extra=_fields(call))
        timeout = float(call.record.details.get("timeout_secs", DEFAULT_RING_SECS))
        switched.timers.append(
            asyncio.get_running_loop().call_later(timeout, self._limit, switched, "timeout")
        )

    def answer(self, call: Call) -> None:
        switched = self.by_call.get(call.id)
        if switched is None or switched.offer is None:
            raise CallEnded(f"Call {call.id} has already ended.")
        asked = _media_request(call)
        leg = switched.leg
        # The choice in the answer is made now, with answer's preferred_codecs read.
        sdp = leg.answer(switched.offer, prefer=asked.preferred_codecs)
        leg.set_send_silence_when_idle(asked.send_silence_when_idle)
        try:
            with self.signaling.command() as now:
                self.signaling.endpoint.answer(switched.handle, sdp.serialize(), now)
        except InvalidCallState as exc:
            # The caller's CANCEL is in; its event has not reached Call Control yet.
            raise CallEnded(f"Call {call.id} has already ended.") from exc
        self._limit_time(switched)
        fields = _media_fields(leg.params) if leg.params else {}
        self._schedule(switched.handle,
                       functools.partial(self.reports.leg_answered, call, fields))

    def reject(self, call: Call, status: int, reason: str) -> None:
        switched = self.by_call[call.id]
        switched.end_cause = rejection_cause(status)
        self._refuse(switched.handle, status, reason)
        self._end_silently_ended(switched, switched.end_cause, status)

    def hangup(self, call: Call, headers: list[tuple[str, str]]) -> None:
        switched = self.by_call.get(call.id)
        if switched is None:
            return
        endpoint = self.signaling.endpoint
        if endpoint.call_state(switched.handle) is sip.DialogPhase.CONFIRMED:
            with self.signaling.command() as now:
                endpoint.bye(switched.handle, now, headers=headers)
        elif call.record.direction == "outgoing":
            self._give_up(switched, "originator_cancel")
        else:
            with self.signaling.command() as now:
                endpoint.hangup(switched.handle, now, status=480)
            self._end_silently_ended(switched, switched.end_cause or "normal_clearing", 480)

    def bridge(self, a: Call, b: Call) -> None:
        one, other = self.by_call[a.id], self.by_call[b.id]
        joined = bridge(one.leg.hub, one.leg.name, other.leg.hub, other.leg.name)
        one.bridge = other.bridge = joined

    def unbridge(self, call: Call) -> None:
        switched = self.by_call.get(call.id)
        if switched is not None and switched.bridge is not None:
            switched.bridge.close()

    def media(self, call: Call) -> LegMedia:
        return self.by_call[call.id].leg.media()

    def _now(self) -> float:
        return asyncio.get_running_loop().time()


@dataclass(frozen=True, slots=True)
class MediaRequest:
    """What a dial or an answer asked of the call's media."""

    preferred_codecs: tuple[Codec, ...] | None
    send_silence_when_idle: bool


def _media_request(call: Call) -> MediaRequest:
    """The media options of the call's ``dial`` or ``answer`` request (the API checked
    them); the one place the switch reads a request."""
    setup = call.setup
    if setup is None:
        return MediaRequest(None, False)
    text = setup.preferred_codecs
    return MediaRequest(parse_codec_names([text]) if text else None,
                        setup.send_silence_when_idle)


def _media_fields(params: MediaParams) -> dict[str, Any]:
    return {"codec": params.codec, "sampling_rate": params.clock_rate}


def _fields(call: Call, **more: str) -> dict[str, str]:
    """Structured fields of a call's log line (keys in ``--log-format json``)."""
    return {"call_control_id": call.id, **more}
