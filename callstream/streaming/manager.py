"""Streams per call: start and stop them, start the ones dial/answer asked for, limits.

:class:`StreamManager` is ``Services.streams`` and one of ``CallControl.hooks``:

* ``streaming_start`` / ``streaming_stop`` (and TeXML ``Streams.json``) run as call
  commands through :meth:`CallControl.run_command` (``command_id`` idempotency, unknown
  and ended calls behave as for every action);
* :meth:`before_dial` opens the WebSocket before the INVITE when the dial asked for
  ``stream_establish_before_call_originate``; :meth:`answered` starts (or, for such an
  early stream, goes on with) the stream of a dial or answer carrying ``stream_url``;
* limits (spec §3.1 item 5, [impl]): any number of unidirectional streams up to
  :data:`MAX_STREAMS_PER_CALL`, and at most one bidirectional stream per call.

Each running stream is a :class:`~callstream.streaming.session.StreamSession` kept in
``call.features["stream:<id>"]``.

The path of ``streaming_start``, end to end: the route converts its body once into a
:class:`~callstream.calls.requests.StreamingStart` and calls :meth:`StreamManager.start`;
that runs :meth:`_start_now` as a command (``CallControl.run_command``: the call's lock,
``command_id``, the commit); :meth:`_start_now` takes the call's media from
:meth:`CallControl.media` (or its one error), opens the session on it and records the
stream resource in the command's change. The session connects in its own task and
reports ``streaming.started``/``failed``/``stopped`` through :meth:`emit`, which commits
the webhook rows (:func:`~callstream.calls.events.call_event`) and the resource.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from callstream.calls.control import CallControl
from callstream.calls.events import call_event, call_payload, texml_stream_event
from callstream.calls.exceptions import CommandError, NoSuchResource, StreamLimit
from callstream.calls.features import LegMedia
from callstream.calls.model import Call
from callstream.calls.remote_bridge import FEATURE_KEY as REMOTE_BRIDGE
from callstream.calls.remote_bridge import RemoteBridge
from callstream.calls.requests import (
    Dial,
    StreamingStart,
    StreamingStop,
    StreamSpec,
    TexmlCallback,
)
from callstream.outbound.policy import DEFAULT_POLICY, OutboundPolicy
from callstream.store.records import CallResource, Change, OutboxEvent, Receipt
from callstream.streaming.encoder import BUFFER_SECONDS
from callstream.streaming.playback import STANDING_MS
from callstream.streaming.session import (
    LATENCY_BOUND,
    STALL_TIMEOUT,
    STOP_GRACE,
    StreamParams,
    StreamSession,
)
from callstream.timefmt import iso_now
from callstream.webhooks.payloads import StreamEvent

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


def stream_params(spec: StreamSpec, *, client_state: str | None, reconnect_secs: float,
                  texml: TexmlCallback | None = None) -> StreamParams:
    """A new stream's params: the request's, with the spec's defaults for what it left out
    (``reconnect_secs``: the server's reconnect window)."""
    return StreamParams(
        stream_id=str(uuid.uuid4()),
        stream_url=spec.stream_url,
        stream_track=spec.stream_track,
        stream_codec=spec.stream_codec,
        bidirectional=spec.bidirectional,
        stream_bidirectional_mode=spec.stream_bidirectional_mode or "mp3",
        stream_bidirectional_codec=spec.stream_bidirectional_codec or "PCMU",
        stream_bidirectional_sampling_rate=spec.stream_bidirectional_sampling_rate or 8000,
        stream_bidirectional_target_legs=spec.stream_bidirectional_target_legs or "opposite",
        stream_auth_token=spec.stream_auth_token,
        custom_parameters=dict(spec.custom_parameters),
        client_state=client_state,
        texml=texml,
        stream_reconnect_seconds=(reconnect_secs if spec.stream_reconnect_seconds is None
                                  else spec.stream_reconnect_seconds),
    )


class StreamManager:
    def __init__(self, calls: CallControl, *, account_id: str,
                 stall_timeout: float = STALL_TIMEOUT,
                 buffer_secs: float = BUFFER_SECONDS, stop_grace: float = STOP_GRACE,
                 reconnect_secs: float = 0.0, latency_bound: float = LATENCY_BOUND,
                 playback_standing_ms: int = STANDING_MS,
                 outbound: OutboundPolicy = DEFAULT_POLICY,
                 clock: Callable[[], float] | None = None) -> None:
        self.calls = calls
        self.account_id = account_id
        self.stall_timeout = stall_timeout
        self.buffer_secs = buffer_secs
        self.stop_grace = stop_grace
        self.reconnect_secs = reconnect_secs
        self.latency_bound = latency_bound
        self.playback_standing_ms = playback_standing_ms
        self.outbound = outbound
        self._clock = clock
        self._tasks: set[asyncio.Task[Any]] = set()

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    # -- lookups ----------------------------------------------------------------------

    @staticmethod
    def streams(call: Call) -> list[StreamSession]:
        return [f for f in call.features.values() if isinstance(f, StreamSession)]

    def _check_limits(self, call: Call, params: StreamParams) -> None:
        streams = self.streams(call)
        if len(streams) >= MAX_STREAMS_PER_CALL:
            raise StreamLimit(
                f"A call carries at most {MAX_STREAMS_PER_CALL} streams.", pointer="/stream_url")
        if params.bidirectional and any(s.params.bidirectional for s in streams):
            raise StreamLimit(
                "The call already has a bidirectional stream; only one is allowed.",
                pointer="/stream_bidirectional_mode")

    def _params(self, spec: StreamSpec, client_state: str | None) -> StreamParams:
        return stream_params(spec, client_state=client_state, reconnect_secs=self.reconnect_secs)

    def _new_session(self, call: Call, params: StreamParams) -> StreamSession:
        session = StreamSession(self, call, params, clock=self._now,
                                stall_timeout=self.stall_timeout,
                                buffer_secs=self.buffer_secs, stop_grace=self.stop_grace,
                                latency_bound=self.latency_bound,
                                playback_standing_ms=self.playback_standing_ms)
        call.features[session.key] = session
        return session

    def _resource(self, session: StreamSession, status: str) -> CallResource:
        now = iso_now()
        params = session.params.public()
        params["counters"] = session.counters.as_dict()
        return CallResource(id=session.id, call_control_id=session.call.id, kind="stream",
                            status=status, params=params, created_at=now, updated_at=now)

    # -- commands ------------------------------------------------------------------------

    async def start(self, call_control_id: str, req: StreamingStart) -> Receipt:
        """``streaming_start``: answered at once; the stream connects in its own task."""

        async def action(call: Call, change: Change) -> None:
            self._start_now(call, change, self._params(req.stream, req.client_state))

        return await self.calls.run_command(call_control_id, req, action)

    def _start_now(self, call: Call, change: Change, params: StreamParams) -> StreamSession:
        media = self.calls.media(call, purpose="streamed")
        self._check_limits(call, params)
        session = self._new_session(call, params)
        session.attach(media)
        session.start()
        change.resources.append(self._resource(session, "connecting"))
        return session

    async def stop(self, call_control_id: str, req: StreamingStop) -> Receipt:
        """``streaming_stop``: one stream (``stream_id``) or all of them."""

        async def action(call: Call, change: Change) -> None:
            await self._stop_now(call, change, req.stream_id)

        return await self.calls.run_command(call_control_id, req, action)

    async def _stop_now(self, call: Call, change: Change, stream_id: str | None) -> None:
        streams = self.streams(call)
        if stream_id is not None:
            streams = [s for s in streams if s.id == stream_id]
            if not streams:
                raise NoSuchResource(f"No running stream {stream_id!r} on this call.",
                                     pointer="/stream_id")
        now = time.time()
        for session in streams:
            for event_type, extra in await session.stop():
                change.events.append(call_event(call, event_type, call_payload(call, **extra),
                                                now))
                change.events.extend(self._texml_events(session, event_type, extra, now))
            change.resources.append(self._resource(session, "stopped"))

    # -- TeXML --------------------------------------------------------------------------

    async def texml_start(self, call_sid: str, req: StreamingStart) -> str:
        """TeXML ``Streams.json``: start a stream as streaming_start does; its id."""
        params = stream_params(req.stream, client_state=None,
                               reconnect_secs=self.reconnect_secs, texml=req.texml)

        async def action(call: Call, change: Change) -> None:
            self._start_now(call, change, params)

        await self.calls.run_command(call_sid, req, action)
        return params.stream_id

    async def texml_stop(self, call_sid: str, sid: str) -> None:
        """TeXML ``Streams/{sid}.json`` with ``Status=stopped``."""
        async def action(call: Call, change: Change) -> None:
            await self._stop_now(call, change, sid)

        await self.calls.run_command(call_sid, StreamingStop(stream_id=sid), action)

    def _texml_events(self, session: StreamSession, event_type: str, extra: dict[str, Any],
                      now: float) -> list[OutboxEvent]:
        texml = session.params.texml
        if texml is None or not texml.status_callback or event_type not in TEXML_EVENTS:
            return []
        error = extra.get("failure_reason") if event_type == "streaming.failed" else None
        return [texml_stream_event(session.call, texml, TEXML_EVENTS[event_type], session.id,
                                   now, error=error)]

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
        remote = call.features.get(REMOTE_BRIDGE)
        if isinstance(remote, RemoteBridge):  # the other call is another process's
            peer = remote.peer_media
        elif call.bridged_with and (other := self.calls.calls.get(call.bridged_with)):
            try:
                peer = self.calls.media(other, purpose="heard")
            except CommandError:
                peer = None
        legs = session.params.stream_bidirectional_target_legs
        if peer is None or legs == "self":
            return [own]  # an unbridged leg hears it whatever the target (spec §5.4)
        if legs == "opposite":
            return [peer]
        return [own, peer]

    # -- CallHooks ---------------------------------------------------------------------

    async def before_dial(self, call: Call) -> None:
        req = call.setup
        if not isinstance(req, Dial) or req.stream is None or (
                not req.stream_establish_before_call_originate):
            return
        params = self._params(req.stream, req.client_state)
        try:
            self._check_limits(call, params)
        except StreamLimit:
            return
        session = self._new_session(call, params)
        session.start()
        await self.calls.commit(Change(resources=[self._resource(session, "connecting")]))
        await session.wait_connected()

    async def answered(self, call: Call) -> None:
        req = call.setup
        if req is None or req.stream is None:
            return
        early = [s for s in self.streams(call) if s.media is None]
        try:
            media = self.calls.media(call, purpose="streamed")
        except CommandError:
            log.warning("call %s answered without media; its stream cannot start", call.id)
            return
        if early:
            for session in early:
                session.attach(media)
            return
        try:
            async with self.calls.lock(call.id):  # so a stop can't interleave
                change = Change()
                self._start_now(call, change, self._params(req.stream, req.client_state))
                await self.calls.commit(change)
        except CommandError as exc:
            log.warning("call %s: stream of %s not started: %s", call.id,
                        call.record.direction, exc.detail)

