"""How call results read on the wire: the call status object and command receipts.

:class:`ApiReceipts` is the :class:`~callstream.calls.results.Receipts` Call Control is
built with: it renders a command's result as the API answers it, and Call Control keeps
those bytes for the command's ``command_id`` (spec §2).
"""

from __future__ import annotations

from typing import Any

import orjson

from callstream.calls.results import CommandResult, Dialled
from callstream.store.records import CallRecord, Receipt
from callstream.timefmt import parse_iso

#: The answer of every call action (spec §3): ``{"data": {"result": "ok"}}``.
OK_BODY = b'{"data":{"result":"ok"}}'


def status_dict(record: CallRecord, *, is_alive: bool | None = None) -> dict[str, Any]:
    """The call status object of ``GET /v2/calls/{id}``, the call list and dial."""
    data: dict[str, Any] = {
        "call_control_id": record.call_control_id,
        "call_leg_id": record.call_leg_id,
        "call_session_id": record.call_session_id,
        "is_alive": record.is_alive if is_alive is None else is_alive,
        "record_type": "call",
        "client_state": record.client_state,
        "start_time": record.start_time,
        "end_time": record.end_time,
        "connection_id": record.connection_id,
        "direction": record.direction,
        "from": record.from_,
        "to": record.to,
        "state": record.state,
    }
    if record.end_time:
        data["call_duration"] = int(parse_iso(record.end_time) - parse_iso(record.start_time))
    return data


class ApiReceipts:
    """Results as the API answers them: 200 and the ok body for an action; for a dial,
    the new call's status with ``is_alive`` false (Telnyx answers a dial so: the call
    is not up until answered)."""

    def receipt(self, result: CommandResult) -> Receipt:
        if isinstance(result, Dialled):
            return Receipt(200, orjson.dumps({"data": status_dict(result.call, is_alive=False)}))
        return Receipt(200, OK_BODY)
