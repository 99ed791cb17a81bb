"""/v2/calls/{call_control_id}/actions/... for streaming."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v2/calls", tags=["calls"])
