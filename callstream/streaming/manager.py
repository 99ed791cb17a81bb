"""Streams per call: start and stop them, start the ones dial/answer asked for, limits.

:class:`StreamManager` is ``Services.streams`` and one of ``CallControl.hooks``:

* ``streaming_start`` / ``streaming_stop`` (and TeXML ``Streams.json``) run as call
  commands through :meth:`CallControl.run_command` (``command_id`` idempotency, 90015,
  90018 behave as for every action);
* :meth:`before_dial` opens the WebSocket before the INVITE when the dial asked for
  ``stream_establish_before_call_originate``; :meth:`answered` starts (or, for such an
  early stream, goes on with) the stream of a dial or answer carrying ``stream_url``;
* limits (spec §3.1 item 5, [impl]): any number of unidirectional streams up to
  :data:`MAX_STREAMS_PER_CALL`, and at most one bidirectional stream per call.

Each running stream is a :class:`~callstream.streaming.session.StreamSession` kept in
``call.features["stream:<id>"]``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from callstream.calls.control import CallControl, Reply
from callstream.calls.events import call_event, call_payload
from callstream.calls.exceptions import CallNotAnswered, CommandError, InvalidCommand
from callstream.calls.features import LegMedia
from callstream.calls.model import Call
from callstream.calls.state import CallState
from callstream.outbound.policy import DEFAULT_POLICY, OutboundPolicy
from callstream.store.records import CallResource, Change, OutboxEvent
from callstream.streaming.encoder import BUFFER_SECONDS
from callstream.streaming.session import STALL_TIMEOUT, STOP_GRACE, StreamParams, StreamSession
from callstream.timefmt import iso_now
from callstream.webhooks.events import outbox_event
from callstream.webhooks.payloads import BodyFormat, StreamEvent, make_texml_stream_callback

__all__ = ["MAX_STREAMS_PER_CALL", "StreamManager"]

log = logging.getLogger(__name__)

MAX_STREAMS_PER_CALL = 10
#: How long an ended stream's labelled series stay on /metrics.
METRICS_LINGER_SECS = 60.0

TEXML_EVENTS = {
    "streaming.started": StreamEvent.STARTED,
    "streaming.stopped": StreamEvent.STOPPED,
    "streaming.failed": StreamEvent.ERROR,
}


def stream_params(req: dict[str, Any], *, stream_id: str | None = None,
                  texml: dict[str, Any] | None = None) -> StreamParams:
    """Build the params of a validated request body (streaming_start, dial or answer)."""
    bidi_keys = ("stream_bidirectional_mode", "stream_bidirectional_codec",
                 "stream_bidirectional_sampling_rate", "stream_bidirectional_target_legs")
    custom = {p["name"]: p["value"] for p in req.get("custom_parameters") or []}
    return StreamParams(
        stream_id=stream_id or str(uuid.uuid4()),
        stream_url=req["stream_url"],
        stream_track=req.get("stream_track") or "inbound_track",
        stream_codec=req.get("stream_codec") or "default",
        bidirectional=any(req.get(k) is not None for k in bidi_keys),
        stream_bidirectional_mode=req.get("stream_bidirectional_mode") or "mp3",
        stream_bidirectional_codec=req.get("stream_bidirectional_codec") or "PCMU",
        stream_bidirectional_sampling_rate=int(
            req.get("stream_bidirectional_sampling_rate") or 8000),
        stream_bidirectional_target_legs=req.get("stream_bidirectional_target_legs")
        or "opposite",
        stream_auth_token=req.get("stream_auth_token"),
        custom_parameters=custom,
        client_state=req.get("client_state"),
        texml=texml,
    )


class StreamManager:
    def __init__(self, calls: CallControl, *, account_id: str,
                 stall_timeout: float = STALL_TIMEOUT,
                 buffer_secs: float = BUFFER_SECONDS, stop_grace: float = STOP_GRACE,
                 outbound: OutboundPolicy = DEFAULT_POLICY,
                 clock: Callable[[], float] | None = None) -> None:
        self.calls = calls
        self.account_id = account_id
        self.stall_timeout = stall_timeout
        self.buffer_secs = buffer_secs
        self.stop_grace = stop_grace
        self.outbound = outbound
        self._clock = clock
        self._tasks: set[asyncio.Task[Any]] = set()

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    # -- lookups ----------------------------------------------------------------------

    @staticmethod
    def streams(call: Call) -> list[StreamSession]:
        return [f for f in call.features.values() if isinstance(f, StreamSession)]

    def _media(self, call: Call) -> LegMedia:
        telephony = self.calls.telephony
        if telephony is None:
            raise InvalidCommand("10015", "Bad Request", "Telephony is not running.")
        try:
            return telephony.media(call)
        except KeyError:
            raise CallNotAnswered(f"Call {call.id} has no media yet.") from None

    def _check_limits(self, call: Call, params: StreamParams) -> None:
        streams = self.streams(call)
        if len(streams) >= MAX_STREAMS_PER_CALL:
            raise InvalidCommand(
                "90045", "Media Streaming is used",
                f"A call carries at most {MAX_STREAMS_PER_CALL} streams.", pointer="/stream_url")
        if params.bidirectional and any(s.params.bidirectional for s in streams):
            raise InvalidCommand(
                "90045", "Media Streaming is used",
                "The call already has a bidirectional stream; only one is allowed.",
                pointer="/stream_bidirectional_mode")

    def _new_session(self, call: Call, params: StreamParams) -> StreamSession:
        session = StreamSession(self, call, params, clock=self._now,
                                stall_timeout=self.stall_timeout,
                                buffer_secs=self.buffer_secs, stop_grace=self.stop_grace)
        call.features[session.key] = session
        return session

    def _resource(self, session: StreamSession, status: str) -> CallResource:
        now = iso_now()
        params = session.params.public()
        params["counters"] = session.counters.as_dict()
        return CallResource(id=session.id, call_control_id=session.call.id, kind="stream",
                            status=status, params=params, created_at=now, updated_at=now)

    # -- commands ------------------------------------------------------------------------

    async def start(self, call_control_id: str, req: dict[str, Any]) -> Reply:
        """``streaming_start``: 200 at once; the stream connects in its own task."""

        async def action(call: Call, change: Change) -> Reply | None:
            self._start_now(call, change, stream_params(req))
            return None

        return await self.calls.run_command(
            call_control_id, req.get("command_id"), req.get("client_state"), action)

    def _start_now(self, call: Call, change: Change, params: StreamParams) -> StreamSession:
        if call.state is not CallState.ANSWERED:
            raise CallNotAnswered(f"Call {call.id} must be answered before it is streamed.")
        media = self._media(call)
        self._check_limits(call, params)
        session = self._new_session(call, params)
        session.attach(media)
        session.start()
        change.resources.append(self._resource(session, "connecting"))
        return session

    async def stop(self, call_control_id: str, req: dict[str, Any]) -> Reply:
        """``streaming_stop``: one stream (``stream_id``) or all of them."""
        stream_id = req.get("stream_id")

        async def action(call: Call, change: Change) -> Reply | None:
            await self._stop_now(call, change, stream_id)
            return None

        return await self.calls.run_command(
            call_control_id, req.get("command_id"), req.get("client_state"), action)

    async def _stop_now(self, call: Call, change: Change, stream_id: str | None) -> None:
        streams = self.streams(call)
        if stream_id is not None:
            streams = [s for s in streams if s.id == stream_id]
            if not streams:
                raise InvalidCommand("10005", "Resource not found",
                                     f"No running stream {stream_id!r} on this call.",
                                     pointer="/stream_id")
        now = time.time()
        for session in streams:
            for event_type, extra in await session.stop():
                change.events.append(call_event(call, event_type, call_payload(call, **extra),
                                                now))
                change.events.extend(self._texml_events(session, event_type, extra, now))
            change.resources.append(self._resource(session, "stopped"))

    # -- TeXML --------------------------------------------------------------------------

    async def texml_start(self, account_sid: str, call_sid: str,
                          body: dict[str, Any]) -> dict[str, Any]:
        req: dict[str, Any] = {"stream_url": body["Url"], "stream_track": body.get("Track")}
        if body.get("BidirectionalMode") or body.get("BidirectionalCodec"):
            req["stream_bidirectional_mode"] = body.get("BidirectionalMode") or "mp3"
            req["stream_bidirectional_codec"] = body.get("BidirectionalCodec") or "PCMU"
        texml = {"account_sid": account_sid, "name": body.get("Name"),
                 "status_callback": body.get("StatusCallback"),
                 "status_callback_method": body.get("StatusCallbackMethod") or "POST"}
        params = stream_params(req, texml=texml)

        async def action(call: Call, change: Change) -> Reply | None:
            self._start_now(call, change, params)
            return None

        await self.calls.run_command(call_sid, None, None, action)
        return texml_object(account_sid, call_sid, params.stream_id, "in-progress",
                            name=body.get("Name"))

    async def texml_stop(self, account_sid: str, call_sid: str, sid: str) -> dict[str, Any]:
        async def action(call: Call, change: Change) -> Reply | None:
            await self._stop_now(call, change, sid)
            return None

        await self.calls.run_command(call_sid, None, None, action)
        return texml_object(account_sid, call_sid, sid, "stopped")

    def _texml_events(self, session: StreamSession, event_type: str, extra: dict[str, Any],
                      now: float) -> list[OutboxEvent]:
        texml = session.params.texml
        if not texml or not texml.get("status_callback") or event_type not in TEXML_EVENTS:
            return []
        rec = session.call.record
        data = make_texml_stream_callback(
            account_sid=texml["account_sid"], call_sid=rec.call_control_id,
            stream_event=TEXML_EVENTS[event_type], stream_sid=session.id, now=now,
            stream_name=texml.get("name"),
            stream_error=extra.get("failure_reason") if event_type == "streaming.failed"
            else None,
        )
        return [outbox_event(
            data, ordering_key=rec.call_session_id, url=texml["status_callback"],
            method=texml["status_callback_method"], body_format=BodyFormat.FORM,
            call_control_id=rec.call_control_id, timeout_secs=session.call.webhook_timeout_secs,
        )]

    # -- StreamHost: what sessions call back ----------------------------------------------

    async def emit(self, session: StreamSession, event_type: str,
                   extra: dict[str, Any]) -> None:
        """A stream event outside a command (started, failed, consumer gone)."""
        call = session.call
        if not call.alive and event_type == "streaming.started":
            return
        now = time.time()
        status = {"streaming.started": "streaming", "streaming.stopped": "stopped",
                  "streaming.failed": "failed"}.get(event_type, "streaming")
        change = Change(
            events=[call_event(call, event_type, call_payload(call, **extra), now),
                    *self._texml_events(session, event_type, extra, now)],
            resources=[self._resource(session, status)],
        )
        await self.calls.commit(change)

    def ended(self, session: StreamSession) -> None:
        if session.call.features.get(session.key) is session:
            del session.call.features[session.key]
        session.counters.ended(session.outcome)
        asyncio.get_running_loop().call_later(METRICS_LINGER_SECS, session.counters.forget)

    def playback_targets(self, session: StreamSession) -> Sequence[LegMedia]:
        """The legs that hear a bidirectional stream (``stream_bidirectional_target_legs``)."""
        assert session.media is not None
        own = session.media
        peer: LegMedia | None = None
        call = session.call
        if call.bridged_with and (other := self.calls.calls.get(call.bridged_with)):
            try:
                peer = self._media(other)
            except Exception:
                peer = None
        legs = session.params.stream_bidirectional_target_legs
        if peer is None or legs == "self":
            return [own]  # an unbridged leg hears it whatever the target (spec §5.4)
        if legs == "opposite":
            return [peer]
        return [own, peer]

    # -- CallHooks ---------------------------------------------------------------------

    async def before_dial(self, call: Call) -> None:
        req = call.record.details.get("dial") or {}
        if not req.get("stream_url") or not req.get("stream_establish_before_call_originate"):
            return
        try:
            params = stream_params(req)
            self._check_limits(call, params)
        except InvalidCommand:
            return
        session = self._new_session(call, params)
        session.start()
        await self.calls.commit(Change(resources=[self._resource(session, "connecting")]))
        await session.wait_connected()

    async def answered(self, call: Call) -> None:
        details = call.record.details
        req = details.get("answer" if call.record.direction == "incoming" else "dial") or {}
        if not req.get("stream_url"):
            return
        early = [s for s in self.streams(call) if s.media is None]
        try:
            media = self._media(call)
        except Exception:
            log.warning("call %s answered without media; its stream cannot start", call.id)
            return
        if early:
            for session in early:
                session.attach(media)
            return
        try:
            async with self.calls.lock(call.id):  # so a stop can't interleave
                change = Change()
                self._start_now(call, change, stream_params(req))
                await self.calls.commit(change)
        except CommandError as exc:
            log.warning("call %s: stream of %s not started: %s", call.id,
                        call.record.direction, exc.detail)


def texml_object(account_sid: str, call_sid: str, sid: str, status: str, *,
                 name: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "account_sid": account_sid, "call_sid": call_sid, "sid": sid,
        "status": status, "date_updated": iso_now(),
        "uri": f"/v2/texml/Accounts/{account_sid}/Calls/{call_sid}/Streams/{sid}.json",
    }
    if name is not None or status != "stopped":
        out["name"] = name
    return out
