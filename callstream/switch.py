"""The switch: binds SIP dialogs and RTP legs to Call Control for the calls this process owns.

It implements :class:`callstream.calls.telephony.Telephony` (commands from the API go
out as SIP and media set-up) and turns SIP and media events back into
``CallControl.on_*``-style reports. Each call's SIP events are handled in arrival
order (one task chain per dialog), so a call's reports can never overtake each other;
different calls proceed side by side, so one call waiting for its media sockets or the
store does not hold up the INVITEs queued behind it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from dataclasses import dataclass, field
from typing import Any

from callstream.calls.control import CallControl
from callstream.calls.exceptions import CallEnded
from callstream.calls.features import LegMedia, notify_dtmf
from callstream.calls.model import Call
from callstream.calls.state import CallState
from callstream.config import Settings
from callstream.media.codecs import get_codec
from callstream.media.dtmf import DtmfDigit
from callstream.media.hub import Bridge, MediaHub, bridge
from callstream.media.latch import StrictRtp
from callstream.media.session import RtpSession, SessionEvent
from callstream.media.transport import Pacer, PortAllocator, RtpEndpoint, open_rtp_endpoint
from callstream.sip import endpoint as sip
from callstream.sip.exceptions import InvalidCallState
from callstream.sip.offer_answer import (
    MediaParams,
    accept_answer,
    answer_offer,
    build_offer,
    negotiate,
)
from callstream.sip.sdp import Direction, SdpSession
from callstream.sip.transport import SipTransport
from callstream.sip.uri import parse_uri
from callstream.sip_admission import RefusalLog, admission_options
from callstream.store.records import DEFAULT_APP_ID

log = logging.getLogger(__name__)

#: SIP final status of a failed outgoing INVITE -> Telnyx hangup_cause.
FAILURE_CAUSES = {
    486: "user_busy",
    600: "user_busy",
    404: "not_found",
    604: "not_found",
    408: "timeout",
    480: "no_answer",
    603: "call_rejected",
    403: "call_rejected",
    487: "originator_cancel",
}


@dataclass(slots=True)
class Leg:
    """The SIP handle and media of one call leg."""

    call: Call
    handle: str
    hub: MediaHub
    rtp: RtpEndpoint | None = None
    offer: SdpSession | None = None  # what we offered (outgoing legs)
    answer_sdp: bytes | None = None  # what we answer with (incoming legs)
    media: MediaParams | None = None
    bridge: Bridge | None = None
    end_cause: str | None = None  # set when we end the call for a reason of our own
    timers: list[asyncio.TimerHandle] = field(default_factory=list)


class Switch:
    def __init__(self, settings: Settings, calls: CallControl, *,
                 sip_transport: type[SipTransport] = SipTransport) -> None:
        self.settings = settings
        self._sip_transport = sip_transport  # a worker's relays (callstream/workers/)
        self.calls = calls
        host, _ = settings.sip_host_port
        self.media_host = settings.media_address or host
        self._transport: SipTransport | None = None
        self.ports = PortAllocator(settings.rtp_port_min, settings.rtp_port_max)
        self.pacer = Pacer()
        self.legs: dict[str, Leg] = {}  # by SIP handle
        self.by_call: dict[str, Leg] = {}  # by call_control_id
        self._events: asyncio.Queue[sip.SipEvent] = asyncio.Queue()
        self._runner: asyncio.Task[None] | None = None
        self._chains: dict[str, asyncio.Task[None]] = {}  # SIP handle -> its latest event
        self._rng = random.SystemRandom()
        self._refusals = RefusalLog()

    @property
    def transport(self) -> SipTransport:
        if self._transport is None:
            raise RuntimeError("switch is not started")
        return self._transport

    @property
    def endpoint(self) -> sip.SipEndpoint:
        return self.transport.endpoint

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
        self._runner = asyncio.create_task(self._run(), name="switch-events")

    async def stop(self) -> None:
        for leg in list(self.legs.values()):
            self._release_media(leg)
        self.pacer.stop()
        await self.transport.close()
        if self._runner is not None:
            self._runner.cancel()
        for task in list(self._chains.values()):
            task.cancel()

    # -- SIP events, in order ------------------------------------------------

    def _on_sip_event(self, event: sip.SipEvent) -> None:
        self._events.put_nowait(event)

    async def _run(self) -> None:
        while True:
            event = await self._events.get()
            handle = getattr(event, "handle", "")
            if not handle:
                await self._handle_logged(event)
                continue
            task = asyncio.create_task(self._chained(self._chains.get(handle), event))
            self._chains[handle] = task
            task.add_done_callback(functools.partial(self._chain_done, handle))

    async def _chained(self, before: asyncio.Task[None] | None, event: sip.SipEvent) -> None:
        if before is not None:
            await asyncio.wait([before])  # the call's previous event first (never raises)
        await self._handle_logged(event)

    def _chain_done(self, handle: str, task: asyncio.Task[None]) -> None:
        if self._chains.get(handle) is task:
            del self._chains[handle]

    async def _handle_logged(self, event: sip.SipEvent) -> None:
        try:
            await self._handle(event)
        except Exception:
            log.exception("switch: failed to handle %r", event)

    async def _handle(self, event: sip.SipEvent) -> None:
        if isinstance(event, sip.IncomingCall):
            await self._incoming(event)
            return
        if isinstance(event, sip.RequestForbidden | sip.RequestRefused):
            self._refusals.report(event)
            return
        leg = self.legs.get(getattr(event, "handle", ""))
        if leg is None:
            return
        if isinstance(event, sip.CallProgress):
            log.info("call %s: %s (%d %s)", leg.call.id,
                     "ringing" if event.status == 180 else "progress", event.status,
                     event.reason, extra=_fields(leg.call))
        elif isinstance(event, sip.CallAnswered):
            await self._outgoing_answered(leg, event)
        elif isinstance(event, sip.CallFailed):
            cause = leg.end_cause or FAILURE_CAUSES.get(event.status, "unspecified")
            incoming = leg.call.record.direction == "incoming"
            await self._ended(leg, cause, "callee" if incoming or event.status != 487
                              else "caller", event.status)
        elif isinstance(event, sip.CallCancelled):
            if event.reason is sip.CancelReason.SETUP_TIMEOUT:
                # Nobody answered or rejected it within sip_park_timeout_secs: 480 sent.
                log.info("call %s: not answered in %g s (sip_park_timeout_secs): 480",
                         leg.call.id, self.settings.sip_park_timeout_secs)
                await self._ended(leg, "timeout", "callee", 480)
            else:
                await self._ended(leg, "originator_cancel", "caller", 487)
        elif isinstance(event, sip.CallEnded):
            if event.reason is sip.EndReason.REMOTE_BYE:
                remote = "caller" if leg.call.record.direction == "incoming" else "callee"
                await self._ended(leg, leg.end_cause or "normal_clearing", remote, 200)
            elif event.reason is sip.EndReason.LOCAL_BYE:
                local = "callee" if leg.call.record.direction == "incoming" else "caller"
                await self._ended(leg, leg.end_cause or "normal_clearing", local, 200)
            else:
                await self._ended(leg, "unspecified", "unknown", None)
        elif isinstance(event, sip.DtmfReceived):
            await self._dtmf(leg, event.digit)
        elif isinstance(event, sip.ReinviteReceived):
            self._reinvite(leg, event)

    async def _incoming(self, event: sip.IncomingCall) -> None:
        now = self._now()
        if event.offer is None:
            self.endpoint.reject(event.handle, 488, "Not Acceptable Here", now)
            self.transport.flush()
            return
        try:
            params = negotiate(event.offer)
        except Exception as exc:  # no common codec, no audio stream
            log.info("incoming call %s: %s", event.call_id, exc)
            self.endpoint.reject(event.handle, 488, "Not Acceptable Here", now)
            self.transport.flush()
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
        call = await self.calls.incoming_call(
            from_=from_uri.user or event.from_uri,
            to=to_uri.user or event.to_uri,
            connection_id=DEFAULT_APP_ID,
            details=details,
        )
        if call is None:
            self.endpoint.reject(event.handle, 480, "Temporarily Unavailable", self._now())
            self.transport.flush()
            return
        # Held until the answer SDP is ready: call.initiated is out, and with workers its
        # deliverer is another process, so an answer can come while media still opens.
        async with self.calls.lock(call.id):
            host, port = event.source[0], event.source[1]
            log.info("call %s: received from %s to %s (SIP %s from %s, codec %s/%d)",
                     call.id, event.from_uri, event.to_uri, event.transport.upper(),
                     f"[{host}]:{port}" if ":" in host else f"{host}:{port}", params.codec,
                     params.clock_rate, extra=_fields(call, source=f"{host}:{port}"))
            leg = Leg(call=call, handle=event.handle, hub=MediaHub(call.record.call_session_id))
            self._index(leg)
            try:
                await self._open_media(leg, params)
            except Exception:
                log.exception("call %s: no media ports", call.id)
                self.endpoint.reject(event.handle, 503, "Service Unavailable", self._now())
                self.transport.flush()
            else:
                assert leg.rtp is not None
                answer, _ = answer_offer(
                    event.offer,
                    local_addr=self.media_host,
                    local_port=leg.rtp.local_port,
                    session_id=self._rng.randrange(1, 2**31),
                )
                leg.answer_sdp = answer.serialize()
                self.endpoint.ring(event.handle, self._now())
                self.transport.flush()
                return
        # reject() ends the SIP call without an event: end the call here (it takes the lock).
        await self._ended(leg, "unspecified", "callee", 503)

    def _index(self, leg: Leg) -> None:
        self.legs[leg.handle] = leg
        self.by_call[leg.call.id] = leg
        leg.call.leg = leg

    async def _open_media(self, leg: Leg, params: MediaParams) -> None:
        codec = get_codec(params.codec, params.clock_rate)
        leg.media = params
        leg.hub.add_leg(leg.call.record.call_leg_id, codec.sample_rate)
        session = RtpSession(
            codec,
            payload_type=params.payload_type,
            dtmf_payload_type=params.telephone_event_pt,
            remote_address=(params.remote_addr, params.remote_port),
            strict_rtp=StrictRtp(self.settings.strict_rtp),
            name=leg.call.record.call_leg_id,
            jitter_prefetch_ms=self.settings.jitter_buffer_ms,
        )
        leg.rtp = await open_rtp_endpoint(
            session,
            leg.hub,
            leg.call.record.call_leg_id,
            host=self.media_host,
            ports=self.ports,
            pacer=self.pacer,
            on_event=lambda ev: self._on_media_event(leg, ev),
        )

    def _on_media_event(self, leg: Leg, event: SessionEvent) -> None:
        if isinstance(event, DtmfDigit):
            asyncio.get_running_loop().create_task(self._dtmf(leg, event.digit))

    async def _dtmf(self, leg: Leg, digit: str) -> None:
        rec = leg.call.record
        notify_dtmf(leg.call, digit, self._now())
        await self.calls.leg_event(
            leg.call, "call.dtmf.received", {"digit": digit, "from": rec.from_, "to": rec.to}
        )

    def _reinvite(self, leg: Leg, event: sip.ReinviteReceived) -> None:
        """Hold/unhold: answer with our current media; the RTP session keeps running."""
        now = self._now()
        if event.offer is None or leg.rtp is None:
            self.endpoint.reject_reinvite(event.handle, 488, "Not Acceptable Here", now)
        else:
            try:
                answer, params = answer_offer(
                    event.offer, local_addr=self.media_host, local_port=leg.rtp.local_port,
                    session_id=self._rng.randrange(1, 2**31), session_version=2,
                )
            except Exception:
                self.endpoint.reject_reinvite(event.handle, 488, "Not Acceptable Here", now)
            else:
                leg.rtp.session.set_remote_address((params.remote_addr, params.remote_port))
                self.endpoint.answer_reinvite(event.handle, answer.serialize(), now)
        self.transport.flush()

    async def _outgoing_answered(self, leg: Leg, event: sip.CallAnswered) -> None:
        if leg.offer is None or event.sdp is None or leg.rtp is None:
            leg.end_cause = "unspecified"
            self.endpoint.hangup(leg.handle, self._now())
            self.transport.flush()
            return
        try:
            params = accept_answer(leg.offer, event.sdp)
        except Exception as exc:
            log.info("call %s: unusable answer: %s", leg.call.id, exc)
            leg.end_cause = "unspecified"
            self.endpoint.hangup(leg.handle, self._now())
            self.transport.flush()
            return
        self._set_media(leg, params)
        self._cancel_timers(leg)
        limit = leg.call.record.details.get("time_limit_secs")
        if limit:
            leg.timers.append(
                asyncio.get_running_loop().call_later(float(limit), self._limit, leg,
                                                      "time_limit")
            )
        await self.calls.leg_answered(leg.call, self._media_fields(params))

    def _set_media(self, leg: Leg, params: MediaParams) -> None:
        """Switch an outgoing leg's session to the codec the answer chose."""
        assert leg.rtp is not None
        codec = get_codec(params.codec, params.clock_rate)
        name = leg.call.record.call_leg_id
        old = leg.rtp.session
        if codec.name != old.codec.name or params.payload_type != old.payload_type:
            leg.hub.remove_leg(name)
            leg.hub.add_leg(name, codec.sample_rate)
            session = RtpSession(
                codec, payload_type=params.payload_type,
                dtmf_payload_type=params.telephone_event_pt,
                remote_address=(params.remote_addr, params.remote_port), name=name,
                strict_rtp=StrictRtp(self.settings.strict_rtp),
                jitter_prefetch_ms=self.settings.jitter_buffer_ms,
            )
            session.start(self._now())
            leg.rtp.session = session
        else:
            old.set_remote_address((params.remote_addr, params.remote_port))
        leg.media = params

    @staticmethod
    def _media_fields(params: MediaParams) -> dict[str, Any]:
        return {"codec": params.codec, "sampling_rate": params.clock_rate}

    async def _ended(self, leg: Leg, cause: str, source: str, sip_code: int | None) -> None:
        quality = None
        if leg.rtp is not None and leg.call.state in (CallState.ANSWERED, CallState.HANGING_UP):
            quality = leg.rtp.session.quality().as_webhook()
        self._release_media(leg)
        self.legs.pop(leg.handle, None)
        self.by_call.pop(leg.call.id, None)
        await self.calls.leg_ended(
            leg.call, cause=cause, source=source, sip_code=sip_code, quality=quality
        )

    def _release_media(self, leg: Leg) -> None:
        self._cancel_timers(leg)
        if leg.bridge is not None:
            leg.bridge.close()
            leg.bridge = None
            peer = self.by_call.get(leg.call.bridged_with or "")
            if peer is not None:
                peer.bridge = None
        if leg.rtp is not None:
            leg.rtp.close()
        leg.hub.close()

    def _cancel_timers(self, leg: Leg) -> None:
        for timer in leg.timers:
            timer.cancel()
        leg.timers.clear()

    def _limit(self, leg: Leg, cause: str) -> None:
        if leg.handle in self.legs:
            self._give_up(leg, cause)

    def _give_up(self, leg: Leg, cause: str) -> None:
        leg.end_cause = cause
        unanswered = self.endpoint.call_state(leg.handle) is not sip.CallState.CONFIRMED
        self.endpoint.hangup(leg.handle, self._now())
        self.transport.flush()
        if unanswered and leg.call.record.direction == "outgoing":
            # An unanswered INVITE may take 32 s (Timer B) to die when the peer is silent
            # (CANCEL waits for a provisional, RFC 3261 §9.1); the call ends for the
            # application now and the transaction winds down on its own.
            asyncio.get_running_loop().create_task(self._ended(leg, cause, "caller", None))

    # -- Telephony: commands from CallControl --------------------------------

    async def dial(
        self,
        call: Call,
        target_uri: str,
        *,
        from_uri: str,
        display_name: str | None,
        headers: list[tuple[str, str]],
    ) -> None:
        leg = Leg(call=call, handle="", hub=MediaHub(call.record.call_session_id))
        # Media opens with PCMU and switches if the answer picks another codec.
        placeholder = MediaParams(
            remote_addr="0.0.0.0", remote_port=9, codec="PCMU", payload_type=0, clock_rate=8000,
            channels=1, telephone_event_pt=101, ptime=20, remote_ptime=None,
            direction=Direction.SENDRECV, remote_hold=False,
        )
        await self._open_media(leg, placeholder)
        assert leg.rtp is not None
        leg.offer = build_offer(
            local_addr=self.media_host,
            local_port=leg.rtp.local_port,
            session_id=self._rng.randrange(1, 2**31),
        )
        leg.handle = self.endpoint.invite(
            target_uri, from_uri=from_uri, sdp=leg.offer, now=self._now(),
            from_display=display_name, headers=headers,
        )
        self._index(leg)
        self.transport.flush()
        log.info("call %s: dialling %s from %s", call.id, target_uri, from_uri,
                 extra=_fields(call))
        timeout = float(call.record.details.get("timeout_secs", 30))
        leg.timers.append(
            asyncio.get_running_loop().call_later(timeout, self._limit, leg, "timeout")
        )

    def answer(self, call: Call) -> None:
        leg = self.by_call.get(call.id)
        try:
            if leg is None:
                raise InvalidCallState(call.id)
            assert leg.answer_sdp is not None
            self.endpoint.answer(leg.handle, leg.answer_sdp, self._now())
        except InvalidCallState as exc:
            # The caller's CANCEL is in; its event has not reached Call Control yet.
            raise CallEnded(f"Call {call.id} has already ended.") from exc
        self.transport.flush()
        params = leg.media
        fields = self._media_fields(params) if params else {}
        limit = call.record.details.get("time_limit_secs")
        if limit:
            leg.timers.append(
                asyncio.get_running_loop().call_later(float(limit), self._limit, leg,
                                                      "time_limit")
            )
        asyncio.get_running_loop().create_task(self.calls.leg_answered(call, fields))

    def reject(self, call: Call, status: int, reason: str) -> None:
        leg = self.by_call[call.id]
        leg.end_cause = "user_busy" if status == 486 else "call_rejected"
        self.endpoint.reject(leg.handle, status, reason, self._now())
        self.transport.flush()
        self._rejected(leg, leg.end_cause, status)

    def _rejected(self, leg: Leg, cause: str, status: int) -> None:
        # The endpoint ends a rejected call silently (no SIP event follows), so the
        # leg ends here; as a task, since the command holding the call's lock is
        # still running.
        asyncio.get_running_loop().create_task(self._ended(leg, cause, "callee", status))

    def hangup(self, call: Call, headers: list[tuple[str, str]]) -> None:
        leg = self.by_call.get(call.id)
        if leg is None:
            return
        now = self._now()
        if self.endpoint.call_state(leg.handle) is sip.CallState.CONFIRMED:
            self.endpoint.bye(leg.handle, now, headers=headers)
            self.transport.flush()
        elif call.record.direction == "outgoing":
            self._give_up(leg, "originator_cancel")
        else:
            self.endpoint.hangup(leg.handle, now, status=480)
            self.transport.flush()
            self._rejected(leg, leg.end_cause or "normal_clearing", 480)

    def bridge(self, a: Call, b: Call) -> None:
        leg_a, leg_b = self.by_call[a.id], self.by_call[b.id]
        joined = bridge(leg_a.hub, a.record.call_leg_id, leg_b.hub, b.record.call_leg_id)
        leg_a.bridge = leg_b.bridge = joined

    def unbridge(self, call: Call) -> None:
        leg = self.by_call.get(call.id)
        if leg is not None and leg.bridge is not None:
            leg.bridge.close()

    def media(self, call: Call) -> LegMedia:
        leg = self.by_call[call.id]
        if leg.rtp is None or leg.media is None:
            raise KeyError(call.id)
        session = leg.rtp.session
        return LegMedia(
            hub=leg.hub, leg=call.record.call_leg_id, codec=session.codec.name,
            sample_rate=session.codec.sample_rate, payload_type=session.payload_type,
            session=session,
        )

    def _now(self) -> float:
        return asyncio.get_running_loop().time()


def _fields(call: Call, **more: str) -> dict[str, str]:
    """Structured fields of a call's log line (keys in ``--log-format json``)."""
    return {"call_control_id": call.id, **more}
