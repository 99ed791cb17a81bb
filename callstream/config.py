"""Settings: environment variables (``CALLSTREAM_*``), an optional TOML file, CLI flags.

Precedence, highest first: CLI flags, environment, the TOML file named by
``--config`` / ``CALLSTREAM_CONFIG``, built-in defaults.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Inbound SIP is accepted from these networks unless configured otherwise: this
#: host only. Open it to your callers' networks (docs/security/sip-admission.md).
DEFAULT_SIP_NETWORKS = ("127.0.0.0/8", "::1/128")


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
        None, description="SQLAlchemy async URL; default is SQLite in the data dir."
    )
    sqlite_inline: bool = Field(
        True, description="Run SQLite statements on the event loop (fast; see "
        "store/inline_sqlite.py) rather than in aiosqlite's thread.")
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

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
    transcription_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where Whisper runs; auto picks cuda when a GPU is present.")
    transcription_threads: int = Field(
        0, ge=0, le=256, description="Recognition worker threads; 0 = one per core.")
    transcription_allow_download: bool = Field(
        False, description="Let a model missing locally be downloaded from the Hugging "
        "Face hub.")

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
    sip_auth_username: str | None = Field(
        None, description="With sip_auth_password: inbound INVITEs must carry digest "
        "credentials (401 challenge otherwise).")
    sip_auth_password: str | None = Field(None, description="See sip_auth_username.")
    sip_auth_realm: str = Field(
        "callstream", min_length=1, max_length=128, pattern=r'^[\x20-\x7e]+$',
        description="Realm named in the digest challenge.")

    account_id: str = Field(
        "00000000-0000-4000-8000-000000000000", description="Reported as user_id/account_sid."
    )

    @field_validator("http", "sip")
    @classmethod
    def _check_address(cls, value: str) -> str:
        split_host_port(value, what="address")
        return value

    @field_validator("sip_allowed_networks")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item, strict=False)
        return value

    @model_validator(mode="after")
    def _check_sip_auth(self) -> Settings:
        if (self.sip_auth_username is None) != (self.sip_auth_password is None):
            raise ValueError("set both sip_auth_username and sip_auth_password, or neither")
        return self

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
