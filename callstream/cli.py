"""``callstream`` command line: serve, drain, config, keys, call, demo."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from callstream.logs import setup_logging

if TYPE_CHECKING:  # imported where used: `callstream call` needs neither (0.45 s of CPU)
    from callstream.config import Settings
    from callstream.store.sql import SqlStore

T = TypeVar("T")

LOG_LEVELS = ("debug", "info", "warning", "error")
#: Seconds `drain` waits, beyond the drain and the hangups, for the node to exit.
DRAIN_MARGIN = 30.0

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
keys_app = typer.Typer(no_args_is_help=True, help="API keys and the webhook signing key.")
app.add_typer(keys_app, name="keys")

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory [env CALLSTREAM_DATA_DIR]", show_default=False),
]
ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", help="TOML settings file [env CALLSTREAM_CONFIG]", exists=True,
                 dir_okay=False, show_default=False),
]

LogLevel = Annotated[
    str | None,
    typer.Option("--log-level", help="debug, info, warning or error [CALLSTREAM_LOG_LEVEL; "
                 "default info]", show_default=False),
]


def _settings(config: Path | None = None, **overrides: object) -> Settings:
    from pydantic import ValidationError

    from callstream.config import load_settings

    try:
        return load_settings(config, **overrides)
    except ValidationError as exc:
        # Without the input values: they may hold passwords and secrets.
        for error in exc.errors(include_url=False, include_input=False):
            where = ".".join(str(part) for part in error["loc"]) or "settings"
            typer.echo(f"callstream: bad settings: {where}: {error['msg']}", err=True)
        raise typer.Exit(2) from exc
    except (ValueError, OSError) as exc:
        typer.echo(f"callstream: bad settings: {exc}", err=True)
        raise typer.Exit(2) from exc


@app.command()
def serve(
    data_dir: DataDir = None,
    http: Annotated[str | None, typer.Option("--http", help="HOST:PORT [CALLSTREAM_HTTP]")] = None,
    sip: Annotated[str | None, typer.Option("--sip", help="HOST:PORT [CALLSTREAM_SIP]")] = None,
    log_format: Annotated[str | None, typer.Option(
        "--log-format", help="text or json (one object a line) [CALLSTREAM_LOG_FORMAT]",
        show_default=False)] = None,
    log_level: LogLevel = None,
    config: ConfigFile = None,
    workers: Annotated[str | None, typer.Option(
        "--workers", help="worker processes, or auto for one per core [CALLSTREAM_WORKERS]",
        show_default=False)] = None,
) -> None:
    """Run the server: HTTP API, SIP, media and webhook delivery in one process, or in
    N worker processes behind one supervisor with --workers N.

    At info it logs one line per call event (received, answered, ended with its
    cause), stream, fork, transcription and failed webhook attempt (docs/logging.md).
    """
    from callstream.cluster.exceptions import RedisUnavailable
    from callstream.listening import ListenError
    from callstream.node_id import InvalidNodeId
    from callstream.server import run_server
    from callstream.store.exceptions import StoreUnavailable
    from callstream.workers.exceptions import WorkersError
    from callstream.workers.supervisor import run_supervisor

    settings = _settings(config, data_dir=data_dir, http=http, sip=sip, log_format=log_format,
                         log_level=log_level.lower() if log_level else None, workers=workers)
    setup_logging(settings.log_format, settings.log_level)
    try:
        if settings.worker_count > 1:
            run_supervisor(settings)
        else:
            run_server(settings)
    except WorkersError as exc:
        typer.echo(f"callstream: {exc}", err=True)
        raise typer.Exit(1) from exc
    except (StoreUnavailable, InvalidNodeId, RedisUnavailable) as exc:
        typer.echo(f"callstream: {exc}", err=True)
        raise typer.Exit(1) from exc
    except ListenError as exc:
        option = "--http" if exc.service == "HTTP" else "--sip"
        typer.echo(f"callstream: {exc.with_advice(f'Use {option} HOST:PORT')}", err=True)
        raise typer.Exit(1) from exc


@app.command()
def drain(
    data_dir: DataDir = None,
    config: ConfigFile = None,
    wait: Annotated[bool, typer.Option(
        "--wait/--no-wait", help="Wait until the node has exited")] = True,
) -> None:
    """Drain the `callstream serve` of this data dir: it takes no new calls (SIP 503 to
    INVITE and OPTIONS, so a front such as Kamailio sends them to other nodes), lets
    live calls end for up to drain_timeout_secs, hangs up the rest and exits
    (docs/cluster.md). Sends the node SIGTERM; finds it by its store's node lock."""
    import os
    import signal
    import time

    from callstream.server import HANGUP_GRACE_SECS
    from callstream.store.node_lock import NodeLock

    settings = _settings(config, data_dir=data_dir)
    lock = NodeLock.for_database(settings.effective_database_url)
    if lock is None:
        typer.echo("callstream: drain finds its node by the SQLite node lock; with another "
                   "database send SIGTERM to the serve process", err=True)
        raise typer.Exit(2)
    pid = lock.holder()
    if pid is None:
        typer.echo(f"callstream: no callstream serve is running on {lock.database}", err=True)
        raise typer.Exit(1)
    os.kill(pid, signal.SIGTERM)
    typer.echo(f"draining pid {pid}: no new calls; live calls have "
               f"{settings.drain_timeout_secs:g} s to end")
    if not wait:
        return
    # The drain, the hangups after it, and a margin for the rest of the stop.
    deadline = time.monotonic() + settings.drain_timeout_secs + HANGUP_GRACE_SECS + DRAIN_MARGIN
    while lock.holder() == pid:
        if time.monotonic() > deadline:
            typer.echo(f"callstream: pid {pid} is still running", err=True)
            raise typer.Exit(1)
        time.sleep(0.1)
    typer.echo(f"pid {pid} has exited")


@app.command("config")
def show_config(data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """Print the effective settings (secrets masked) as JSON."""
    from sqlalchemy.engine import make_url

    settings = _settings(config, data_dir=data_dir)
    values = settings.model_dump(mode="json")
    for secret in ("trunk_password", "webhook_signing_seed", "webhook_standard_secret",
                   "sip_auth_password"):
        if values.get(secret):
            values[secret] = "***"
    shown = make_url(settings.effective_database_url).render_as_string(hide_password=True)
    if values.get("database_url"):
        values["database_url"] = shown
    values["effective_database_url"] = shown
    typer.echo(json.dumps(values, indent=2))


async def _with_store(settings: Settings, work: Callable[[SqlStore], Awaitable[T]]) -> T:
    from callstream.store.sql import SqlStore

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = SqlStore(settings.effective_database_url, inline_sqlite=settings.sqlite_inline)
    await store.open()
    try:
        return await work(store)
    finally:
        await store.close()


@keys_app.command("create")
def keys_create(
    data_dir: DataDir = None,
    label: Annotated[str, typer.Option("--label", help="A note to tell keys apart")] = "",
    config: ConfigFile = None,
) -> None:
    """Create an API key and print it alone on stdout (it is stored hashed)."""
    from callstream.api.auth import create_key

    settings = _settings(config, data_dir=data_dir)

    async def work(store: SqlStore) -> str:
        key, _ = await create_key(store, label)
        return key

    typer.echo(asyncio.run(_with_store(settings, work)))


@keys_app.command("list")
def keys_list(data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """List API keys (id, prefix, label, created, revoked)."""
    settings = _settings(config, data_dir=data_dir)

    for key in asyncio.run(_with_store(settings, lambda store: store.list_api_keys())):
        state = f"revoked {key.revoked_at}" if key.revoked_at else "active"
        typer.echo(f"{key.id}  {key.prefix}…  {key.created_at}  {state}  {key.label}")


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="Key id or prefix, from `keys list`")],
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Revoke an API key; requests with it fail within a few seconds."""
    from callstream.timefmt import iso_now

    settings = _settings(config, data_dir=data_dir)

    revoked = asyncio.run(_with_store(settings, lambda store: store.revoke_api_key(key, iso_now())))
    if not revoked:
        typer.echo(f"callstream: no active key {key!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key}")


@keys_app.command("webhook")
def keys_webhook(data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """Print the webhook public key, base64, as TELNYX_PUBLIC_KEY expects it."""
    from callstream.webhooks.signing import load_signer

    settings = _settings(config, data_dir=data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    typer.echo(load_signer(settings).public_key_b64)


def _port_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    try:
        first, last = int(low), int(high)
    except ValueError:
        first = last = 0
    if not 1024 <= first < last <= 65535:
        typer.echo(f"callstream call: bad --rtp-ports {text!r}: want LOW-HIGH "
                   "within 1024-65535", err=True)
        raise typer.Exit(2)
    return first, last


@app.command("call")
def call(
    target: Annotated[str, typer.Argument(help="Who to call: sip:user@host:port (or host:port)")],
    play: Annotated[Path | None, typer.Option("--play", help="WAV to play once answered "
                                              "(any rate; mixed to mono, resampled)")] = None,
    record: Annotated[Path | None, typer.Option("--record", help="Write what the far end "
                                                "sends to this WAV (the codec's rate)")] = None,
    dtmf: Annotated[str, typer.Option("--dtmf", help="DTMF digits to send once answered "
                                      "(RFC 4733; SIP INFO if not negotiated)")] = "",
    dtmf_delay: Annotated[float, typer.Option("--dtmf-delay", help="Seconds after the answer "
                                              "to send --dtmf")] = 0.5,
    duration: Annotated[float | None, typer.Option(
        "--duration", help="Hang up this many seconds after the answer "
        "[default: at the end of --play, else when the far end hangs up]")] = None,
    codec: Annotated[list[str] | None, typer.Option(
        "--codec", help="Codecs to offer, in order: PCMU, PCMA, G722, L16 "
        "(repeat or comma-separate) [default: all, in that order]")] = None,
    from_uri: Annotated[str | None, typer.Option("--from", help="From URI "
                                                 "[default: sip:callstream@LOCAL-IP:PORT]")] = None,
    local_ip: Annotated[str, typer.Option("--local-ip", help="Address to bind and put in "
                                          "SIP and SDP")] = "127.0.0.1",
    sip_port: Annotated[int, typer.Option("--sip-port", help="Local SIP port (0: any free)")] = 0,
    rtp_ports: Annotated[str, typer.Option("--rtp-ports", help="Local RTP port range "
                                           "LOW-HIGH")] = "40000-59998",
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for an "
                                           "answer")] = 30.0,
    max_duration: Annotated[float, typer.Option("--max-duration", help="Longest an answered "
                                                "call may last")] = 3600.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr")] = False,
    log_level: Annotated[str, typer.Option(
        "--log-level", help="Log lines on stderr at this level or above: debug, info, "
        "warning or error")] = "warning",
) -> None:
    """Place a SIP call: play a WAV, record the reply, send DTMF, hang up.

    Prints a one-line JSON summary on stdout; exits 0 when the call was answered,
    1 when it was not (the SIP status is shown), 2 on bad options.
    """
    import signal

    from callstream.listening import ListenError
    from callstream.media.exceptions import PortsExhaustedError
    from callstream.telephony.caller import DEFAULT_CODECS, CallerError, CallOptions, place_call

    if log_level.lower() not in LOG_LEVELS:
        typer.echo(f"callstream call: bad --log-level {log_level!r}: want one of "
                   f"{', '.join(LOG_LEVELS)}", err=True)
        raise typer.Exit(2)
    setup_logging("text", log_level.lower())

    options = CallOptions(
        target=target, play=play, record=record, dtmf=dtmf, dtmf_delay=dtmf_delay,
        duration=duration, codecs=tuple(codec) if codec else DEFAULT_CODECS,
        from_uri=from_uri, local_ip=local_ip, sip_port=sip_port, timeout=timeout,
        max_duration=max_duration, rtp_ports=_port_range(rtp_ports),
    )

    def notify(line: str) -> None:
        if not quiet:
            typer.echo(f"callstream call: {line}", err=True)

    async def run() -> int:
        interrupted = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, interrupted.set)
        summary = await place_call(options, interrupted=interrupted, notify=notify)
        typer.echo(summary.to_json())
        if summary.exit_code:
            typer.echo(f"callstream call: {summary.status}: {summary.reason}", err=True)
        return summary.exit_code

    try:
        code = asyncio.run(run())
    except CallerError as exc:
        typer.echo(f"callstream call: {exc}", err=True)
        raise typer.Exit(2) from exc
    except ListenError as exc:
        typer.echo("callstream call: "
                   + exc.with_advice("Use --sip-port PORT (0 picks a free one)"), err=True)
        raise typer.Exit(2) from exc
    except (OSError, PortsExhaustedError) as exc:
        typer.echo(f"callstream call: can't bind sockets: {exc}", err=True)
        raise typer.Exit(2) from exc
    raise typer.Exit(code)


@app.command("demo")
def demo(
    once: Annotated[bool, typer.Option("--once", help="Place one scripted call, check every "
                                       "part worked, and exit (0: all passed)")] = False,
    json_file: Annotated[Path | None, typer.Option("--json", help="With --once: write the "
                                                   "summary (checks, timings, transcript, "
                                                   "counters) to this file")] = None,
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", help="Keep the demo's data here [default: a temporary directory, "
        "removed at exit]", show_default=False)] = None,
    http: Annotated[str | None, typer.Option(
        "--http", help="HOST:PORT [default: 127.0.0.1:8080 if free, else any free port]")] = None,
    sip: Annotated[str | None, typer.Option(
        "--sip", help="HOST:PORT [default: 127.0.0.1:5060 if free, else any free port]")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="The server's log level "
                                           "(debug, info, warning, error)")] = "warning",
) -> None:
    """Run the server, an example app and a voice bot; call it and watch it live.

    The app answers every incoming call with a bidirectional stream to the bot (it greets,
    then repeats what you say), a fork and live transcription. Call the printed SIP URI
    from a softphone, or use --once for one scripted call that checks every part.
    """
    from callstream.demo.runner import DemoOptions, run_demo

    if log_level not in ("debug", "info", "warning", "error"):
        typer.echo(f"callstream demo: bad --log-level {log_level!r}: want debug, info, "
                   "warning or error", err=True)
        raise typer.Exit(2)
    if json_file is not None and not json_file.parent.is_dir():
        typer.echo(f"callstream demo: can't write --json {str(json_file)!r}: no such "
                   "directory", err=True)
        raise typer.Exit(2)
    options = DemoOptions(once=once, json_path=json_file, data_dir=data_dir, http=http,
                          sip=sip, log_level=log_level)

    def echo(line: str) -> None:
        typer.echo(line)

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        code = asyncio.run(run_demo(options, echo))
    else:
        code = uvloop.run(run_demo(options, echo))
    raise typer.Exit(code)


def main() -> None:
    app()
