"""Call Control: the commands the API runs and the events telephony reports.

The domain of calls, and it speaks no HTTP: commands take the typed requests of
:mod:`callstream.calls.requests`, return a :class:`~callstream.store.records.Receipt`
they neither build nor read (:mod:`callstream.calls.results` says why), and refuse with
the exceptions of :mod:`callstream.calls.exceptions`; ``api/`` renders all three.

Each command on a call runs under that call's lock, so a command and a repeat of it
(same ``command_id``) can't interleave; the receipt, the state change and the webhooks
it causes are committed in one store transaction before the API replies.

Locks are per key and never held across network I/O (but by a bridge with a call of
another process, bounded: :meth:`CallControl._bridge_remote`): a dial holds only its
``command_id``'s lock, and only while it checks and records that id, so one dial
waiting on a stream (``stream_establish_before_call_originate``) or on SIP never holds
up another dial. Locks are dropped when no one uses them (:mod:`callstream.calls.locks`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from callstream.calls.events import call_event, call_identity, call_payload
from callstream.calls.exceptions import (
    CallEnded,
    CallNotAnswered,
    CallNotFound,
    CommandError,
    InvalidCommand,
    NodeDraining,
    PeerUnavailable,
    UnknownApplication,
)
from callstream.calls.features import CallHooks, FeatureEvent, LegMedia
from callstream.calls.locks import KeyedLocks
from callstream.calls.model import Call, new_record
from callstream.calls.remote_bridge import FEATURE_KEY as REMOTE_BRIDGE
from callstream.calls.remote_bridge import PEER_LOCK_SECS, RemoteBridge, RemoteBridges
from callstream.calls.requests import Answer, Bridge, Command, Dial, Hangup, Reject
from callstream.calls.results import Dialled, Done, Receipts
from callstream.calls.state import CallEvent, CallState
from callstream.calls.telephony import Telephony
from callstream.media.exceptions import MediaStateError
from callstream.media.hop import HopOffer
from callstream.store.base import Store
from callstream.store.exceptions import CommandAlreadyDone, StoreError
from callstream.store.records import Application, CallRecord, Change, IdempotencyRecord, Receipt
from callstream.timefmt import iso, iso_now

log = logging.getLogger(__name__)

DIAL_KEY = ""  # idempotency scope of dial: command_id alone (spec §2)

#: What a command does to its live call: it adds to ``change`` what it changed beyond
#: the call's own record, and returns nothing (the command then answers :class:`Done`).
Action = Callable[[Call, Change], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class CallParts:
    """What Call Control drives: the telephony holding SIP dialogs and RTP sockets, and
    the feature managers (:class:`~callstream.calls.features.CallHooks`, in the order
    they run). Each reports back to Call Control, so the composition root builds them
    with it: :class:`CallControl` takes a function from itself to its parts."""

    telephony: Telephony
    hooks: tuple[CallHooks, ...] = ()


class CallControl:
    """The calls this process owns, the commands on them and the reports from telephony.

    Args:
        store: where calls, their webhooks and command answers are committed.
        parts: builds the telephony and feature managers around this Call Control.
        owner: recorded on each call row, for operators.
        receipts: renders a command's result as the answer a repeat of it gets.
        trunk_uri: where dialled phone numbers go (``sip:host[:port]``); None: only
            ``sip:`` URIs can be dialled.
        wake_webhooks: called after a commit that stored webhooks.
        clock: Unix time, for timestamps.
    """

    def __init__(
        self,
        store: Store,
        parts: Callable[[CallControl], CallParts],
        *,
        owner: str,
        receipts: Receipts,
        trunk_uri: str | None = None,
        wake_webhooks: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.owner = owner
        self.trunk_uri = trunk_uri
        self.calls: dict[str, Call] = {}
        #: Set when the node drains: it places no new calls (dial gets NodeDraining).
        self.draining = False
        #: Per call id: commands and call events on one call run one at a time.
        self.call_locks = KeyedLocks()
        #: Per dial command_id: a repeated dial finds the first one's answer.
        self.dial_locks = KeyedLocks()
        self._receipts = receipts
        self._wake = wake_webhooks
        self._clock = clock
        #: Called with every change once it is stored (the console's feed): every
        #: webhook event passes here. A listener must not block; one that raises is logged.
        self.commit_listeners: list[Callable[[Change], None]] = []
        #: Set on a node of a cluster (:meth:`callstream.cluster.node.ClusterNode.lease_new`):
        #: awaited with each new call's id before the call is stored and announced, so
        #: every node can find the call's owner as soon as anybody can know of the call.
        self.lease_new: Callable[[str], Awaitable[None]] | None = None
        #: Set where other processes hold calls (--workers, a cluster): a bridge with
        #: one of their calls joins the two through a hop (calls/remote_bridge.py).
        self.remote_bridges: RemoteBridges | None = None
        built = parts(self)
        self.telephony = built.telephony
        #: Feature managers (streaming, forking, transcription), see calls.features.
        self.hooks = built.hooks

    # -- plumbing ----------------------------------------------------------

    def lock(self, call_control_id: str) -> contextlib.AbstractAsyncContextManager[None]:
        """The call's command lock: features hold it to change a call outside a command."""
        return self.call_locks.hold(call_control_id)

    async def commit(self, change: Change) -> None:
        await self.store.commit(change)
        if change.events:
            self._wake()
        for listener in self.commit_listeners:
            try:
                listener(change)
            except Exception:
                log.exception("a commit listener failed")

    async def _resolve_app(self, connection_id: str) -> Application:
        app = await self.store.get_application(connection_id)
        if app is None or not app.active:
            raise UnknownApplication(
                f"No active Call Control Application with id {connection_id!r}.",
                pointer="/connection_id",
            )
        return app

    async def live_call(self, call_control_id: str) -> Call:
        call = self.calls.get(call_control_id)
        if call is not None and call.alive:
            return call
        record = await self.store.get_call(call_control_id)
        if record is None:
            raise CallNotFound(f"No call with call_control_id {call_control_id!r}.")
        raise CallEnded(f"Call {call_control_id} has already ended.")

    def media(self, call: Call, *, purpose: str) -> LegMedia:
        """The answered call's media, for a feature to tap; or the one right error.

        Every feature (stream, fork, transcription) asks here, so each refuses a call
        the same way (Telnyx semantics): a call hanging up has ended; one not answered
        yet is not answered; an answered call whose media is already gone is ending.

        Args:
            call: a live call (from :meth:`run_command` or :meth:`lock`).
            purpose: what the feature does, for the error ("streamed", "forked"...).

        Raises:
            CallEnded: the call is hanging up, or its media has already closed.
            CallNotAnswered: the call is not answered yet.
        """
        if call.state is CallState.HANGING_UP or not call.alive:
            raise CallEnded(f"Call {call.id} is hanging up.")
        if call.state is not CallState.ANSWERED:
            raise CallNotAnswered(f"Call {call.id} must be answered before it is {purpose}.")
        try:
            return self.telephony.media(call)
        except KeyError:
            raise CallEnded(f"Call {call.id} has no media any more.") from None

    async def run_command(self, call_control_id: str, command: Command, action: Action) -> Receipt:
        """Run ``action`` on a live call once per ``command.command_id``; commit what it
        changed with the command's receipt, and return that receipt (a repeat of the
        command_id returns the first one's, and runs nothing)."""
        async with self.lock(call_control_id):
            command_id = command.command_id
            if command_id:
                seen = await self.store.get_idempotency(call_control_id, command_id)
                if seen is not None:
                    return seen.receipt
            call = await self.live_call(call_control_id)
            if command.client_state is not None:
                call.update(client_state=command.client_state)
            change = Change()
            await action(call, change)
            receipt = self._receipts.receipt(Done())
            change.calls.append(call.record)
            if command_id:
                change.idempotency.append(
                    IdempotencyRecord(call_control_id, command_id, receipt, iso_now()))
            try:
                await self.commit(change)
            except CommandAlreadyDone as done:  # another node stored its answer first
                return done.stored.receipt
            return receipt

    # -- commands ----------------------------------------------------------

    async def dial(self, req: Dial) -> Receipt:
        command_id = req.command_id
        if command_id:
            async with self.dial_locks.hold(command_id):
                seen = await self.store.get_idempotency(DIAL_KEY, command_id)
                if seen is not None:
                    return seen.receipt
                try:
                    call, target, receipt = await self._create_outgoing(req, command_id)
                except CommandAlreadyDone as done:  # another node dialled it first
                    return done.stored.receipt
        else:
            call, target, receipt = await self._create_outgoing(req, None)
        # The call is stored and announced: what follows waits on the network (a
        # stream's WebSocket, SIP) and so holds no lock; a repeat of this command_id
        # now gets the stored answer.
        from_uri = req.from_ if req.from_.startswith("sip") else _tel_uri(req.from_)
        try:
            for hook in self.hooks:
                await hook.before_dial(call)
            if _hung_up(call):  # while its stream connected
                await self.leg_ended(call, cause="originator_cancel", source="caller",
                                     sip_code=None)
                return receipt
            await self.telephony.dial(
                call,
                target,
                from_uri=from_uri,
                display_name=req.from_display_name,
                headers=list(req.custom_headers),
            )
            # A hangup while dial() awaited found no leg to end; one after it returned
            # ends it itself (dial() registers the leg after its last await).
            if _hung_up(call):
                self.telephony.hangup(call, [])
        except Exception:
            # Accepted and announced (call.initiated), so it must also end visibly.
            log.exception("dial %s to %s failed", call.id, target)
            await self.leg_ended(call, cause="unspecified", source="unknown", sip_code=None)
        return receipt

    async def _create_outgoing(
        self, req: Dial, command_id: str | None
    ) -> tuple[Call, str, Receipt]:
        """Check a dial, store its call and call.initiated (and its command_id's answer);
        return the call, the SIP URI to invite and the dial's receipt."""
        if self.draining:
            raise NodeDraining("This node is draining (callstream drain) and places no new "
                               "calls; send the dial to another node.")
        app = await self._resolve_app(req.connection_id)
        target = self._target_uri(req.to)
        now = self._clock()
        record = new_record(
            direction="outgoing",
            connection_id=app.id,
            from_=req.from_,
            to=req.to,
            state=CallState.BRIDGING,
            start_time=iso(now),
            owner=self.owner,
            client_state=req.client_state,
            webhook_url=req.webhook_url,
            # Read by telephony: how long to ring, and the call's longest life.
            details={"timeout_secs": req.timeout_secs, "time_limit_secs": req.time_limit_secs},
        )
        call = self._adopt(record, app, CallState.BRIDGING)
        call.setup = req
        receipt = self._receipts.receipt(Dialled(call.record))
        change = Change(
            calls=[call.record],
            events=[
                call_event(call, "call.initiated", call_payload(call, **call_identity(call)), now)
            ],
        )
        if command_id:
            change.idempotency.append(
                IdempotencyRecord(DIAL_KEY, command_id, receipt, iso_now()))
        try:
            if self.lease_new is not None:
                await self.lease_new(call.id)
            await self.commit(change)
        except StoreError:  # nothing was stored: the call never was
            del self.calls[call.id]
            raise
        return call, target, receipt

    def _target_uri(self, to: str) -> str:
        if to.lower().startswith(("sip:", "sips:")):
            return to
        if not self.trunk_uri:
            raise InvalidCommand(
                "Dialling a phone number needs an outbound trunk (CALLSTREAM_TRUNK_URI); "
                "or dial a sip: URI.",
                pointer="/to",
            )
        host = self.trunk_uri.split(":", 1)[1]
        return f"sip:{to}@{host}"

    def _adopt(self, record: CallRecord, app: Application, state: CallState) -> Call:
        call = Call(
            record=record,
            state=state,
            application_webhook_url=app.webhook_event_url,
            application_failover_url=app.webhook_event_failover_url,
            webhook_timeout_secs=float(app.webhook_timeout_secs or 10),
        )
        self.calls[record.call_control_id] = call
        return call

    async def answer(self, call_control_id: str, req: Answer) -> Receipt:
        async def action(call: Call, change: Change) -> None:
            if call.state is not CallState.PARKED:
                detail = f"Call is {call.state.value}; only a parked incoming call can be answered."
                raise CallEnded(detail) if not call.alive else InvalidCommand(detail)
            if req.webhook_url:
                call.update(webhook_url=req.webhook_url)
            call.setup = req
            call.apply(CallEvent.ANSWER)
            self.telephony.answer(call)

        return await self.run_command(call_control_id, req, action)

    async def hangup(self, call_control_id: str, req: Hangup) -> Receipt:
        async def action(call: Call, change: Change) -> None:
            if call.state is CallState.HANGING_UP:
                return
            call.apply(CallEvent.HANGUP)
            call.update(details={**call.record.details, "hangup_requested": True})
            self.telephony.hangup(call, list(req.custom_headers))

        return await self.run_command(call_control_id, req, action)

    async def reject(self, call_control_id: str, req: Reject) -> Receipt:
        async def action(call: Call, change: Change) -> None:
            if call.state is not CallState.PARKED:
                raise InvalidCommand("Only a parked incoming call can be rejected.")
            call.apply(CallEvent.HANGUP)
            status, reason = (486, "Busy Here") if req.cause == "USER_BUSY" else (
                603, "Decline")
            call.update(details={**call.record.details, "hangup_requested": True})
            self.telephony.reject(call, status, reason)

        return await self.run_command(call_control_id, req, action)

    async def bridge(self, call_control_id: str, req: Bridge) -> Receipt:
        other_id = req.call_control_id

        async def action(call: Call, change: Change) -> None:
            other = self.calls.get(other_id)
            if other is None or not other.alive:
                record = None if other is not None else await self.store.get_call(other_id)
                if (record is not None and record.is_alive and record.owner != self.owner
                        and self.remote_bridges is not None):
                    await self._bridge_remote(call, other_id, change)
                    return
                raise CallNotFound(f"No live call {other_id!r} to bridge with.",
                                   pointer="/call_control_id")
            if other is call:
                raise InvalidCommand("A call can't be bridged with itself.",
                                     pointer="/call_control_id")
            for leg in (call, other):
                if leg.state is not CallState.ANSWERED:
                    raise CallNotAnswered(f"Call {leg.id} must be answered before it is bridged.")
            for leg in (call, other):
                _leave_remote(leg, None)
            call.bridged_with, other.bridged_with = other.id, call.id
            self.telephony.bridge(call, other)
            now = self._clock()
            for leg in (call, other):
                change.events.append(
                    call_event(leg, "call.bridged", call_payload(leg, **call_identity(leg)), now)
                )
            change.calls.append(other.record)

        return await self.run_command(call_control_id, req, action)

    async def _bridge_remote(self, call: Call, other_id: str, change: Change) -> None:
        """Bridge ``call`` with a call another process holds (calls/remote_bridge.py).

        The one command that holds its call's lock across network I/O: the other
        owner's answer, bounded by PEER_ANSWER_SECS, so the call can't end or take
        another command half-bridged."""
        assert self.remote_bridges is not None
        media = self.media(call, purpose="bridged")
        ours = await self.remote_bridges.open(media, call.id, other_id)
        try:
            theirs = await self.remote_bridges.ask_join(other_id, call.id, ours.offer)
        except BaseException as exc:
            ours.close()
            if isinstance(exc, PeerUnavailable):  # it may yet join: then it leaves again
                self.remote_bridges.tell_left(other_id, call.id, ours.hop.ssrc)
            raise
        try:
            self._join(call, ours, theirs)
        except CallEnded:  # the other call has joined: it must leave again
            self.remote_bridges.tell_left(other_id, call.id, ours.hop.ssrc)
            raise
        change.events.append(
            call_event(call, "call.bridged", call_payload(call, **call_identity(call)),
                       self._clock()))

    def _join(self, call: Call, ours: RemoteBridge, theirs: HopOffer) -> None:
        """Connect our hop to theirs.

        Raises:
            CallEnded: our call's media closed while the hop was set up (its BYE came in
                during an ``await``); our hop is closed.
        """
        _leave_remote(call, ours.peer_call)
        try:
            ours.connect(theirs)
        except MediaStateError:
            ours.close()
            raise CallEnded(f"Call {call.id} has no media any more.") from None
        call.features[REMOTE_BRIDGE] = ours
        call.bridged_with = ours.peer_call
        # Stored with the call: if this process dies, whoever ends the call
        # (end_lost) tells the other call's owner.
        call.update(details={**call.record.details,
                             REMOTE_BRIDGE: {"call": ours.peer_call, "ssrc": ours.hop.ssrc}})
        log.info("call %s: bridged with call %s of another process (hop %s:%d to %s:%d)",
                 call.id, ours.peer_call, *ours.hop.address, theirs.host, theirs.port,
                 extra={"call_control_id": call.id})

    async def join_remote(self, call_control_id: str, peer_id: str, theirs: HopOffer
                          ) -> HopOffer:
        """The owner of ``peer_id`` bridges it with our call: join its hop, store
        call.bridged, answer our hop's offer.

        Raises:
            CallNotFound, CallEnded, CallNotAnswered: the call can't be bridged.
            PeerUnavailable: the call is busy with another command (a crossed bridge).
        """
        assert self.remote_bridges is not None
        async with contextlib.AsyncExitStack() as held:
            try:
                async with asyncio.timeout(PEER_LOCK_SECS):
                    await held.enter_async_context(self.lock(call_control_id))
            except TimeoutError:
                raise PeerUnavailable(f"Call {call_control_id} is busy with another "
                                      "command; retry.") from None
            call = await self.live_call(call_control_id)
            media = self.media(call, purpose="bridged")
            ours = await self.remote_bridges.open(media, call.id, peer_id)
            self._join(call, ours, theirs)
            await self.commit(Change(calls=[call.record], events=[call_event(
                call, "call.bridged", call_payload(call, **call_identity(call)),
                self._clock())]))
            return ours.offer

    async def leave_remote(self, call_control_id: str, peer_id: str, ssrc: int) -> None:
        """The call bridged with ours in another process left the bridge whose hop
        sent with ``ssrc`` (it ended, or its bridge failed): unbridge ours."""
        async with self.lock(call_control_id):
            call = self.calls.get(call_control_id)
            bridge = None if call is None else call.features.get(REMOTE_BRIDGE)
            if call is None or not isinstance(bridge, RemoteBridge) or (
                    bridge.peer_call != peer_id or bridge.hop.peer_ssrc != ssrc):
                return
            _leave_remote(call, peer_id)
            await self.commit(Change(calls=[call.record]))
            log.info("call %s: unbridged, call %s of another process ended", call.id,
                     peer_id, extra={"call_control_id": call.id})

    # -- reports from telephony ----------------------------------------------

    async def incoming_call(
        self, *, from_: str, to: str, connection_id: str, details: dict[str, Any]
    ) -> Call | None:
        """A new INVITE reached us: park it and tell the application (call.initiated)."""
        app = await self.store.get_application(connection_id)
        if app is None or not app.active:
            log.warning("incoming call to %s: no active application %r", to, connection_id)
            return None
        now = self._clock()
        record = new_record(
            direction="incoming",
            connection_id=app.id,
            from_=from_,
            to=to,
            state=CallState.PARKED,
            start_time=iso(now),
            owner=self.owner,
            details=details,
        )
        call = self._adopt(record, app, CallState.PARKED)
        payload = call_payload(call, **call_identity(call))
        for key in ("from_sip_uri", "to_sip_uri", "offered_codecs", "custom_headers",
                    "caller_id_name"):
            if key in details:
                payload[key] = details[key]
        if self.lease_new is not None:
            await self.lease_new(call.id)
        await self.commit(
            Change(calls=[call.record], events=[call_event(call, "call.initiated", payload, now)])
        )
        return call

    async def leg_answered(self, call: Call, media: dict[str, Any]) -> None:
        async with self.lock(call.id):
            if call.state not in (CallState.ANSWERING, CallState.BRIDGING):
                return
            now = self._clock()
            call.apply(CallEvent.ANSWERED, answer_time=iso(now))
            call.update(details={**call.record.details, **media})
            payload = call_payload(call, **call_identity(call), **media)
            await self.commit(
                Change(calls=[call.record], events=[call_event(call, "call.answered", payload,
                                                               now)])
            )
            log.info("call %s: answered (%s, %s to %s, codec %s/%s)", call.id,
                     call.record.direction, call.record.from_, call.record.to,
                     media.get("codec", "?"), media.get("sampling_rate", "?"),
                     extra={"call_control_id": call.id})
        for hook in self.hooks:
            try:
                await hook.answered(call)
            except Exception:
                log.exception("call %s: %s failed on answer", call.id, type(hook).__name__)

    async def leg_ended(
        self,
        call: Call,
        *,
        cause: str,
        source: str,
        sip_code: int | None,
        quality: dict[str, Any] | None = None,
        extra_events: list[FeatureEvent] | None = None,
    ) -> None:
        """The leg is gone. Its features stop; their webhooks and ``extra_events`` are
        sent before call.hangup."""
        async with self.lock(call.id):
            if not call.alive:
                return
            extra_events = [*self._detach_features(call), *(extra_events or [])]
            now = self._clock()
            call.apply(
                CallEvent.ENDED,
                end_time=iso(now),
                hangup_cause=cause,
                hangup_source=source,
                sip_hangup_cause=str(sip_code) if sip_code else "unspecified",
            )
            events = [
                call_event(call, etype, call_payload(call, **extra), now)
                for etype, extra in extra_events
            ]
            payload = call_payload(
                call,
                **call_identity(call),
                end_time=call.record.end_time,
                hangup_cause=cause,
                hangup_source=source,
                sip_hangup_cause=call.record.sip_hangup_cause,
            )
            if quality:
                payload["call_quality_stats"] = quality
            events.append(call_event(call, "call.hangup", payload, now))
            await self.commit(Change(calls=[call.record], events=events))
            log.info("call %s: ended: %s, hung up by %s (SIP %s)%s", call.id, cause, source,
                     sip_code or "-", "" if call.record.answer_time else ", never answered",
                     extra={"call_control_id": call.id, "hangup_cause": cause,
                            "hangup_source": source})
            self.calls.pop(call.id, None)
            if call.bridged_with and (peer := self.calls.get(call.bridged_with)):
                peer.bridged_with = None

    @staticmethod
    def _detach_features(call: Call) -> list[FeatureEvent]:
        events: list[FeatureEvent] = []
        for key, feature in list(call.features.items()):
            try:
                events.extend(feature.detach("hangup"))
            except Exception:
                log.exception("call %s: feature %s failed to stop", call.id, key)
        call.features.clear()
        return events

    async def leg_event(self, call: Call, event_type: str, extra: dict[str, Any]) -> None:
        """Any other call webhook (call.dtmf.received, streaming.*, call.fork.*...)."""
        now = self._clock()
        await self.commit(
            Change(events=[call_event(call, event_type, call_payload(call, **extra), now)])
        )

    async def close_orphans(self, *, only_own: bool = False,
                            owners_elsewhere: frozenset[str] = frozenset(),
                            claim: Callable[[str], Awaitable[bool]] | None = None) -> int:
        """At start-up, end every call the store still has alive; return how many.

        This runs before the node takes SIP or HTTP, so a call of this node alive now was
        left by a process that died without hanging it up (kill -9, power loss, a
        container replaced): its SIP and media died with that process. With SQLite one
        store serves one node (the data dir's lock, :mod:`callstream.store.node_lock`), so
        every live call is such a call, whatever its ``owner``. On a store several nodes
        share, pass ``only_own``: only calls whose ``owner`` is this node's id are ended;
        the others belong to live nodes (a dead node's calls are ended by a survivor
        once its Redis leases expire: :mod:`callstream.cluster.node`). Each one's ended
        row and its one ``call.hangup`` commit together, so a crash midway leaves the
        rest alive for the next start, and a second sweep finds none of those already
        ended. A worker of ``--workers N`` skips the
        calls of ``owners_elsewhere``, its live siblings (callstream/workers/). With
        ``claim`` (Redis, :meth:`callstream.cluster.leases.Leases.claim`), a call is ended
        only if it says so: a survivor may have taken it over while this node was down.
        """
        records = [rec for rec in await self.store.list_calls(
                       alive=True, owner=self.owner if only_own else None)
                   if rec.owner not in owners_elsewhere]
        if claim is not None:
            records = [rec for rec in records if await claim(rec.call_control_id)]
        await self.end_lost(records)
        return len(records)

    async def end_lost(self, records: list[CallRecord]) -> None:
        """End calls whose SIP and media died with their process (this node's last one,
        or a dead node's: :mod:`callstream.cluster`): each one's ended row and its one
        ``call.hangup`` (``hangup_cause`` ``unspecified``, ``hangup_source`` ``unknown``)
        commit together."""
        apps: dict[str, Application | None] = {}
        for rec in records:
            if rec.connection_id not in apps:
                apps[rec.connection_id] = await self.store.get_application(rec.connection_id)
            app = apps[rec.connection_id]
            now = self._clock()
            ended = replace(
                rec, state=CallState.HANGUP.value, is_alive=False, end_time=iso(now),
                hangup_cause="unspecified", hangup_source="unknown",
                sip_hangup_cause="unspecified",
            )
            call = Call(
                record=ended,
                state=CallState.HANGUP,
                application_webhook_url=app.webhook_event_url if app else None,
                application_failover_url=app.webhook_event_failover_url if app else None,
                webhook_timeout_secs=float(app.webhook_timeout_secs or 10) if app else 10.0,
            )
            payload = call_payload(
                call, **call_identity(call), end_time=ended.end_time,
                hangup_cause="unspecified", hangup_source="unknown",
                sip_hangup_cause="unspecified",
            )
            await self.commit(
                Change(calls=[ended], events=[call_event(call, "call.hangup", payload, now)])
            )
            bridged = rec.details.get(REMOTE_BRIDGE)
            if isinstance(bridged, dict) and self.remote_bridges is not None:
                # Its bridge's other call, held by another process, goes on unbridged.
                self.remote_bridges.tell_left(str(bridged.get("call")), rec.call_control_id,
                                              int(bridged.get("ssrc", 0)))

    async def hangup_all(self) -> None:
        """Shutdown: hang up every live call so their webhooks are stored before exit."""
        for call in list(self.calls.values()):
            if call.alive and call.state is not CallState.HANGING_UP:
                try:
                    await self.hangup(call.id, Hangup())
                except CommandError:
                    continue


def _hung_up(call: Call) -> bool:
    """Asked to hang up, not yet ended (a function: the state changes across awaits)."""
    return call.state is CallState.HANGING_UP


def _tel_uri(number: str) -> str:
    return f"sip:{number}@callstream.invalid"


def _leave_remote(call: Call, knows: str | None) -> None:
    """Drop the call's bridge with a call of another process, if any. That call's owner
    is told, unless that call is ``knows``: it ended and told us, or it rejoins (a
    retried bridge, whose new hop replaces the old)."""
    previous = call.features.pop(REMOTE_BRIDGE, None)
    if not isinstance(previous, RemoteBridge):
        return
    if previous.peer_call == knows:
        previous.close()
    else:
        previous.detach("bridged")
    if call.bridged_with == previous.peer_call:
        call.bridged_with = None
    call.update(details={k: v for k, v in call.record.details.items() if k != REMOTE_BRIDGE})
