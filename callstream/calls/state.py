"""The call state machine, as a table.

Theory of operation: a leg is created ``PARKED`` (inbound INVITE, waiting for the
application to answer) or ``BRIDGING`` (we sent an INVITE). It becomes ``ANSWERED``
when the 200/ACK exchange completes, and ``HANGUP`` once it ends for any reason.
Every transition lives in :data:`TRANSITIONS`; nothing else may set a state.
"""

from __future__ import annotations

import enum


class CallState(enum.StrEnum):
    PARKED = "parked"
    BRIDGING = "bridging"
    ANSWERING = "answering"
    ANSWERED = "answered"
    HANGING_UP = "hanging_up"
    HANGUP = "hangup"


class CallEvent(enum.Enum):
    ANSWER = "answer"  # application asked to answer
    ANSWERED = "answered"  # 200/ACK done
    HANGUP = "hangup"  # application asked to hang up
    ENDED = "ended"  # the leg is gone (BYE, CANCEL, failure, timeout)


class InvalidTransition(Exception):
    def __init__(self, state: CallState, event: CallEvent) -> None:
        super().__init__(f"can't handle {event.value} in state {state.value}")


S, E = CallState, CallEvent
TRANSITIONS: dict[tuple[CallState, CallEvent], CallState] = {
    (S.PARKED, E.ANSWER): S.ANSWERING,
    (S.PARKED, E.HANGUP): S.HANGING_UP,
    (S.PARKED, E.ENDED): S.HANGUP,
    (S.ANSWERING, E.ANSWERED): S.ANSWERED,
    (S.ANSWERING, E.HANGUP): S.HANGING_UP,
    (S.ANSWERING, E.ENDED): S.HANGUP,
    (S.BRIDGING, E.ANSWERED): S.ANSWERED,
    (S.BRIDGING, E.HANGUP): S.HANGING_UP,
    (S.BRIDGING, E.ENDED): S.HANGUP,
    (S.ANSWERED, E.HANGUP): S.HANGING_UP,
    (S.ANSWERED, E.ENDED): S.HANGUP,
    (S.HANGING_UP, E.ENDED): S.HANGUP,
}

ALIVE = frozenset({S.PARKED, S.BRIDGING, S.ANSWERING, S.ANSWERED, S.HANGING_UP})


def next_state(state: CallState, event: CallEvent) -> CallState:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(state, event) from None
