"""Settings: environment variables (``CALLSTREAM_*``), an optional TOML file, CLI flags.

Precedence, highest first: CLI flags, environment, the TOML file named by
``--config`` / ``CALLSTREAM_CONFIG``, built-in defaults.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from callstream.node_id import NODE_ID_PATTERN
from callstream.outbound.policy import (
    DEFAULT_ALLOW,
    DEFAULT_DENY,
    OutboundPolicy,
    parse_networks,
)

#: Upper bound of ``stream_reconnect_seconds`` and ``CALLSTREAM_STREAM_RECONNECT_SECS``.
MAX_RECONNECT_SECS = 60.0

#: Inbound SIP is accepted from these networks unless configured otherwise: this
#: host only. Open it to your callers' networks (docs/security/sip-admission.md).
DEFAULT_SIP_NETWORKS = ("127.0.0.0/8", "::1/128")

#: Most worker processes ``--workers`` starts: each holds a store connection and its
#: sockets, and the SIP dispatcher hashes over them.
MAX_WORKERS = 64


def split_host_port(value: str, *, what: str) -> tuple[str, int]:
    """Split ``host:port`` or ``[v6]:port`` into its parts.

    Raises:
        ValueError: naming ``what`` when the value is not host:port.
    """
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{what} must be HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    number = int(port)
    if not 0 <= number <= 65535:
        raise ValueError(f"{what} port must be 0-65535, got {number}")
    return host, number


class Settings(BaseSettings):
    """Everything callstream can be told. ``callstream config`` prints the effective values."""

    model_config = SettingsConfigDict(env_prefix="CALLSTREAM_", extra="ignore")

    data_dir: Path = Field(Path("./callstream-data"), description="Keys, database, signing key.")
    http: str = Field("127.0.0.1:8080", description="HTTP API listen address HOST:PORT.")
    sip: str = Field("127.0.0.1:5060", description="SIP listen address (UDP and TCP) HOST:PORT.")
    database_url: str | None = Field(
        None, description="postgresql://USER@HOST/DB (several nodes share it; "
        "docs/cluster.md) or an SQLAlchemy async URL; default is SQLite in the data dir."
    )
    node_id: str | None = Field(
        None, pattern=NODE_ID_PATTERN, description="This node's name, recorded on the calls "
        "it owns and on its webhook leases; default: generated once and kept in the data "
        "dir's node-id file.")
    redis_url: str | None = Field(
        None, description="redis://HOST:PORT/DB: nodes on one PostgreSQL store keep call "
        "ownership leases and liveness there, forward a call's REST commands to its owner "
        "and end a dead node's calls (docs/cluster.md, \"Redis\").")
    node_address: str | None = Field(
        None, description="The HTTP URL other nodes reach this node's API at (kept in its "
        "Redis liveness record); default http://<http setting>.")
    call_lease_secs: float = Field(
        6.0, ge=1, le=10, description="With Redis: how long a call's ownership lease and the "
        "node's liveness record last unless renewed (every third of it); a dead node's "
        "calls are ended after this plus failover_scan_secs.")
    failover_scan_secs: float = Field(
        2.0, ge=0.2, le=30, description="With Redis: how often a node looks for live calls "
        "of nodes whose liveness record has expired, to end them.")
    sqlite_inline: bool = Field(
        True, description="Run SQLite statements on the event loop (fast; see "
        "store/inline_sqlite.py) rather than in aiosqlite's thread.")
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    workers: Literal["auto"] | Annotated[int, Field(ge=1, le=MAX_WORKERS)] = Field(
        1, description="Media worker processes (`auto`: one per core); 1 runs everything "
        "in one process (docs/architecture.md, \"Processes\").")

    # The default Call Control Application ("connection_id": "default").
    webhook_url: str | None = None
    webhook_failover_url: str | None = None
    webhook_timeout_secs: int = Field(10, ge=1, le=60)

    # Webhook delivery.
    webhook_signing_seed: str | None = Field(
        None, description="Base64 32-byte Ed25519 seed; default: generated into the data dir."
    )
    webhook_retry_delays: list[float] = Field(
        default_factory=lambda: [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 120.0],
        description="Seconds to wait before each retry; jitter is added.",
    )
    webhook_retry_jitter: float = Field(
        0.2, ge=0, le=1, description="Each retry delay is scaled by 1 ± this fraction, at random."
    )
    webhook_max_connections: int = Field(64, ge=1, le=1024)
    webhook_retention_days: float = Field(30.0, gt=0)
    webhook_standard_secret: str | None = Field(
        None,
        description="whsec_<base64>: also send Standard Webhooks HMAC headers (old SDKs); "
        "off by default.",
    )

    # Media.
    media_address: str | None = Field(
        None, description="Address put in SDP; default: the SIP listen host."
    )
    rtp_port_min: int = Field(20000, ge=1024, le=65534)
    rtp_port_max: int = Field(30000, ge=1025, le=65535)
    jitter_buffer_ms: int = Field(
        40, ge=20, le=200,
        description="Audio each leg's jitter buffer holds before playout: more rides out "
        "bursty networks and busy hosts, at the cost of latency.",
    )
    sip_allowed_networks: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SIP_NETWORKS),
        description="Networks new SIP requests may come from (CIDR list); loopback only "
        "by default.",
    )

    # Outbound trunk for E.164 numbers.
    trunk_uri: str | None = Field(None, description="e.g. sip:trunk.example.com:5060")
    trunk_username: str | None = None
    trunk_password: str | None = None

    # Live transcription (docs/transcription.md).
    transcription_model: str = Field(
        "tiny.en", description="Default Whisper model: tiny.en, base, a CTranslate2 model "
        "directory, or (with downloads allowed) a hub name such as small.en.")
    transcription_engines: dict[str, str] = Field(
        default_factory=dict, description="transcription_engine name (Google, Telnyx, "
        "Deepgram...) -> model for it; unlisted engines use transcription_model.")
    transcription_models: dict[str, str] = Field(
        default_factory=dict, description="Extra model names a call may ask for in "
        "transcription_engine_config -> local model (name or directory).")
    transcription_final_model: str | None = Field(
        None, description="Two-pass finals: a stronger model (base, or a CTranslate2 "
        "directory) for final transcripts; interims stay on the call's model. Unset: one "
        "model does both. A call may choose with transcription_engine_config.final_model.")
    transcription_end_silence_ms: int = Field(
        700, ge=200, le=3000, description="Silence that ends an utterance (its final "
        "follows), counted from the energy-based end of speech; longer keeps natural "
        "pauses inside one utterance, at that much more latency.")
    transcription_sentence_end_silence_ms: int = Field(
        500, ge=100, le=3000, description="Silence that ends an utterance whose text so "
        "far ends a sentence (. ? !); other pauses wait transcription_end_silence_ms. "
        "At most that takes effect.")
    transcription_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where Whisper runs; auto picks cuda when a GPU is present.")
    transcription_threads: int = Field(
        0, ge=0, le=256, description="Decodes the transcription model runs at once (a "
        "batch of interims or a final); 0 = one per core. Tracks are fed by up to 8 "
        "threads per one.")
    transcription_allow_download: bool = Field(
        False, description="Let a model missing locally be downloaded from the Hugging "
        "Face hub.")

    # Security: stalled stream consumers (docs/security.md).
    stream_stall_timeout_secs: float = Field(
        10.0, ge=1.0, le=300.0,
        description="A media-stream consumer that answers no WebSocket ping for this long "
        "(it stopped reading) is cut off with streaming.failed (consumer_stalled); the "
        "call goes on.")
    # Media streams (docs/streaming.md).
    stream_buffer_secs: float = Field(
        2.0, ge=0.1, le=30.0,
        description="Audio a media stream holds for its consumer: from the moment it is "
        "requested until its WebSocket is open and start is sent (then flushed in order), "
        "and while a slow consumer falls behind. Beyond it the oldest audio is dropped "
        "and counted.")
    stream_stop_grace_secs: float = Field(
        2.0, ge=0.0, le=30.0,
        description="After a stream's stop frame, how long its WebSocket stays open for "
        "the consumer to close it (a bot that hangs up when its stream ends needs the "
        "socket for that); then callstream closes it. 0 closes at once.")
    stream_reconnect_secs: float = Field(
        0.0, ge=0.0, le=MAX_RECONNECT_SECS,
        description="Default reconnect window of a stream (a stream request's "
        "stream_reconnect_seconds overrides it): when its WebSocket drops without a clean "
        "close, callstream dials again with back-off for this long and resumes the stream. "
        "0 (Telnyx's behaviour): a drop ends the stream with streaming.failed.")
    stream_latency_bound_secs: float = Field(
        0.2, ge=0.05, le=10.0,
        description="Live audio to a stream consumer older than this when its turn to be "
        "sent comes is dropped (oldest first, counted): a consumer that falls behind gets "
        "recent audio, not a growing delay. The buffer before start (and replay after a "
        "reconnect) is exempt.")
    playback_standing_ms: int = Field(
        20, ge=0, le=10000,
        description="Playback delay a bidirectional stream's queue may keep for good: "
        "when, within 2 s of the queue running short while it played (a stall, an answer "
        "come late), a consumer answering in real time (an echo) keeps it deeper than this "
        "for 0.3 s, the oldest audio is dropped, at most what was owed, counted. A bot's "
        "lead, clips sent ahead and audio faster than real time are kept. 0 = off.")
    # Security: outbound network policy (docs/security.md).
    outbound_allow: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ALLOW), max_length=1000,
        description="Networks (CIDR) webhooks, streams and forks may connect to; an "
        "address must be in one of them and in no outbound_deny network.")
    outbound_deny: list[str] = Field(
        default_factory=lambda: list(DEFAULT_DENY), max_length=1000,
        description="Networks (CIDR) never connected to, whatever outbound_allow says; "
        "default: link-local and the cloud metadata addresses.")
    # Security: RTP (docs/security.md).
    strict_rtp: Literal["learn", "strict", "off"] = Field(
        "learn", description="Whose RTP a leg accepts. learn: the SDP's address, or one "
        "learned on a 3-packet probation when media starts; then locked until the SDP "
        "changes. strict: only the SDP's address (no NAT). off: follow any source after 1 s "
        "of silence (unsafe: lets others hear and talk into calls).")
    # Security: webhook delivery (docs/security.md).
    webhook_max_connections_per_destination: int = Field(
        32, ge=1, le=1024,
        description="Concurrent webhook requests to one destination (scheme, host, port), "
        "within webhook_max_connections: a receiver that hangs holds only this many. Half "
        "the pool by default; 8 keeps one receiver to 300-600 deliveries/s here.")
    webhook_retry_budget_secs: float = Field(
        86400.0, ge=0, le=30 * 86400,
        description="After webhook_retry_delays, keep retrying with exponential back-off "
        "until this long after the first attempt; 0 gives up after the schedule.")
    webhook_retry_max_delay_secs: float = Field(
        3600.0, gt=0, le=86400,
        description="The longest wait between two attempts of the extended back-off.")
    webhook_stop_grace_secs: float = Field(
        5.0, ge=0, le=60,
        description="At shutdown: how long webhook attempts in flight may finish; those "
        "cut off stay pending and are sent after the next start.")
    webhook_keep_response_body: bool = Field(
        False, description="Keep an excerpt of receivers' answers (text/plain or "
        "application/json only) in the delivery log; off: no body is kept.")
    webhook_response_body_max_bytes: int = Field(
        256, ge=1, le=1024,
        description="Bytes of a receiver's answer kept when webhook_keep_response_body is on.")
    # Security: HTTP and SIP/TCP listener limits (docs/security.md).
    http_max_head_size: int = Field(
        16384, ge=1024, le=1048576, description="Most bytes of an HTTP request line "
        "plus headers; more is answered 431 and the connection closed.")
    http_header_timeout: float = Field(
        10.0, gt=0, le=60, description="Seconds a client has to send a request's whole "
        "head, from connecting or from its first byte; then 408 and close.")
    http_keepalive_timeout: int = Field(
        5, ge=1, le=300, description="Seconds an idle kept-alive HTTP connection is held.")
    http_max_connections: int = Field(
        1024, ge=1, le=65536, description="Most HTTP connections at once (WebSockets "
        "included); one more is answered 503 and closed.")
    http_max_body_size: int = Field(
        1048576, ge=1024, le=67108864, description="Most bytes of a request body; more is "
        "answered 413 with the Telnyx error envelope.")
    sip_tcp_idle_timeout: float = Field(
        120.0, gt=0, le=86400, description="Seconds a SIP TCP connection may carry no "
        "bytes (CRLF keep-alives count) before it is closed.")
    sip_tcp_max_connections: int = Field(
        256, ge=1, le=65536, description="Most inbound SIP TCP connections at once; more "
        "are closed as they are accepted.")
    # Security: SIP admission (docs/security.md).
    sip_forbidden_action: Literal["reject", "drop"] = Field(
        "reject", description="A request from outside sip_allowed_networks gets one "
        "stateless 403 (reject) or nothing (drop).")
    sip_rate_limit_per_sec: float = Field(
        5.0, ge=0, le=100_000, description="New calls (INVITEs outside a dialog) per "
        "second one source IP (IPv6: its /64) earns; over it, a stateless 503 with "
        "Retry-After. 0 turns it off.")
    sip_rate_limit_burst: int = Field(
        20, ge=1, le=1_000_000, description="How many new calls one source may start at "
        "once before sip_rate_limit_per_sec applies.")
    sip_max_parked_per_source: int = Field(
        10, ge=0, le=100_000, description="Unanswered incoming calls one source may hold; "
        "further INVITEs get a stateless 486. 0 turns the cap off.")
    sip_park_timeout_secs: float = Field(
        60.0, ge=1, le=3600, description="An incoming call not answered or rejected in "
        "this time gets 480 and ends with hangup_cause timeout.")
    drain_timeout_secs: float = Field(
        30.0, ge=0, le=86_400, description="SIGTERM or `callstream drain`: how long live "
        "calls may go on to their natural end while the node takes no new ones (SIP 503 "
        "to INVITE and OPTIONS); those still up then are hung up and the process exits. "
        "0 hangs up at once.")
    sip_auth_username: str | None = Field(
        None, description="With sip_auth_password: inbound INVITEs must carry digest "
        "credentials (401 challenge otherwise).")
    sip_auth_password: str | None = Field(None, description="See sip_auth_username.")
    sip_auth_realm: str = Field(
        "callstream", min_length=1, max_length=128, pattern=r'^[\x20-\x7e]+$',
        description="Realm named in the digest challenge.")

    # First hour: console.
    console_enabled: bool = Field(
        True, description="Serve the live console at /console (and redirect / to it).")
    console_session_ttl_secs: int = Field(
        8 * 3600, ge=60, le=30 * 86400,
        description="How long a console sign-in lasts (sessions are kept in memory).")
    console_login_link_ttl_secs: int = Field(
        300, ge=10, le=86400,
        description="How long the one-time login link printed at start stays valid.")

    # Calls from browsers (docs/webrtc.md).
    webrtc_max_legs: int = Field(
        50, ge=0, le=10_000, description="Concurrent WebRTC (browser) legs; an offer beyond "
        "them gets 503. 0 turns WebRTC calls off.")
    webrtc_ice_servers: list[str] = Field(
        default_factory=list, description="STUN/TURN URLs for browser legs (stun:host:port, "
        "turn:host:port?transport=udp); none are needed on loopback or a LAN.")
    webrtc_ice_username: str | None = Field(
        None, max_length=256, description="Username for the turn: URLs in webrtc_ice_servers.")
    webrtc_ice_credential: str | None = Field(
        None, max_length=256, description="Credential for the turn: URLs in webrtc_ice_servers.")
    webrtc_allowed_origins: list[str] = Field(
        default_factory=list, description="Origins of pages on other sites that may call in "
        "(CORS on /v2/webrtc/sessions), e.g. https://shop.example; \"*\" for any. Empty: "
        "pages served from the server's own origin only.")
    webrtc_token_ttl_secs: int = Field(
        60, ge=5, le=3600, description="How long a WebRTC call token (POST /v2/webrtc/tokens) "
        "stays valid; each token places one call.")

    account_id: str = Field(
        "00000000-0000-4000-8000-000000000000", description="Reported as user_id/account_sid."
    )

    @field_validator("http", "sip")
    @classmethod
    def _check_address(cls, value: str) -> str:
        split_host_port(value, what="address")
        return value

    @field_validator("webrtc_ice_servers")
    @classmethod
    def _check_ice_servers(cls, value: list[str]) -> list[str]:
        for url in value:
            if url.partition(":")[0] not in ("stun", "stuns", "turn", "turns"):
                raise ValueError(f"{url!r} is not a stun:, stuns:, turn: or turns: URL")
        return value

    @field_validator("sip_allowed_networks")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item, strict=False)
        return value

    @field_validator("outbound_allow", "outbound_deny")
    @classmethod
    def _check_outbound(cls, value: list[str], info: ValidationInfo) -> list[str]:
        parse_networks(value, setting=f"CALLSTREAM_{str(info.field_name).upper()}")
        return value

    @property
    def outbound_policy(self) -> OutboundPolicy:
        return OutboundPolicy.from_lists(self.outbound_allow, self.outbound_deny)
    @model_validator(mode="after")
    def _check_media_address(self) -> Settings:
        # Peers must be told one address for SIP (Via, Contact) and RTP (SDP c=); a
        # wildcard bind has none to offer.
        if self.sip_host_port[0] in ("", "0.0.0.0", "::") and not self.media_address:
            raise ValueError(
                f"sip {self.sip} listens on every interface: set media_address "
                "(CALLSTREAM_MEDIA_ADDRESS) to the address peers reach this host at; it goes "
                "in Via, Contact and SDP")
        return self

    @model_validator(mode="after")
    def _check_redis(self) -> Settings:
        if self.redis_url is None:
            return self
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"redis_url must be redis://, rediss:// or unix://, got "
                             f"{self.redis_url.split('://')[0]}://…")
        if self.database_url is None or self.database_url.startswith("sqlite"):
            raise ValueError("redis_url coordinates nodes that share a PostgreSQL store: "
                             "set database_url (CALLSTREAM_DATABASE_URL) to postgresql://…")
        if self.workers != 1:
            raise ValueError("redis_url is for single-process nodes: with --workers the "
                             "owner of a call is a worker, not a node")
        if self.node_address is None and self.http_host_port[0] in ("", "0.0.0.0", "::"):
            raise ValueError(f"http {self.http} listens on every interface: set node_address "
                             "(CALLSTREAM_NODE_ADDRESS) to the URL other nodes reach it at")
        return self

    @model_validator(mode="after")
    def _check_sip_auth(self) -> Settings:
        if (self.sip_auth_username is None) != (self.sip_auth_password is None):
            raise ValueError("set both sip_auth_username and sip_auth_password, or neither")
        return self

    @property
    def worker_count(self) -> int:
        """How many worker processes ``workers`` asks for (``auto``: the usable cores)."""
        if self.workers == "auto":
            return max(1, min(MAX_WORKERS, len(os.sched_getaffinity(0))))
        return self.workers

    @property
    def http_host_port(self) -> tuple[str, int]:
        return split_host_port(self.http, what="http")

    @property
    def sip_host_port(self) -> tuple[str, int]:
        return split_host_port(self.sip, what="sip")

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'callstream.db').resolve()}"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from the TOML file, then environment, then ``overrides`` (CLI flags).

    ``None`` overrides are ignored so unset flags don't hide the environment.
    """
    path = config_file or (Path(os.environ["CALLSTREAM_CONFIG"]) if os.environ.get(
        "CALLSTREAM_CONFIG") else None)
    from_file: dict[str, Any] = {}
    if path is not None:
        with path.open("rb") as fh:
            from_file = tomllib.load(fh)
    env = Settings()
    env_set = env.model_fields_set
    merged = {k: v for k, v in from_file.items() if k not in env_set}
    merged.update({k: getattr(env, k) for k in env_set})
    merged.update({k: v for k, v in overrides.items() if v is not None})
    return Settings.model_validate(merged)
