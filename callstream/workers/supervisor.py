"""``callstream serve --workers N``: the supervisor process.

It holds what one node has once: the store's node lock, the public SIP (UDP and TCP)
and HTTP sockets, and webhook delivery. It starts N workers (:mod:`.child`), each a whole
server on the shared SQLite store that owns the calls it set up, and

- relays each SIP datagram to the worker that owns its Call-ID (:mod:`.dispatch`);
  workers answer on the public UDP socket themselves;
- holds every SIP TCP connection, relays each message framed off one the same way, and
  writes what workers send over TCP on the connection to that address (opening one
  when there is none, and telling every worker when that fails, as one process's
  endpoint hears it);
- forwards each HTTP request to a worker (:mod:`.http_front`): a call's own resources to
  the worker its row names as ``owner``, everything else round-robin;
- delivers every worker's webhooks from the one outbox, so each call's order is kept as
  in one process; workers wake it when they commit rows;
- restarts a worker that dies; the new one ends the dead one's calls (one
  ``call.hangup`` each) before it takes SIP.

SIGINT stops the workers at once and SIGTERM drains them, as one process does with each
(``callstream drain`` finds the supervisor by the node lock); a second signal stops a
drain at once. Once the workers have exited (their calls hung up and stored): the
listeners, webhook delivery, the store and the lock.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
import signal
import socket
import sqlite3
import sys
from dataclasses import dataclass

from prometheus_client import generate_latest
from sqlalchemy.engine import make_url

from callstream.api.http_protocol import HttpLimits
from callstream.build import media_build
from callstream.config import Settings
from callstream.fd_limit import check_open_files_limit, raise_open_files_limit
from callstream.listening import ListenError, bind_tcp, bound_url
from callstream.node_id import node_identity
from callstream.server import ensure_default_application, start_checks
from callstream.sip.events import Addr
from callstream.sip.records import TCP, UDP
from callstream.sip.tcp import TcpConnections
from callstream.sip.transport_stats import TransportStats
from callstream.store.node_lock import NodeLock
from callstream.store.sql import SqlStore
from callstream.webhooks.signing import load_signer
from callstream.webhooks.worker import WebhookWorker
from callstream.workers.dispatch import owner_index, worker_for_datagram, worker_for_key
from callstream.workers.exceptions import RelayError, WorkersError
from callstream.workers.http_front import front_factory
from callstream.workers.metrics import SIP_RELAY_DROPPED, WORKER_RESTARTS, WORKERS_RUNNING
from callstream.workers.relay import (
    MAX_MESSAGE,
    Ready,
    TcpSend,
    Wake,
    decode,
    encode_sip,
    encode_tcp_failed,
)

log = logging.getLogger(__name__)

#: How long a worker may take from spawn to serving before the start fails.
WORKER_START_TIMEOUT = 60.0
#: Pause before a dead worker is started again, so a worker that cannot start does
#: not spin.
RESTART_DELAY = 0.5
#: SIP datagrams read from the public socket per wake-up.
SIP_READ_BATCH = 64
#: The smallest slice of the RTP port range a worker gets (two calls' RTP/RTCP pairs).
MIN_RTP_PORTS = 4
#: Busy wait of the owner lookup's SQLite reads (a checkpoint resetting the WAL).
OWNER_READ_TIMEOUT = 5.0
#: Tries to find a port free for both UDP and TCP when SIP's port is 0.
SIP_BIND_ATTEMPTS = 10


@dataclass(slots=True)
class Worker:
    """One worker slot; its process changes when it is restarted."""

    index: int
    relay: socket.socket | None = None
    process: asyncio.subprocess.Process | None = None
    http_port: int | None = None
    started: asyncio.Future[int] | None = None
    restarts: int = 0


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        if settings.database_url and not settings.effective_database_url.startswith("sqlite"):
            raise WorkersError("--workers shares one SQLite store between the workers; on "
                               "PostgreSQL a node is one process: run one node per core "
                               "behind the Kamailio front (docs/cluster.md)")
        self.settings = settings
        self.count = settings.worker_count
        if (settings.rtp_port_max - settings.rtp_port_min + 1) // self.count < MIN_RTP_PORTS:
            raise WorkersError(
                f"the RTP port range {settings.rtp_port_min}-{settings.rtp_port_max} is too "
                f"small for {self.count} workers: each takes a slice of it, at least "
                f"{MIN_RTP_PORTS} ports")
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.node = node_identity(settings.node_id, settings.data_dir)
        self.store = SqlStore(settings.effective_database_url, inline_sqlite=settings.sqlite_inline)
        self.node_lock = NodeLock.for_database(settings.effective_database_url)
        self.workers = [Worker(i) for i in range(self.count)]
        self.webhooks: WebhookWorker | None = None
        self._sip: socket.socket | None = None
        self.sip_stats = TransportStats()
        self._sip_tcp: TcpConnections | None = None
        self._http_sockets: list[socket.socket] = []
        self._http_servers: list[asyncio.Server] = []
        self._owners: sqlite3.Connection | None = None
        self._round_robin = itertools.cycle(range(self.count))
        self._stopping = asyncio.Event()
        self._stop_signal = signal.SIGINT
        self._closing = False
        self._watchers: set[asyncio.Task[None]] = set()
        self._checks: asyncio.Task[None] | None = None

    # -- start ---------------------------------------------------------------

    async def start(self) -> None:
        settings = self.settings
        check_open_files_limit(
            raise_open_files_limit(),
            settings.http_max_connections + settings.sip_tcp_max_connections)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        if self.node_lock is not None:
            self.node_lock.acquire()
        http_host, http_port = settings.http_host_port
        self._http_sockets = bind_tcp("HTTP", http_host, http_port)
        self._sip = await self._bind_sip()
        await self.store.open()  # migrations run here, once, before any worker opens it
        default_app = await ensure_default_application(self.store, settings)
        self.webhooks = WebhookWorker(self.store, settings, load_signer(settings),
                                      worker_id=self.node)
        await self.webhooks.start()
        database = make_url(settings.effective_database_url).database
        assert database is not None
        self._owners = sqlite3.connect(database, isolation_level=None,
                                       check_same_thread=False, timeout=OWNER_READ_TIMEOUT)
        loop = asyncio.get_running_loop()
        loop.add_reader(self._sip.fileno(), self._sip_readable)
        await asyncio.gather(*(self._spawn(worker) for worker in self.workers))
        for worker in self.workers:
            task = asyncio.create_task(self._watch(worker), name=f"watch-worker-{worker.index}")
            self._watchers.add(task)
        limits = HttpLimits(max_head_size=settings.http_max_head_size,
                            header_timeout=settings.http_header_timeout,
                            max_connections=settings.http_max_connections)
        for sock in self._http_sockets:
            self._http_servers.append(await loop.create_server(
                front_factory(self, limits), sock=sock, backlog=1024))
        log.info("callstream listening: http=%s sip=%s data=%s media=%s workers=%d",
                 settings.http, settings.sip, settings.data_dir, media_build(), self.count)
        if settings.console_enabled:
            log.info("the console (/console) is off with --workers: its feed and sign-ins "
                     "live in one process; serve without --workers to use it")
        self._checks = asyncio.create_task(start_checks(self.store, settings, default_app),
                                           name="start-checks")

    async def _bind_sip(self) -> socket.socket:
        """The public SIP sockets: UDP, and TCP on the same port."""
        host, port = self.settings.sip_host_port
        settings = self.settings
        for attempt in range(SIP_BIND_ATTEMPTS if port == 0 else 1):
            sock = self._bind_sip_udp(host, port)
            bound = sock.getsockname()[1]
            tcp = TcpConnections(
                asyncio.get_running_loop(), on_message=self._sip_tcp_message,
                on_failed=self._sip_tcp_failed, stats=self.sip_stats,
                idle_timeout=settings.sip_tcp_idle_timeout,
                max_inbound=settings.sip_tcp_max_connections)
            try:
                await tcp.listen(host, bound)
            except OSError as exc:
                sock.close()
                if exc.errno == errno.EADDRINUSE and attempt + 1 < SIP_BIND_ATTEMPTS:
                    continue  # port 0 found a UDP port whose TCP twin is taken
                raise ListenError("SIP", host, bound, "TCP", exc) from exc
            self._sip_tcp = tcp
            return sock
        raise AssertionError("unreachable: the last attempt returns or raises")

    @staticmethod
    def _bind_sip_udp(host: str, port: int) -> socket.socket:
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                host or None, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)[0]
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            raise ListenError("SIP", host, port, "UDP", exc) from exc
        try:
            sock.bind(address)
        except OSError as exc:
            sock.close()
            raise ListenError("SIP", host, port, "UDP", exc) from exc
        sock.setblocking(False)
        return sock

    def _worker_settings(self, index: int) -> bytes:
        """A worker's settings: HTTP on a loopback port of its own, its slice of the
        RTP range (so a port one worker just let go rests before another takes it), the
        front's URL as its node's address."""
        settings = self.settings
        span = (settings.rtp_port_max - settings.rtp_port_min + 1) // self.count
        low = settings.rtp_port_min + index * span
        # The console's feed and sessions live in one process: not served with workers.
        return settings.model_copy(update={
            "http": "127.0.0.1:0", "workers": 1, "console_enabled": False,
            "rtp_port_min": low, "rtp_port_max": low + span - 1,
            # A source's calls are spread by Call-ID, so each worker admits its share of
            # what one source may do: together, the node's limits.
            "sip_rate_limit_per_sec": settings.sip_rate_limit_per_sec / self.count,
            "sip_rate_limit_burst": _share(settings.sip_rate_limit_burst, index, self.count),
            "sip_max_parked_per_source": _share(settings.sip_max_parked_per_source, index,
                                                self.count),
            # Where the worker asks another worker's call (a bridge): this front.
            "node_address": bound_url(self._http_sockets[0]),
        }).model_dump_json().encode()

    async def _spawn(self, worker: Worker) -> None:
        assert self._sip is not None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        ours.setblocking(False)
        loop = asyncio.get_running_loop()
        worker.started = loop.create_future()
        worker.relay = ours
        loop.add_reader(ours.fileno(), self._relay_readable, worker)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "callstream.workers.child", str(worker.index),
                str(self.count), self.node, str(theirs.fileno()), str(self._sip.fileno()),
                stdin=asyncio.subprocess.PIPE, start_new_session=True,  # Ctrl-C: us only
                pass_fds=(theirs.fileno(), self._sip.fileno()))
        finally:
            theirs.close()
        worker.process = process
        assert process.stdin is not None
        process.stdin.write(self._worker_settings(worker.index))
        process.stdin.close()
        exited = asyncio.ensure_future(process.wait())
        done, _ = await asyncio.wait({worker.started, exited}, timeout=WORKER_START_TIMEOUT,
                                     return_when=asyncio.FIRST_COMPLETED)
        if worker.started not in done:
            exited.cancel()
            if process.returncode is None:
                process.kill()
            raise WorkersError(f"worker {worker.index} did not start "
                               f"(exit status {process.returncode})")
        exited.cancel()
        worker.http_port = worker.started.result()
        WORKERS_RUNNING.inc()
        log.info("worker %d started: pid %d, HTTP on 127.0.0.1:%d", worker.index,
                 process.pid, worker.http_port)

    async def _watch(self, worker: Worker) -> None:
        """Restart ``worker`` whenever it dies, until the supervisor stops."""
        while True:
            assert worker.process is not None
            status = await worker.process.wait()
            self._forget(worker)
            if self._closing:
                return
            worker.restarts += 1
            WORKER_RESTARTS.labels(str(worker.index)).inc()
            log.error("worker %d (pid %d) exited with status %d; its calls are ended and "
                      "it is started again (restart %d)", worker.index, worker.process.pid,
                      status, worker.restarts)
            while not self._closing:
                await asyncio.sleep(RESTART_DELAY)
                try:
                    await self._spawn(worker)
                    break
                except (WorkersError, OSError) as exc:
                    self._forget(worker)
                    log.error("worker %d could not be started again: %s", worker.index, exc)

    def _forget(self, worker: Worker) -> None:
        if worker.http_port is not None:
            WORKERS_RUNNING.dec()
        worker.http_port = None
        if worker.relay is not None:
            asyncio.get_running_loop().remove_reader(worker.relay.fileno())
            worker.relay.close()
            worker.relay = None

    # -- relays --------------------------------------------------------------

    def _sip_readable(self) -> None:
        assert self._sip is not None
        for _ in range(SIP_READ_BATCH):
            try:
                data, addr = self._sip.recvfrom(MAX_MESSAGE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # an ICMP error of an earlier send: UDP goes on
                log.debug("SIP socket: %s", exc)
                continue
            self._relay_sip(data, (addr[0], addr[1]), UDP)

    def _sip_tcp_message(self, data: bytes, addr: Addr) -> None:
        self._relay_sip(data, addr, TCP)

    def _relay_sip(self, data: bytes, addr: Addr, transport: str) -> None:
        worker = self.workers[worker_for_datagram(data, self.count)]
        if worker.http_port is None and self._closing:
            # Draining: a worker whose calls have all ended is gone; another still
            # draining answers what it would have (503 to INVITE and OPTIONS).
            worker = next((w for w in self.workers if w.http_port is not None), worker)
        if worker.relay is None or worker.http_port is None:
            SIP_RELAY_DROPPED.labels(str(worker.index)).inc()  # restarting
            return
        try:
            worker.relay.send(encode_sip(data, addr, transport))
        except OSError as exc:
            SIP_RELAY_DROPPED.labels(str(worker.index)).inc()
            log.debug("SIP relay to worker %d: %s", worker.index, exc)

    def _sip_tcp_failed(self, addr: Addr) -> None:
        """Every worker hears it, as one process's endpoint does: each fails its own
        transactions to ``addr``."""
        message = encode_tcp_failed(addr)
        for worker in self.workers:
            if worker.relay is not None:
                try:
                    worker.relay.send(message)
                except OSError as exc:
                    log.debug("TCP failure notice to worker %d: %s", worker.index, exc)

    def _relay_readable(self, worker: Worker) -> None:
        relay = worker.relay
        if relay is None:
            return
        for _ in range(SIP_READ_BATCH):
            try:
                message = relay.recv(MAX_MESSAGE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            try:
                decoded = decode(message)
            except RelayError as exc:
                log.warning("worker %d: %s", worker.index, exc)
                continue
            if isinstance(decoded, TcpSend):
                if self._sip_tcp is not None:
                    self._sip_tcp.send(decoded.data, decoded.addr)
            elif isinstance(decoded, Wake):
                if self.webhooks is not None:
                    self.webhooks.wake()
            elif (isinstance(decoded, Ready) and worker.started is not None
                  and not worker.started.done()):
                worker.started.set_result(decoded.http_port)

    # -- the HTTP front's directory -----------------------------------------

    def port_for(self, call_control_id: str | None) -> int | str:
        if call_control_id is not None and self._owners is not None:
            row = self._owners.execute(
                "SELECT owner FROM calls WHERE call_control_id = ?", (call_control_id,)
            ).fetchone()
            index = None if row is None else owner_index(row[0], self.node, self.count)
            if index is not None:
                port = self.workers[index].http_port
                if port is None:
                    return f"the worker that owns call {call_control_id} is restarting"
                return port
        for _ in range(self.count):
            port = self.workers[next(self._round_robin)].http_port
            if port is not None:
                return port
        return "no worker is running"

    def port_for_key(self, key: str) -> int | str:
        port = self.workers[worker_for_key(key.encode(), self.count)].http_port
        return "the worker that holds this browser call is restarting" if port is None else port

    def running_ports(self) -> list[int]:
        return [w.http_port for w in self.workers if w.http_port is not None]

    def own_metrics(self) -> str:
        return generate_latest().decode()

    # -- stop ----------------------------------------------------------------

    def _signalled(self, sig: signal.Signals) -> None:
        if not self._stopping.is_set():
            self._stop_signal = sig
            self._stopping.set()
        else:  # a second signal: the workers stop now, a drain of theirs included
            for process in self._running():
                process.send_signal(signal.SIGINT)

    def _running(self) -> list[asyncio.subprocess.Process]:
        return [w.process for w in self.workers
                if w.process is not None and w.process.returncode is None]

    async def stop(self, sig: signal.Signals = signal.SIGINT) -> None:
        """Stop the workers with ``sig`` (SIGTERM: a drain, during which the front and
        the SIP relay still serve their live calls), then everything else."""
        self._closing = True
        if self._checks is not None:
            self._checks.cancel()
        if sig == signal.SIGINT:
            for server in self._http_servers:
                server.close()
        running = self._running()
        for process in running:
            process.send_signal(sig)
        await asyncio.gather(*(p.wait() for p in running))
        for server in self._http_servers:
            server.close()
        for task in self._watchers:
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        for worker in self.workers:
            self._forget(worker)
        if self._sip is not None:
            asyncio.get_running_loop().remove_reader(self._sip.fileno())
            self._sip.close()
        if self._sip_tcp is not None:
            await self._sip_tcp.close()
        for sock in self._http_sockets:
            sock.close()
        if self.webhooks is not None:
            await self.webhooks.stop()
        if self._owners is not None:
            self._owners.close()
        await self.store.close()
        if self.node_lock is not None:
            self.node_lock.release()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._signalled, sig)
        try:
            try:
                await self.start()
            except (ListenError, WorkersError):
                await self.stop()
                raise
            await self._stopping.wait()
            draining = self._stop_signal == signal.SIGTERM
            log.info("%s %d workers", "draining" if draining else "shutting down", self.count)
            await self.stop(self._stop_signal)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


def _share(total: int, index: int, count: int) -> int:
    """Worker ``index``'s part of ``total`` split ``count`` ways: 0 (off) stays 0, and
    a limit smaller than the workers gives each one, not none."""
    if total == 0:
        return 0
    return max(1, total // count + (index < total % count))


def run_supervisor(settings: Settings) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(Supervisor(settings).run())
    else:
        uvloop.run(Supervisor(settings).run())
