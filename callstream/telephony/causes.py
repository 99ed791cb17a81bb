"""SIP final status of a failed outgoing INVITE -> Telnyx ``hangup_cause``.

Telnyx reports why a dialled call ended in ``call.hangup``'s ``hangup_cause``
(spec §6); the SIP status that ended it goes into ``sip_hangup_cause``.
"""

from __future__ import annotations

#: The statuses with a cause of their own; any other failure is "unspecified".
FAILURE_CAUSES: dict[int, str] = {
    486: "user_busy",
    600: "user_busy",
    404: "not_found",
    604: "not_found",
    408: "timeout",
    480: "no_answer",
    603: "call_rejected",
    403: "call_rejected",
    487: "originator_cancel",
}

#: The cause when a status is not in :data:`FAILURE_CAUSES`.
UNSPECIFIED = "unspecified"


def failure_cause(status: int) -> str:
    """The ``hangup_cause`` of an outgoing INVITE that failed with ``status``."""
    return FAILURE_CAUSES.get(status, UNSPECIFIED)


def rejection_cause(status: int) -> str:
    """The ``hangup_cause`` of an incoming call we reject with ``status`` (486 or 603)."""
    return "user_busy" if status == 486 else "call_rejected"
