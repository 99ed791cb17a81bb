"""SIP transactions (RFC 3261 §17, with the RFC 6026 "Accepted" state).

Theory of operation
-------------------

A transaction is one request and every response to it, plus the
retransmissions that make that exchange reliable over UDP. There are four
kinds: INVITE client (ICT), non-INVITE client (NICT), INVITE server (IST) and
non-INVITE server (NIST). Each is a state machine whose every step is a row of
:data:`TRANSITIONS`::

    (kind, state, input) -> (next state, actions)

An *input* is something that happened: a response or request arrived
(``RECV_*``), the transaction user (TU, i.e. the endpoint) handed us a
response to send (``SEND_*``), a timer fired (``TIMER_*``) or the transport
failed. The *actions* say what to do about it: send, retransmit, pass the
message up to the TU, report a timeout. A missing row is an illegal step and
raises :class:`~callstream.sip.exceptions.InvalidTransactionStep`; every input a
peer can cause has a row (often "stay and absorb"), so only a TU bug can
reach that error.

Timers are tied to states: :data:`STATE_TIMERS` lists the timers that run in
each state. Entering a state starts its timers that were not already running
and cancels the rest, so the table alone says when each timer lives (Timer E
keeps running from Trying into Proceeding, as §17.1.2.2 wants). Durations and
back-off rules live in :data:`TIMERS`, one row per RFC timer A-M, read
against :class:`TimerConfig` (T1, T2, T4). On reliable transports (TCP) the
retransmission timers do not run and the "wait for stray retransmissions"
timers (D, I, J, K) are zero, so those states are left at once.

2xx responses to INVITE are special: they are end to end. The IST moves to
Accepted (RFC 6026 §8.6) and absorbs INVITE retransmissions for 64*T1 (Timer
L) while the TU retransmits the 2xx until the ACK arrives (RFC 3261
§13.3.1.4); the ICT moves to Accepted and passes every 2xx retransmission up
for 64*T1 (Timer M) so that the TU re-sends its ACK.

Nothing here reads a clock or touches a socket: every call takes ``now``,
returns a list of outputs (:class:`Send`, :class:`PassUp`, :class:`TimedOut`,
:class:`TransportFailed`) and :meth:`Transaction.next_deadline` tells the
caller when to call :meth:`Transaction.handle_timeout`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from .exceptions import InvalidTransactionStep, SipParseError
from .headers import BRANCH_MAGIC_COOKIE, Via, parse_name_addr
from .message import Headers, SipMessage, SipRequest, SipResponse

__all__ = [
    "DEFAULT_TIMERS",
    "STATE_TIMERS",
    "TIMERS",
    "TRANSITIONS",
    "Action",
    "Input",
    "Kind",
    "PassUp",
    "Send",
    "State",
    "TimedOut",
    "Timer",
    "TimerConfig",
    "Transaction",
    "TransportFailed",
    "client_key",
    "server_key",
    "state_diagram",
]


class Kind(enum.Enum):
    """The four transaction kinds (RFC 3261 §17.1.1, §17.1.2, §17.2.1, §17.2.2)."""

    INVITE_CLIENT = "ICT"
    NON_INVITE_CLIENT = "NICT"
    INVITE_SERVER = "IST"
    NON_INVITE_SERVER = "NIST"

    @property
    def is_client(self) -> bool:
        return self in (Kind.INVITE_CLIENT, Kind.NON_INVITE_CLIENT)


class State(enum.Enum):
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class Input(enum.Enum):
    # Client side: a response arrived.
    RECV_1XX = "1xx received"
    RECV_2XX = "2xx received"
    RECV_FINAL = "300-699 received"
    # Server side: the request again, or the ACK for our non-2xx.
    RECV_REQUEST = "request retransmission"
    RECV_ACK = "ACK received"
    # Server side: the TU hands us a response.
    SEND_1XX = "TU sends 1xx"
    SEND_2XX = "TU sends 2xx"
    SEND_FINAL = "TU sends 300-699"
    TIMER_A = "Timer A"
    TIMER_B = "Timer B"
    TIMER_D = "Timer D"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_J = "Timer J"
    TIMER_K = "Timer K"
    TIMER_L = "Timer L"
    TIMER_M = "Timer M"
    TRANSPORT_ERROR = "transport error"


class Action(enum.Enum):
    PASS_UP = "pass the message to the TU"
    RETRANSMIT_REQUEST = "retransmit the request"
    SEND_ACK = "send (or resend) the ACK for a non-2xx final"
    SEND_RESPONSE = "send the TU's response and remember it"
    RESEND_RESPONSE = "resend the last response"
    REPORT_TIMEOUT = "tell the TU the transaction timed out"
    REPORT_TRANSPORT_ERROR = "tell the TU the transport failed"


class Timer(enum.Enum):
    A = "A"
    B = "B"
    D = "D"
    E = "E"
    F = "F"
    G = "G"
    H = "H"
    I = "I"  # noqa: E741 - the RFC's name
    J = "J"
    K = "K"
    L = "L"
    M = "M"


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """Base timer values (RFC 3261 §17.1.1.1, Table 4).

    Attributes:
        t1: RTT estimate, 500 ms by default.
        t2: Longest retransmit interval for non-INVITE requests and INVITE responses.
        t4: Longest time a message stays in the network.
        timer_d: Timer D on unreliable transports ("at least 32 seconds").
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_d: float = 32.0


DEFAULT_TIMERS = TimerConfig()

Duration = Callable[[TimerConfig], float]


@dataclass(frozen=True, slots=True)
class TimerSpec:
    """One row of the timer table.

    Attributes:
        purpose: What the timer is for.
        unreliable: Initial duration over UDP.
        reliable: Initial duration over TCP, or ``None`` when it does not run there.
        backoff: For retransmission timers, the next interval from the last one.
    """

    purpose: str
    unreliable: Duration
    reliable: Duration | None
    backoff: Callable[[TimerConfig, float, State], float] | None = None


def _double(config: TimerConfig, interval: float, state: State) -> float:
    return 2 * interval


def _double_to_t2(config: TimerConfig, interval: float, state: State) -> float:
    return min(2 * interval, config.t2)


def _timer_e_backoff(config: TimerConfig, interval: float, state: State) -> float:
    # §17.1.2.2: in Proceeding "Timer E MUST be reset with a value of T2 seconds".
    return config.t2 if state is State.PROCEEDING else min(2 * interval, config.t2)


def _t1(c: TimerConfig) -> float:
    return c.t1


def _64t1(c: TimerConfig) -> float:
    return 64 * c.t1


def _t4(c: TimerConfig) -> float:
    return c.t4


def _zero(c: TimerConfig) -> float:
    return 0.0


#: RFC 3261 Table 4 (and RFC 6026 §8.11 for L and M). Timer C is a proxy timer.
TIMERS: dict[Timer, TimerSpec] = {
    Timer.A: TimerSpec("INVITE retransmit", _t1, None, _double),
    Timer.B: TimerSpec("INVITE transaction timeout", _64t1, _64t1),
    Timer.D: TimerSpec("wait for response retransmits", lambda c: c.timer_d, _zero),
    Timer.E: TimerSpec("non-INVITE retransmit", _t1, None, _timer_e_backoff),
    Timer.F: TimerSpec("non-INVITE transaction timeout", _64t1, _64t1),
    Timer.G: TimerSpec("INVITE response retransmit", _t1, None, _double_to_t2),
    Timer.H: TimerSpec("wait for ACK receipt", _64t1, _64t1),
    Timer.I: TimerSpec("wait for ACK retransmits", _t4, _zero),
    Timer.J: TimerSpec("wait for non-INVITE request retransmits", _64t1, _zero),
    Timer.K: TimerSpec("wait for response retransmits", _t4, _zero),
    Timer.L: TimerSpec("wait for INVITE retransmits after 2xx", _64t1, _64t1),
    Timer.M: TimerSpec("wait for 2xx retransmits", _64t1, _64t1),
}

ICT, NICT, IST, NIST = (
    Kind.INVITE_CLIENT,
    Kind.NON_INVITE_CLIENT,
    Kind.INVITE_SERVER,
    Kind.NON_INVITE_SERVER,
)
S, I_, A_ = State, Input, Action

#: Timers that run while a transaction is in a state.
STATE_TIMERS: dict[tuple[Kind, State], tuple[Timer, ...]] = {
    (ICT, S.CALLING): (Timer.A, Timer.B),
    (ICT, S.COMPLETED): (Timer.D,),
    (ICT, S.ACCEPTED): (Timer.M,),
    (NICT, S.TRYING): (Timer.E, Timer.F),
    (NICT, S.PROCEEDING): (Timer.E, Timer.F),
    (NICT, S.COMPLETED): (Timer.K,),
    (IST, S.COMPLETED): (Timer.G, Timer.H),
    (IST, S.CONFIRMED): (Timer.I,),
    (IST, S.ACCEPTED): (Timer.L,),
    (NIST, S.COMPLETED): (Timer.J,),
}

INITIAL_STATE = {ICT: S.CALLING, NICT: S.TRYING, IST: S.PROCEEDING, NIST: S.TRYING}

_Row = tuple[State, tuple[Action, ...]]

#: (kind, state, input) -> (next state, actions). The whole of RFC 3261 §17.
TRANSITIONS: dict[tuple[Kind, State, Input], _Row] = {
    # INVITE client, §17.1.1.2 (Figure 5) + RFC 6026 §8.4.
    (ICT, S.CALLING, I_.TIMER_A): (S.CALLING, (A_.RETRANSMIT_REQUEST,)),
    (ICT, S.CALLING, I_.TIMER_B): (S.TERMINATED, (A_.REPORT_TIMEOUT,)),
    (ICT, S.CALLING, I_.RECV_1XX): (S.PROCEEDING, (A_.PASS_UP,)),
    (ICT, S.CALLING, I_.RECV_2XX): (S.ACCEPTED, (A_.PASS_UP,)),
    (ICT, S.CALLING, I_.RECV_FINAL): (S.COMPLETED, (A_.SEND_ACK, A_.PASS_UP)),
    (ICT, S.CALLING, I_.TRANSPORT_ERROR): (S.TERMINATED, (A_.REPORT_TRANSPORT_ERROR,)),
    (ICT, S.PROCEEDING, I_.RECV_1XX): (S.PROCEEDING, (A_.PASS_UP,)),
    (ICT, S.PROCEEDING, I_.RECV_2XX): (S.ACCEPTED, (A_.PASS_UP,)),
    (ICT, S.PROCEEDING, I_.RECV_FINAL): (S.COMPLETED, (A_.SEND_ACK, A_.PASS_UP)),
    (ICT, S.PROCEEDING, I_.TRANSPORT_ERROR): (S.TERMINATED, (A_.REPORT_TRANSPORT_ERROR,)),
    # "Any retransmissions of the final response ... MUST cause the ACK to be re-passed".
    (ICT, S.COMPLETED, I_.RECV_FINAL): (S.COMPLETED, (A_.SEND_ACK,)),
    (ICT, S.COMPLETED, I_.RECV_1XX): (S.COMPLETED, ()),
    (ICT, S.COMPLETED, I_.RECV_2XX): (S.COMPLETED, ()),
    (ICT, S.COMPLETED, I_.TIMER_D): (S.TERMINATED, ()),
    (ICT, S.COMPLETED, I_.TRANSPORT_ERROR): (S.TERMINATED, (A_.REPORT_TRANSPORT_ERROR,)),
    # RFC 6026 §8.4: 2xx retransmissions go up so the TU re-sends its ACK.
    (ICT, S.ACCEPTED, I_.RECV_2XX): (S.ACCEPTED, (A_.PASS_UP,)),
    (ICT, S.ACCEPTED, I_.RECV_1XX): (S.ACCEPTED, ()),
    (ICT, S.ACCEPTED, I_.RECV_FINAL): (S.ACCEPTED, ()),
    (ICT, S.ACCEPTED, I_.TIMER_M): (S.TERMINATED, ()),
    (ICT, S.ACCEPTED, I_.TRANSPORT_ERROR): (S.ACCEPTED, ()),
    # Non-INVITE client, §17.1.2.2 (Figure 6).
    (NICT, S.TRYING, I_.TIMER_E): (S.TRYING, (A_.RETRANSMIT_REQUEST,)),
    (NICT, S.TRYING, I_.TIMER_F): (S.TERMINATED, (A_.REPORT_TIMEOUT,)),
    (NICT, S.TRYING, I_.RECV_1XX): (S.PROCEEDING, (A_.PASS_UP,)),
    (NICT, S.TRYING, I_.RECV_2XX): (S.COMPLETED, (A_.PASS_UP,)),
    (NICT, S.TRYING, I_.RECV_FINAL): (S.COMPLETED, (A_.PASS_UP,)),
    (NICT, S.TRYING, I_.TRANSPORT_ERROR): (S.TERMINATED, (A_.REPORT_TRANSPORT_ERROR,)),
    (NICT, S.PROCEEDING, I_.TIMER_E): (S.PROCEEDING, (A_.RETRANSMIT_REQUEST,)),
    (NICT, S.PROCEEDING, I_.TIMER_F): (S.TERMINATED, (A_.REPORT_TIMEOUT,)),
    (NICT, S.PROCEEDING, I_.RECV_1XX): (S.PROCEEDING, (A_.PASS_UP,)),
    (NICT, S.PROCEEDING, I_.RECV_2XX): (S.COMPLETED, (A_.PASS_UP,)),
    (NICT, S.PROCEEDING, I_.RECV_FINAL): (S.COMPLETED, (A_.PASS_UP,)),
    (NICT, S.PROCEEDING, I_.TRANSPORT_ERROR): (S.TERMINATED, (A_.REPORT_TRANSPORT_ERROR,)),
    # "...buffer any additional response retransmissions that may be received".
    (NICT, S.COMPLETED, I_.RECV_1XX): (S.COMPLETED, ()),
    (NICT, S.COMPLETED, I_.RECV_2XX): (S.COMPLETED, ()),
    (NICT, S.COMPLETED, I_.RECV_FINAL): (S.COMPLETED, ()),
    (NICT, S.COMPLETED, I_.TIMER_K): (S.TERMINATED, ()),
    # INVITE server, §17.2.1 (Figure 7) + RFC 6026 §8.5-8.7.
    (IST, S.PROCEEDING, I_.RECV_REQUEST): (S.PROCEEDING, (A_.RESEND_RESPONSE,)),
    (IST, S.PROCEEDING, I_.SEND_1XX): (S.PROCEEDING, (A_.SEND_RESPONSE,)),
    (IST, S.PROCEEDING, I_.SEND_2XX): (S.ACCEPTED, (A_.SEND_RESPONSE,)),
    (IST, S.PROCEEDING, I_.SEND_FINAL): (S.COMPLETED, (A_.SEND_RESPONSE,)),
    (IST, S.PROCEEDING, I_.TRANSPORT_ERROR): (S.TERMINATED, (A_.REPORT_TRANSPORT_ERROR,)),
    (IST, S.COMPLETED, I_.RECV_REQUEST): (S.COMPLETED, (A_.RESEND_RESPONSE,)),
    (IST, S.COMPLETED, I_.TIMER_G): (S.COMPLETED, (A_.RESEND_RESPONSE,)),
    (IST, S.COMPLETED, I_.RECV_ACK): (S.CONFIRMED, ()),
    (IST, S.COMPLETED, I_.TIMER_H): (S.TERMINATED, (A_.REPORT_TIMEOUT,)),
    (IST, S.COMPLETED, I_.TRANSPORT_ERROR): (S.TERMINATED, (A_.REPORT_TRANSPORT_ERROR,)),
    # "...the server transaction MUST absorb any ACKs" (and INVITEs) in Confirmed.
    (IST, S.CONFIRMED, I_.RECV_ACK): (S.CONFIRMED, ()),
    (IST, S.CONFIRMED, I_.RECV_REQUEST): (S.CONFIRMED, ()),
    (IST, S.CONFIRMED, I_.TIMER_I): (S.TERMINATED, ()),
    # RFC 6026 §8.7: "Any retransmissions of the INVITE received while in the
    # Accepted state MUST be absorbed"; the TU's 2xx retransmissions go out.
    (IST, S.ACCEPTED, I_.RECV_REQUEST): (S.ACCEPTED, ()),
    (IST, S.ACCEPTED, I_.RECV_ACK): (S.ACCEPTED, (A_.PASS_UP,)),
    (IST, S.ACCEPTED, I_.SEND_2XX): (S.ACCEPTED, (A_.SEND_RESPONSE,)),
    (IST, S.ACCEPTED, I_.TIMER_L): (S.TERMINATED, ()),
    (IST, S.ACCEPTED, I_.TRANSPORT_ERROR): (S.ACCEPTED, ()),
    # Non-INVITE server, §17.2.2 (Figure 8).
    # "...any further request retransmissions are discarded" while Trying.
    (NIST, S.TRYING, I_.RECV_REQUEST): (S.TRYING, ()),
    (NIST, S.TRYING, I_.SEND_1XX): (S.PROCEEDING, (A_.SEND_RESPONSE,)),
    (NIST, S.TRYING, I_.SEND_2XX): (S.COMPLETED, (A_.SEND_RESPONSE,)),
    (NIST, S.TRYING, I_.SEND_FINAL): (S.COMPLETED, (A_.SEND_RESPONSE,)),
    (NIST, S.PROCEEDING, I_.RECV_REQUEST): (S.PROCEEDING, (A_.RESEND_RESPONSE,)),
    (NIST, S.PROCEEDING, I_.SEND_1XX): (S.PROCEEDING, (A_.SEND_RESPONSE,)),
    (NIST, S.PROCEEDING, I_.SEND_2XX): (S.COMPLETED, (A_.SEND_RESPONSE,)),
    (NIST, S.PROCEEDING, I_.SEND_FINAL): (S.COMPLETED, (A_.SEND_RESPONSE,)),
    (NIST, S.PROCEEDING, I_.TRANSPORT_ERROR): (S.TERMINATED, (A_.REPORT_TRANSPORT_ERROR,)),
    (NIST, S.COMPLETED, I_.RECV_REQUEST): (S.COMPLETED, (A_.RESEND_RESPONSE,)),
    (NIST, S.COMPLETED, I_.TIMER_J): (S.TERMINATED, ()),
    (NIST, S.COMPLETED, I_.TRANSPORT_ERROR): (S.TERMINATED, (A_.REPORT_TRANSPORT_ERROR,)),
}

_TIMER_INPUT = {timer: Input[f"TIMER_{timer.value}"] for timer in Timer}
_INPUT_TIMER = {event: timer for timer, event in _TIMER_INPUT.items()}


@dataclass(frozen=True, slots=True)
class Send:
    """Output: hand ``message`` to the transport."""

    message: SipMessage


@dataclass(frozen=True, slots=True)
class PassUp:
    """Output: hand ``message`` to the transaction user."""

    message: SipMessage


@dataclass(frozen=True, slots=True)
class TimedOut:
    """Output: the transaction gave up (Timer B, F or H); tell the TU."""

    timer: Timer


@dataclass(frozen=True, slots=True)
class TransportFailed:
    """Output: the transport could not deliver; tell the TU."""


Output = Send | PassUp | TimedOut | TransportFailed

ServerKey = tuple[str, ...]
ClientKey = tuple[str, str]


def server_key(request: SipRequest, top_via: Via) -> ServerKey:
    """The key that matches a request to its server transaction (§17.2.3).

    With an RFC 3261 branch: branch, sent-by and method, where ACK counts as
    INVITE. Otherwise (RFC 2543 peers) the Request-URI, From tag, Call-ID,
    CSeq number, sent-by and method (the To tag is left out so that the ACK
    for a non-2xx, which carries our tag, still matches).
    """
    method = "INVITE" if request.method == "ACK" else request.method
    host = top_via.host.lower()
    port = str(top_via.port or "")
    branch = top_via.branch
    if branch is not None and branch.startswith(BRANCH_MAGIC_COOKIE):
        return ("3261", branch, host, port, method)
    from_tag = _tag(request.headers.get("From"))
    cseq = (request.headers.get("CSeq") or "").split(" ", 1)[0]
    call_id = request.headers.get("Call-ID") or ""
    return ("2543", request.uri, from_tag, call_id, cseq, host, port, method)


def client_key(branch: str, method: str) -> ClientKey:
    """The key that matches a response to its client transaction (§17.1.3)."""
    return (branch, method)


def _tag(value: str | None) -> str:
    if value is None:
        return ""
    try:
        return parse_name_addr(value).tag or ""
    except SipParseError:
        return ""


def build_ack_for_final(request: SipRequest, response: SipResponse) -> SipRequest:
    """The ACK an INVITE client transaction sends for a 300-699 (§17.1.1.3).

    "The ACK MUST contain a single Via header field, and this MUST be equal
    to the top Via header field of the original request"; Call-ID, From and
    Request-URI equal the request's, To equals the response's, the CSeq
    number is the request's with method ACK, and Route is copied.
    """
    headers: list[tuple[str, str]] = [("Via", request.headers.get_all("Via")[0])]
    headers.extend(("Route", route) for route in request.headers.get_all("Route"))
    headers.append(("Max-Forwards", "70"))
    headers.append(("From", request.headers.get("From") or ""))
    headers.append(("To", response.headers.get("To") or ""))
    headers.append(("Call-ID", request.headers.get("Call-ID") or ""))
    cseq = (request.headers.get("CSeq") or "").split(" ", 1)[0]
    headers.append(("CSeq", f"{cseq} ACK"))
    headers.append(("Content-Length", "0"))
    return SipRequest("ACK", request.uri, Headers(headers))


class Transaction:
    """One client or server transaction.

    Args:
        kind: Which of the four machines.
        request: The request that creates it (sent by us for a client
            transaction, received for a server one).
        reliable: True over TCP: no retransmissions, zero wait timers.
        config: Timer base values.

    A client transaction sends its request when :meth:`start` is called.
    """

    __slots__ = (
        "_ack",
        "_config",
        "_timers",
        "kind",
        "last_response",
        "reliable",
        "request",
        "state",
    )

    def __init__(
        self,
        kind: Kind,
        request: SipRequest,
        *,
        reliable: bool = False,
        config: TimerConfig = DEFAULT_TIMERS,
    ) -> None:
        self.kind = kind
        self.request = request
        self.reliable = reliable
        self.state = INITIAL_STATE[kind]
        self.last_response: SipResponse | None = None
        self._ack: SipRequest | None = None
        self._config = config
        # timer -> (deadline, current interval)
        self._timers: dict[Timer, tuple[float, float]] = {}

    def __repr__(self) -> str:
        return f"<Transaction {self.kind.value} {self.request.method} {self.state.value}>"

    @property
    def terminated(self) -> bool:
        """Whether the transaction is over and can be forgotten."""
        return self.state is State.TERMINATED

    def start(self, now: float) -> list[Output]:
        """Start the transaction: a client one sends its request."""
        outputs: list[Output] = []
        if self.kind.is_client:
            outputs.append(Send(self.request))
        self._start_timers((), now, outputs)
        return outputs

    def receive_response(self, response: SipResponse, now: float) -> list[Output]:
        """Feed a response that matched this client transaction."""
        if response.status < 200:
            event = Input.RECV_1XX
        elif response.status < 300:
            event = Input.RECV_2XX
        else:
            event = Input.RECV_FINAL
        return self._step(event, response, now)

    def receive_request(self, request: SipRequest, now: float) -> list[Output]:
        """Feed a retransmitted request (or the ACK) that matched this server transaction."""
        event = Input.RECV_ACK if request.method == "ACK" else Input.RECV_REQUEST
        return self._step(event, request, now)

    def send_response(self, response: SipResponse, now: float) -> list[Output]:
        """Send a response from the TU through this server transaction.

        Raises:
            InvalidTransactionStep: The state does not allow it (e.g. a second final response).
        """
        if response.status < 200:
            event = Input.SEND_1XX
        elif response.status < 300:
            event = Input.SEND_2XX
        else:
            event = Input.SEND_FINAL
        return self._step(event, response, now)

    def transport_error(self, now: float) -> list[Output]:
        """Report that the transport could not send (RFC 3261 §17.1.4, §17.2.4)."""
        if (self.kind, self.state, Input.TRANSPORT_ERROR) not in TRANSITIONS:
            return []
        return self._step(Input.TRANSPORT_ERROR, None, now)

    def next_deadline(self) -> float | None:
        """When the next timer fires, or ``None``."""
        if not self._timers:
            return None
        return min(deadline for deadline, _ in self._timers.values())

    def handle_timeout(self, now: float) -> list[Output]:
        """Fire every timer due at ``now``, earliest first."""
        outputs: list[Output] = []
        while self._timers:
            timer, (deadline, interval) = min(
                self._timers.items(), key=lambda item: (item[1][0], item[0].value)
            )
            if deadline > now:
                break
            spec = TIMERS[timer]
            if spec.backoff is not None:
                next_interval = spec.backoff(self._config, interval, self.state)
                self._timers[timer] = (now + next_interval, next_interval)
            else:
                del self._timers[timer]
            outputs.extend(self._step(_TIMER_INPUT[timer], None, now))
        return outputs

    def _step(self, event: Input, message: SipMessage | None, now: float) -> list[Output]:
        row = TRANSITIONS.get((self.kind, self.state, event))
        if row is None:
            raise InvalidTransactionStep(
                f"can't handle {event.value} in state {self.state.value} "
                f"of {self.kind.value} {self.request.method}"
            )
        new_state, actions = row
        outputs: list[Output] = []
        for action in actions:
            self._act(action, event, message, outputs)
        if new_state is not self.state:
            old_timers = STATE_TIMERS.get((self.kind, self.state), ())
            self.state = new_state
            self._start_timers(old_timers, now, outputs)
        return outputs

    def _act(
        self, action: Action, event: Input, message: SipMessage | None, outputs: list[Output]
    ) -> None:
        if action is Action.PASS_UP and message is not None:
            outputs.append(PassUp(message))
        elif action is Action.RETRANSMIT_REQUEST:
            outputs.append(Send(self.request))
        elif action is Action.SEND_ACK and isinstance(message, SipResponse):
            if self._ack is None:
                self._ack = build_ack_for_final(self.request, message)
            outputs.append(Send(self._ack))
        elif action is Action.SEND_RESPONSE and isinstance(message, SipResponse):
            self.last_response = message
            outputs.append(Send(message))
        elif action is Action.RESEND_RESPONSE and self.last_response is not None:
            outputs.append(Send(self.last_response))
        elif action is Action.REPORT_TIMEOUT and event in _INPUT_TIMER:
            outputs.append(TimedOut(_INPUT_TIMER[event]))
        elif action is Action.REPORT_TRANSPORT_ERROR:
            outputs.append(TransportFailed())

    def _start_timers(
        self, old_timers: tuple[Timer, ...], now: float, outputs: list[Output]
    ) -> None:
        wanted = STATE_TIMERS.get((self.kind, self.state), ())
        for timer in list(self._timers):
            if timer not in wanted:
                del self._timers[timer]
        zero: list[Timer] = []
        for timer in wanted:
            if timer in old_timers and timer in self._timers:
                continue  # keeps running across the transition
            spec = TIMERS[timer]
            duration_of = spec.reliable if self.reliable else spec.unreliable
            if duration_of is None:
                continue
            duration = duration_of(self._config)
            if duration <= 0:
                zero.append(timer)
            else:
                self._timers[timer] = (now + duration, duration)
        for timer in zero:
            # A zero timer (D, I, J, K over TCP) leaves the state at once.
            outputs.extend(self._step(_TIMER_INPUT[timer], None, now))


def state_diagram(kind: Kind) -> str:
    """Draw one machine from :data:`TRANSITIONS` as a Mermaid ``stateDiagram``.

    Absorbing self-loops (no actions) are left out to keep the picture readable;
    the table remains the reference.
    """
    lines = ["stateDiagram-v2", f"    [*] --> {INITIAL_STATE[kind].value}"]
    for (row_kind, state, event), (target, actions) in TRANSITIONS.items():
        if row_kind is not kind or (target is state and not actions):
            continue
        label = event.value
        if actions:
            label += " / " + ", ".join(action.name.lower() for action in actions)
        lines.append(f"    {state.value} --> {target.value}: {label}")
    lines.append(f"    {State.TERMINATED.value} --> [*]")
    return "\n".join(lines) + "\n"
