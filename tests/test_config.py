"""Settings: the SIP admission block's defaults and checks."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from callstream.config import Settings
from callstream.sip.admission import ForbiddenAction
from callstream.sip.endpoint import SipEndpoint
from callstream.sip_admission import admission_options


def test_default_sip_allow_list_is_loopback_only() -> None:
    settings = Settings()
    assert settings.sip_allowed_networks == ["127.0.0.0/8", "::1/128"]
    networks = admission_options(settings)["allowed_networks"]
    for private in ("10.1.2.3", "172.16.0.1", "192.168.1.10", "fd00::1"):
        assert not any(ipaddress.ip_address(private) in net for net in networks)


def test_endpoint_default_is_loopback_only_too() -> None:
    endpoint = SipEndpoint(("127.0.0.1", 5060))
    assert [str(n) for n in endpoint.allowed_networks] == ["127.0.0.0/8", "::1/128"]


def test_admission_defaults() -> None:
    options = admission_options(Settings())
    assert options["forbidden_action"] is ForbiddenAction.REJECT
    assert options["auth"] is None
    assert options["answer_timeout"] == 60.0
    limits = options["limits"]
    assert (limits.rate_per_sec, limits.burst, limits.max_parked_per_source) == (5.0, 20, 10)


def test_admission_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLSTREAM_SIP_FORBIDDEN_ACTION", "drop")
    monkeypatch.setenv("CALLSTREAM_SIP_RATE_LIMIT_PER_SEC", "0")
    monkeypatch.setenv("CALLSTREAM_SIP_MAX_PARKED_PER_SOURCE", "3")
    monkeypatch.setenv("CALLSTREAM_SIP_PARK_TIMEOUT_SECS", "5")
    monkeypatch.setenv("CALLSTREAM_SIP_AUTH_USERNAME", "alice")
    monkeypatch.setenv("CALLSTREAM_SIP_AUTH_PASSWORD", "s3cret")
    monkeypatch.setenv("CALLSTREAM_SIP_ALLOWED_NETWORKS", '["203.0.113.0/24"]')
    options = admission_options(Settings())
    assert options["forbidden_action"] is ForbiddenAction.DROP
    assert options["limits"].rate_per_sec == 0 and options["limits"].max_parked_per_source == 3
    assert options["answer_timeout"] == 5.0
    assert options["auth"].realm == "callstream"
    assert options["auth"].credentials.username == "alice"
    assert [str(n) for n in options["allowed_networks"]] == ["203.0.113.0/24"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"sip_auth_username": "alice"}, "set both sip_auth_username and sip_auth_password"),
        ({"sip_auth_password": "pw"}, "set both sip_auth_username and sip_auth_password"),
        ({"sip_forbidden_action": "tarpit"}, "sip_forbidden_action"),
        ({"sip_park_timeout_secs": 0}, "sip_park_timeout_secs"),
        ({"sip_rate_limit_burst": 0}, "sip_rate_limit_burst"),
        ({"sip_auth_realm": "a\r\nb"}, "sip_auth_realm"),
    ],
)
def test_bad_admission_settings(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**fields)  # type: ignore[arg-type]


def test_a_settings_error_names_the_field_but_never_echoes_a_secret() -> None:
    env = {**os.environ, "CALLSTREAM_SIP_AUTH_PASSWORD": "s3cret-never-printed"}
    env.pop("CALLSTREAM_SIP_AUTH_USERNAME", None)
    out = subprocess.run([sys.executable, "-m", "callstream", "config"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "set both sip_auth_username and sip_auth_password" in out.stderr
    assert "s3cret-never-printed" not in out.stderr + out.stdout


def test_a_wildcard_sip_bind_needs_the_address_peers_reach() -> None:
    with pytest.raises(ValidationError, match="set media_address"):
        Settings(sip="0.0.0.0:5060")
    assert Settings(sip="0.0.0.0:5060", media_address="203.0.113.7").media_address
    assert Settings(sip="[::]:5060", media_address="2001:db8::7").sip_host_port == ("::", 5060)


def test_config_masks_the_database_password(tmp_path: Path) -> None:
    env = {**os.environ, "CALLSTREAM_DATABASE_URL": "postgresql://cs:s3cret@db.example/cs",
           "CALLSTREAM_NODE_ID": "node-a"}
    out = subprocess.run([sys.executable, "-m", "callstream", "config", "--data-dir",
                          str(tmp_path)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    values = json.loads(out.stdout)
    assert values["database_url"] == "postgresql://cs:***@db.example/cs"
    assert values["effective_database_url"] == "postgresql://cs:***@db.example/cs"
    assert values["node_id"] == "node-a"


def test_workers_default_to_one_process_and_auto_to_the_usable_cores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().worker_count == 1
    monkeypatch.setenv("CALLSTREAM_WORKERS", "auto")
    assert Settings().workers == "auto"
    assert Settings().worker_count == len(os.sched_getaffinity(0))
    monkeypatch.setenv("CALLSTREAM_WORKERS", "3")
    assert Settings().worker_count == 3


@pytest.mark.parametrize("value", [0, 65, "many"])
def test_bad_worker_counts(value: object) -> None:
    with pytest.raises(ValidationError, match="workers"):
        Settings(workers=value)


def test_stream_reconnect_and_latency_bound_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings()
    assert (defaults.stream_reconnect_secs, defaults.stream_latency_bound_secs) == (0.0, 0.2)
    monkeypatch.setenv("CALLSTREAM_STREAM_RECONNECT_SECS", "15")
    monkeypatch.setenv("CALLSTREAM_STREAM_LATENCY_BOUND_SECS", "0.5")
    settings = Settings()
    assert (settings.stream_reconnect_secs, settings.stream_latency_bound_secs) == (15.0, 0.5)
    for name, bad in (("stream_reconnect_secs", 61), ("stream_reconnect_secs", -1),
                      ("stream_latency_bound_secs", 0.01)):
        with pytest.raises(ValidationError, match=name):
            Settings(**{name: bad})


PG = "postgresql://cs@127.0.0.1/cs"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"redis_url": "redis://127.0.0.1/0"}, "share a PostgreSQL store"),
        ({"redis_url": "http://127.0.0.1/0", "database_url": PG}, "redis_url must be redis://"),
        ({"redis_url": "redis://127.0.0.1/0", "database_url": PG, "workers": 2},
         "single-process nodes"),
        ({"redis_url": "redis://127.0.0.1/0", "database_url": PG, "http": "0.0.0.0:8080"},
         "set node_address"),
        ({"call_lease_secs": 11}, "call_lease_secs"),
        ({"call_lease_secs": 0.5}, "call_lease_secs"),
        ({"failover_scan_secs": 0.1}, "failover_scan_secs"),
    ],
)
def test_bad_cluster_settings(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**fields)  # type: ignore[arg-type]

