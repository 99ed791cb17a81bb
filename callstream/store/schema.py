"""Table definitions used to build queries.

The DDL that creates them is frozen per version in :mod:`callstream.store.migrations`;
change both together (a new migration, never an edited one).
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

schema_version = Table("schema_version", metadata, Column("version", Integer, nullable=False))

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String, primary_key=True),
    Column("prefix", String, nullable=False),
    Column("key_hash", String, nullable=False, unique=True),
    Column("label", String, nullable=False),
    Column("created_at", String, nullable=False),
    Column("revoked_at", String),
)

applications = Table(
    "applications",
    metadata,
    Column("id", String, primary_key=True),
    Column("application_name", String, nullable=False),
    Column("webhook_event_url", Text),
    Column("webhook_event_failover_url", Text),
    Column("webhook_timeout_secs", Integer),
    Column("active", Boolean, nullable=False),
    Column("created_at", String, nullable=False),
    Column("updated_at", String, nullable=False),
    Column("extra", Text, nullable=False),
)

calls = Table(
    "calls",
    metadata,
    Column("call_control_id", String, primary_key=True),
    Column("call_leg_id", String, nullable=False),
    Column("call_session_id", String, nullable=False),
    Column("connection_id", String, nullable=False),
    Column("direction", String, nullable=False),
    Column("from_", String, nullable=False),
    Column("to", String, nullable=False),
    Column("state", String, nullable=False),
    Column("is_alive", Boolean, nullable=False),
    Column("start_time", String, nullable=False),
    Column("owner", String, nullable=False),
    Column("client_state", Text),
    Column("answer_time", String),
    Column("end_time", String),
    Column("hangup_cause", String),
    Column("hangup_source", String),
    Column("sip_hangup_cause", String),
    Column("webhook_url", Text),
    Column("webhook_failover_url", Text),
    Column("details", Text, nullable=False),
)

call_resources = Table(
    "call_resources",
    metadata,
    Column("id", String, primary_key=True),
    Column("call_control_id", String, nullable=False),
    Column("kind", String, nullable=False),
    Column("status", String, nullable=False),
    Column("params", Text, nullable=False),
    Column("created_at", String, nullable=False),
    Column("updated_at", String, nullable=False),
)

idempotency = Table(
    "idempotency",
    metadata,
    Column("call_control_id", String, primary_key=True),
    Column("command_id", String, primary_key=True),
    Column("status_code", Integer, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("created_at", String, nullable=False),
)

webhook_outbox = Table(
    "webhook_outbox",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String, nullable=False, unique=True),
    Column("ordering_key", String, nullable=False),
    Column("event_type", String, nullable=False),
    Column("call_control_id", String),
    Column("data", Text, nullable=False),
    Column("url", Text),
    Column("failover_url", Text),
    Column("method", String, nullable=False),
    Column("content_type", String, nullable=False),
    Column("timeout_secs", Float, nullable=False),
    Column("status", String, nullable=False),
    Column("attempts", Integer, nullable=False),  # all attempts ever: meta.attempt - 1
    Column("round_start", Integer, nullable=False, server_default="0"),  # attempts at redelivery
    Column("next_attempt_at", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("started_at", Float),  # first attempt began
    Column("finished_at", Float),  # delivered or given up
    Column("delivered_at", Float),
    Column("delivered_to", Text),
    Column("last_status", Integer),
    Column("last_error", Text),
    Column("lease_owner", String),  # the delivery worker holding the row
    Column("lease_until", Float),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("url", Text, nullable=False),
    Column("outcome", String, nullable=False),  # "delivered" | "failed"
    Column("status_code", Integer),
    Column("error_code", Integer),
    Column("error", Text),
    Column("response_body", Text),
    Column("latency_ms", Float, nullable=False),
    Column("at", Float, nullable=False),  # the attempt began
)
