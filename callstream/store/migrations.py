"""Versioned schema migrations. Each version's DDL is frozen once released.

``{serial}`` expands to the dialect's auto-increment integer key so the same
text serves SQLite and PostgreSQL.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            """CREATE TABLE api_keys (
                id VARCHAR PRIMARY KEY, prefix VARCHAR NOT NULL,
                key_hash VARCHAR NOT NULL UNIQUE, label VARCHAR NOT NULL,
                created_at VARCHAR NOT NULL, revoked_at VARCHAR)""",
            """CREATE TABLE applications (
                id VARCHAR PRIMARY KEY, application_name VARCHAR NOT NULL,
                webhook_event_url TEXT, webhook_event_failover_url TEXT,
                webhook_timeout_secs INTEGER, active BOOLEAN NOT NULL,
                created_at VARCHAR NOT NULL, updated_at VARCHAR NOT NULL, extra TEXT NOT NULL)""",
            """CREATE TABLE calls (
                call_control_id VARCHAR PRIMARY KEY, call_leg_id VARCHAR NOT NULL,
                call_session_id VARCHAR NOT NULL, connection_id VARCHAR NOT NULL,
                direction VARCHAR NOT NULL, from_ VARCHAR NOT NULL, "to" VARCHAR NOT NULL,
                state VARCHAR NOT NULL, is_alive BOOLEAN NOT NULL, start_time VARCHAR NOT NULL,
                owner VARCHAR NOT NULL, client_state TEXT, answer_time VARCHAR,
                end_time VARCHAR, hangup_cause VARCHAR, hangup_source VARCHAR,
                sip_hangup_cause VARCHAR, webhook_url TEXT, webhook_failover_url TEXT,
                details TEXT NOT NULL)""",
            "CREATE INDEX calls_alive ON calls (is_alive)",
            """CREATE TABLE call_resources (
                id VARCHAR PRIMARY KEY, call_control_id VARCHAR NOT NULL, kind VARCHAR NOT NULL,
                status VARCHAR NOT NULL, params TEXT NOT NULL,
                created_at VARCHAR NOT NULL, updated_at VARCHAR NOT NULL)""",
            "CREATE INDEX call_resources_call ON call_resources (call_control_id)",
            """CREATE TABLE idempotency (
                call_control_id VARCHAR NOT NULL, command_id VARCHAR NOT NULL,
                status_code INTEGER NOT NULL, body {blob} NOT NULL, created_at VARCHAR NOT NULL,
                PRIMARY KEY (call_control_id, command_id))""",
            # The webhook outbox (callstream.store.outbox). Partial indexes on pending rows
            # keep the delivery worker's queries small however much history is retained;
            # their WHERE must match the queries' literal 'pending' exactly.
            """CREATE TABLE webhook_outbox (
                seq {serial}, id VARCHAR NOT NULL UNIQUE, ordering_key VARCHAR NOT NULL,
                event_type VARCHAR NOT NULL, call_control_id VARCHAR, data TEXT NOT NULL,
                url TEXT, failover_url TEXT, method VARCHAR NOT NULL,
                content_type VARCHAR NOT NULL, timeout_secs DOUBLE PRECISION NOT NULL,
                status VARCHAR NOT NULL, attempts INTEGER NOT NULL,
                round_start INTEGER NOT NULL DEFAULT 0,
                next_attempt_at DOUBLE PRECISION NOT NULL, created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL, started_at DOUBLE PRECISION,
                finished_at DOUBLE PRECISION, delivered_at DOUBLE PRECISION,
                delivered_to TEXT, last_status INTEGER, last_error TEXT,
                lease_owner VARCHAR, lease_until DOUBLE PRECISION)""",
            "CREATE INDEX outbox_pending_due ON webhook_outbox (next_attempt_at)"
            " WHERE status = 'pending'",
            "CREATE INDEX outbox_pending_key ON webhook_outbox (ordering_key, seq)"
            " WHERE status = 'pending'",
            "CREATE INDEX outbox_status ON webhook_outbox (status, seq)",
            "CREATE INDEX outbox_call ON webhook_outbox (call_control_id, seq)",
            "CREATE INDEX outbox_finished ON webhook_outbox (finished_at)",
            """CREATE TABLE webhook_attempts (
                id {serial}, event_id VARCHAR NOT NULL, attempt INTEGER NOT NULL,
                url TEXT NOT NULL, outcome VARCHAR NOT NULL, status_code INTEGER,
                error_code INTEGER, error TEXT, response_body TEXT,
                latency_ms DOUBLE PRECISION NOT NULL, at DOUBLE PRECISION NOT NULL)""",
            "CREATE INDEX attempts_event ON webhook_attempts (event_id, id)",
        ],
    ),
    (
        2,
        [
            # A node's live calls (a dead node's, read by the failover scan; a restarted
            # node's own orphans) without reading every node's.
            "CREATE INDEX calls_owner ON calls (owner, is_alive)",
        ],
    ),
]

DIALECT_WORDS: dict[str, dict[str, str]] = {
    "sqlite": {"serial": "INTEGER PRIMARY KEY AUTOINCREMENT", "blob": "BLOB"},
    "postgresql": {"serial": "BIGSERIAL PRIMARY KEY", "blob": "BYTEA"},
}

LATEST_VERSION = MIGRATIONS[-1][0]
