"""Request model for ``POST /v2/webhook_deliveries/actions/redeliver`` (bulk redelivery; ours)."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, Field


class BulkRedeliver(BaseModel):
    """Which failed events to queue again."""

    failed_since: AwareDatetime = Field(
        description="Queue again the events given up at or after this time (ISO 8601 with a "
        "time zone, e.g. 2026-12-04T20:00:00Z).",
        examples=["2026-12-04T20:00:00Z"],
    )
    call_control_id: str | None = Field(
        None, description="Only this call's events.", examples=["v3:abc"]
    )
