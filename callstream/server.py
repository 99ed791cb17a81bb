"""The composition root: builds every part from settings, starts and stops them in order.

Start: node lock → HTTP port bound → store (migrations) → default application → calls a
crash left alive ended → webhook worker → telephony (SIP, RTP) → HTTP serving → start-up
checks beside it (webhook URL unset or refusing, webhooks pending from earlier runs:
docs/logging.md). A port already taken (:class:`~callstream.listening.ListenError`) stops
what had started and reaches the command line, which says so in one line. Drain
(SIGTERM, which ``callstream drain`` sends): take no new calls (SIP 503 to new INVITEs and
to OPTIONS probes, so a front such as Kamailio fails over) and let live calls end on
their own for up to ``drain_timeout_secs``, then stop. Stop (SIGINT, a second SIGTERM, or
after the drain): stop taking HTTP requests, hang up every live call and wait for the
hangups to be stored, stop telephony, let the webhook worker finish its in-flight
attempts, close the store, drop the node lock. Anything undelivered stays pending in the
store and goes out on the next start.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
import signal
import socket
import time
from dataclasses import replace
from typing import TYPE_CHECKING

import uvicorn

from callstream.api.app import create_app
from callstream.api.auth import ASGIApp
from callstream.api.http_protocol import HttpLimits, LimitedHttpProtocol
from callstream.api.render import ApiReceipts
from callstream.api.services import Services
from callstream.build import media_build
from callstream.calls.control import CallControl, CallParts
from callstream.calls.remote_bridge import RemoteBridges
from callstream.cluster.exceptions import RedisUnavailable
from callstream.cluster.forward import OwnerForwarding
from callstream.cluster.peers import PeerConnections
from callstream.config import Settings
from callstream.console.feed import ConsoleFeed
from callstream.console.sessions import ConsoleSessions
from callstream.fd_limit import check_open_files_limit, raise_open_files_limit
from callstream.forking.manager import ForkManager
from callstream.listening import ListenError, bind_tcp, bound_url
from callstream.metrics import ACTIVE_CALLS, CALL_LOCKS
from callstream.node_id import node_identity
from callstream.sip.transport import SipTransport
from callstream.store.exceptions import StoreError, StoreInUse
from callstream.store.node_lock import NodeIdLock, NodeLock
from callstream.store.outbox import Outbox
from callstream.store.records import DEFAULT_APP_ID, Application
from callstream.store.sql import SqlStore
from callstream.streaming.manager import StreamManager
from callstream.telephony.switch import Switch
from callstream.timefmt import iso_now
from callstream.transcription.manager import TranscriptionManager
from callstream.webhooks.probe import probe_webhook_url
from callstream.webhooks.signing import load_signer
from callstream.webhooks.worker import WebhookWorker
from callstream.webrtc.gateway import WebRtcGateway
from callstream.workers.dispatch import owned_token
from callstream.workers.seat import WorkerSeat
from callstream.workers.sip_relay import RelayedSipTransport

if TYPE_CHECKING:
    from callstream.cluster.node import ClusterNode

log = logging.getLogger(__name__)

#: How long shutdown waits for hung-up calls to end before forcing them.
HANGUP_GRACE_SECS = 5.0
#: How often a drain looks whether the live calls have ended.
DRAIN_POLL_SECS = 0.1


async def ensure_default_application(store: SqlStore, settings: Settings) -> Application:
    """The ``default`` connection, so a new user needs no set-up step; settings own its URLs."""
    now = iso_now()
    app = await store.get_application(DEFAULT_APP_ID)
    if app is None:
        app = Application(
            id=DEFAULT_APP_ID,
            application_name="default",
            webhook_event_url=settings.webhook_url,
            webhook_event_failover_url=settings.webhook_failover_url,
            webhook_timeout_secs=settings.webhook_timeout_secs,
            active=True,
            created_at=now,
            updated_at=now,
        )
    elif (app.webhook_event_url, app.webhook_event_failover_url) != (
        settings.webhook_url,
        settings.webhook_failover_url,
    ) and (settings.webhook_url or settings.webhook_failover_url):
        app = replace(
            app,
            webhook_event_url=settings.webhook_url,
            webhook_event_failover_url=settings.webhook_failover_url,
            updated_at=now,
        )
    else:
        return app
    await store.put_application(app)
    return app


async def start_checks(store: SqlStore, settings: Settings, app: Application) -> None:
    """Warn about what would leave a newcomer's calls unanswered without a word:
    no webhook URL, nothing listening there, events queued from earlier runs."""
    try:
        for backlog in await Outbox(store).pending_by_url():
            age = max(0.0, time.time() - backlog.oldest_created_at)
            log.warning(
                "%d webhooks pending for %s (oldest %.0f s old): they are delivered in "
                "order once it answers, those of calls that have since ended included "
                "(docs/logging.md, \"Late receivers\")", backlog.count,
                backlog.url or "no URL", age, extra={"url": backlog.url})
    except StoreError as exc:
        log.warning("cannot count pending webhooks: %s", exc)
    url = app.webhook_event_url
    park = settings.sip_park_timeout_secs
    if not url:
        log.warning("the default application has no webhook URL: calls will park "
                    "unanswered (480 after %g s): set CALLSTREAM_WEBHOOK_URL to your "
                    "application's URL (or webhook_url in --config; docs/webhooks.md)",
                    park)
        return
    problem = await probe_webhook_url(url, settings.outbound_policy)
    if problem is not None:
        log.warning("webhook URL %s of the default application: %s: calls will park "
                    "unanswered (480 after %g s) until something answers there; start "
                    "your webhook receiver or set CALLSTREAM_WEBHOOK_URL (events are "
                    "kept and delivered in order once it answers)", url, problem, park,
                    extra={"url": url})


def console_base_url(http: str) -> str:
    """``http://HOST:PORT`` a browser on this machine reaches the server at (a wildcard
    listen address is reached on loopback)."""
    host, _, port = http.rpartition(":")
    host = host.strip("[]")
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


class Server:
    """The whole server in this process, or, given a ``seat``, worker ``seat.index`` of
    ``callstream serve --workers N``: its supervisor holds the node lock, the public
    sockets and webhook delivery (callstream/workers/)."""

    def __init__(self, settings: Settings, seat: WorkerSeat | None = None) -> None:
        self.settings = settings
        self.seat = seat
        self.store = SqlStore(settings.effective_database_url, inline_sqlite=settings.sqlite_inline)
        self.node_lock = (NodeLock.for_database(settings.effective_database_url)
                          if seat is None else None)
        self.node_id_lock: NodeIdLock | None = None  # a shared (PostgreSQL) store's
        #: Set at start (callstream.node_id): the owner of this node's calls and leases.
        self.node_id: str | None = None
        self.webhooks: WebhookWorker | None = None
        self.calls: CallControl | None = None
        self.http: uvicorn.Server | None = None
        self._stopping = asyncio.Event()
        self._drain_requested = asyncio.Event()
        self.outbound = settings.outbound_policy  # built once
        self.switch: Switch | None = None
        self._switch_running = False
        self.webrtc: WebRtcGateway | None = None
        self.streams: StreamManager | None = None
        self.forks: ForkManager | None = None
        self.transcriptions: TranscriptionManager | None = None
        self._http_sockets: list[socket.socket] = []
        self._checks: asyncio.Task[None] | None = None
        self.console: ConsoleFeed | None = None
        self.cluster: ClusterNode | None = None  # with redis_url (callstream.cluster)
        self.peers: PeerConnections | None = None  # the cluster's: commands forwarded

    async def start(self) -> None:
        settings = self.settings
        check_open_files_limit(
            raise_open_files_limit(),
            settings.http_max_connections + settings.sip_tcp_max_connections,
        )
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        node_id = self.node_id = node_identity(settings.node_id, settings.data_dir)
        if self.node_lock is not None:
            self.node_lock.acquire()
        # HTTP's port first: a port someone holds fails the start before anything opens.
        http_host, http_port = settings.http_host_port
        self._http_sockets = bind_tcp("HTTP", http_host, http_port)
        await self.store.open()
        if not self.store.is_sqlite:
            self.node_id_lock = NodeIdLock(node_id)
            await self.node_id_lock.acquire(self.store.engine)
        default_app = await ensure_default_application(self.store, settings)
        signer = load_signer(settings)
        seat = self.seat
        # Recorded on each call row; a worker's names it, so the HTTP front routes a
        # call's commands to it and a restarted worker ends only its own orphans.
        owner = node_id if seat is None else seat.owner
        self.webhooks = WebhookWorker(self.store, settings, signer, worker_id=node_id)
        calls = self.calls = CallControl(
            self.store, self._call_parts, owner=owner, receipts=ApiReceipts(),
            trunk_uri=settings.trunk_uri,
            wake_webhooks=self.webhooks.wake if seat is None else seat.wake_webhooks)
        ACTIVE_CALLS.set_function(lambda: len(calls.calls))
        CALL_LOCKS.set_function(lambda: len(calls.call_locks) + len(calls.dial_locks))
        if settings.redis_url is not None:
            # Alive in Redis before ending orphans: no survivor takes this node's calls
            # over from now on, and those it took already are not ended twice.
            try:
                from callstream.cluster.node import ClusterNode
            except ImportError as exc:
                raise RedisUnavailable("redis_url needs the redis client: pip install "
                                       "'callstream[postgres]'") from exc
            address = (settings.node_address.rstrip("/") if settings.node_address
                       else bound_url(self._http_sockets[0]))
            self.cluster = await ClusterNode.connect(
                settings.redis_url, node_id, address, calls, self.webhooks,
                lease_secs=settings.call_lease_secs, scan_secs=settings.failover_scan_secs)
            calls.lease_new = self.cluster.lease_new
        if seat is not None or self.cluster is not None:
            # Other processes hold calls too: a bridge with one of theirs goes through
            # the front (a worker's node_address is its supervisor's listener). Set
            # before the orphans end: their bridges' other calls are told.
            assert self.switch is not None  # built with calls
            calls.remote_bridges = RemoteBridges(
                settings.node_address or bound_url(self._http_sockets[0]),
                signer.peer_token(), self.switch.media_options.host)
        # SQLite: one node per store (the node lock), so every live call is an orphan
        # (but a worker's live siblings' calls). PostgreSQL: other nodes' live calls are
        # theirs; only this node's are orphans.
        orphans = await calls.close_orphans(
            only_own=not self.store.is_sqlite,
            owners_elsewhere=frozenset() if seat is None else seat.owners_elsewhere,
            claim=None if self.cluster is None else self.cluster.leases.claim)
        if orphans:
            log.warning("%d calls of node %s were alive when its last process died; "
                        "ended them (call.hangup sent)", orphans, owner)
        if seat is None:  # a worker's webhooks are delivered by its supervisor
            await self.webhooks.start()
        assert self.switch is not None  # built with calls
        await self.switch.start()
        self._switch_running = True
        console_sessions = None
        if settings.console_enabled:
            console_sessions = ConsoleSessions(
                session_ttl=settings.console_session_ttl_secs,
                link_ttl=settings.console_login_link_ttl_secs)
            self.console = ConsoleFeed(calls, self.webhooks.outbox)
            calls.commit_listeners.append(self.console.committed)
        services = Services(
            settings=settings, store=self.store, calls=calls,
            outbound=self.outbound, webhooks=self.webhooks, streams=self.streams,
            forks=self.forks, transcriptions=self.transcriptions, webrtc=self.webrtc,
            console_sessions=console_sessions, console_feed=self.console)
        host, port = settings.http_host_port
        app: ASGIApp = create_app(services)
        if self.cluster is not None:
            self.peers = PeerConnections()
            app = OwnerForwarding(app, self.cluster.route, self.peers, node_id,
                                  max_body_size=settings.http_max_body_size)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            lifespan="off",
            access_log=False,
            loop="none",
            http=LimitedHttpProtocol.with_limits(HttpLimits(
                max_head_size=settings.http_max_head_size,
                header_timeout=settings.http_header_timeout,
                max_connections=settings.http_max_connections,
            )),
            timeout_keep_alive=settings.http_keepalive_timeout,
        )
        config.load()
        self.http = uvicorn.Server(config)
        self.http.lifespan = config.lifespan_class(config)
        await self.http.startup(sockets=self._http_sockets)
        # What start() built lives as long as the process: keep it out of the cycle
        # collector's full passes, which otherwise stall the loop, RTP included, for
        # 90-200 ms under load (docs/benchmarks.md, "SIP load").
        gc.freeze()
        if self.seat is not None:
            self.seat.ready(self._http_sockets[0].getsockname()[1])
        log.info("callstream listening: http=%s sip=%s data=%s media=%s%s", settings.http,
                 settings.sip, settings.data_dir, media_build(),
                 "" if self.seat is None else f" ({self.seat.owner})")
        if services.console_sessions is not None:
            token = services.console_sessions.issue_link(time.monotonic())
            # One-time login link, valid console_login_link_ttl_secs (docs/console.md).
            log.info("console: %s/console?token=%s", console_base_url(settings.http), token)
        if self.cluster is not None:
            self.cluster.start()
        if self.seat is None:  # the supervisor runs them once for its workers
            self._checks = asyncio.create_task(
                start_checks(self.store, settings, default_app), name="start-checks")


    def _call_parts(self, calls: CallControl) -> CallParts:
        """What Call Control drives, built with it (each part reports back to it): the
        switch (SIP and RTP; started later, after the webhook worker) and the feature
        managers, whose hooks run in this order."""
        settings = self.settings
        self.switch = Switch(settings, calls, sip_transport=(
            SipTransport if self.seat is None else RelayedSipTransport.for_seat(self.seat)))
        self.streams = StreamManager(
            calls, account_id=settings.account_id,
            stall_timeout=settings.stream_stall_timeout_secs,
            buffer_secs=settings.stream_buffer_secs,
            stop_grace=settings.stream_stop_grace_secs,
            reconnect_secs=settings.stream_reconnect_secs,
            latency_bound=settings.stream_latency_bound_secs,
            playback_standing_ms=settings.playback_standing_ms,
            outbound=self.outbound)
        self.forks = ForkManager(calls, outbound=self.outbound)
        self.transcriptions = TranscriptionManager(calls, settings)
        # Browser calls run beside the switch's; every other command goes on to it. A
        # worker's tokens and session names hash to itself: the front routes by them.
        seat = self.seat
        self.webrtc = WebRtcGateway(
            settings, calls, self.switch,
            draw=(secrets.token_urlsafe if seat is None
                  else owned_token(seat.index, seat.count, secrets.token_urlsafe)),
            legs_elsewhere=None if seat is None else self._webrtc_legs_elsewhere)
        return CallParts(self.webrtc, (self.streams, self.forks, self.transcriptions))

    async def _webrtc_legs_elsewhere(self) -> int:
        """The browser legs the node's other workers hold, read from the store (an offer
        is human-paced: one read of the live calls is nothing)."""
        assert self.seat is not None
        elsewhere = self.seat.owners_elsewhere
        return sum(1 for call in await self.store.list_calls(alive=True)
                   if call.owner in elsewhere and call.details.get("webrtc"))

    async def stop(self) -> None:
        if self._checks is not None:
            self._checks.cancel()
        if self.calls is not None:
            await self.calls.hangup_all()
            deadline = asyncio.get_running_loop().time() + HANGUP_GRACE_SECS
            while self.calls.calls and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            if self.calls.remote_bridges is not None:  # bridges with other processes' calls
                await self.calls.remote_bridges.close()
        if self.webrtc is not None:
            await self.webrtc.stop()
        if self.switch is not None and self._switch_running:
            await self.switch.stop()
        if self.console is not None:
            await self.console.close()  # its open feeds end, so HTTP shutdown need not wait
        if self.http is not None:
            self.http.should_exit = True
            await self.http.shutdown()
        for sock in self._http_sockets:
            sock.close()
        if self.peers is not None:  # no request is forwarded any more
            await self.peers.close()
        # Webhooks first: while this node is alive in Redis, no survivor frees the events
        # it is still sending in its stop grace.
        if self.webhooks is not None and self.seat is None:
            await self.webhooks.stop()
        if self.cluster is not None:
            await self.cluster.stop()
        if self.node_id_lock is not None:
            await self.node_id_lock.release()
        await self.store.close()
        if self.node_lock is not None:
            self.node_lock.release()

    def request_stop(self) -> None:
        self._stopping.set()

    def request_drain(self) -> None:
        """SIGTERM: drain, then stop; a second one stops at once."""
        if self._drain_requested.is_set():
            self.request_stop()
        self._drain_requested.set()

    async def drain(self) -> None:
        """Take no new calls, and wait up to ``drain_timeout_secs`` (or a stop request)
        for the live ones to end; :meth:`stop` hangs up any left."""
        assert self.calls is not None and self.switch is not None  # started
        calls = self.calls
        timeout = self.settings.drain_timeout_secs
        self.switch.drain()
        calls.draining = True
        log.info("draining: new calls get SIP 503 (INVITE and OPTIONS); %d live calls may "
                 "go on for up to %g s", len(calls.calls), timeout)
        loop = asyncio.get_running_loop()
        start = loop.time()
        while (calls.calls and not self._stopping.is_set()  # noqa: ASYNC110
               and loop.time() < start + timeout):
            await asyncio.sleep(DRAIN_POLL_SECS)
        if calls.calls:
            # After the deadline, or sooner on SIGINT or a second SIGTERM.
            log.warning("drain: %d calls still live after %.0f s; hanging them up",
                        len(calls.calls), loop.time() - start)
        else:
            log.info("drain: no live calls left")

    async def run(self) -> None:
        """Serve until SIGINT (stop now) or SIGTERM (drain, then stop)."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGTERM, self.request_drain)
        try:
            try:
                await self.start()
            except (ListenError, StoreInUse, RedisUnavailable):
                await self.stop()  # what started before the port or lock that failed
                raise
            assert self.http is not None
            ticker = asyncio.create_task(self.http.main_loop())
            stop = asyncio.create_task(self._stopping.wait())
            drain = asyncio.create_task(self._drain_requested.wait())
            await asyncio.wait((stop, drain), return_when=asyncio.FIRST_COMPLETED)
            drain.cancel()
            if not self._stopping.is_set():
                await self.drain()
            stop.cancel()
            log.info("shutting down")
            await self.stop()
            await ticker
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


def run_server(settings: Settings) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(Server(settings).run())
    else:
        uvloop.run(Server(settings).run())
