"""SIP dialogs (RFC 3261 §12): the peer-to-peer state a call lives in.

A dialog is identified by Call-ID, local tag and remote tag, and holds what
in-dialog requests need: sequence numbers, the remote target (the peer's
Contact) and the route set (from Record-Route). :class:`Dialog` is created
from the INVITE we received (:meth:`Dialog.as_uas`, §12.1.1) or from the
response to the INVITE we sent (:meth:`Dialog.as_uac`, §12.1.2) and builds
BYE, re-INVITE, INFO and the ACK for a 2xx (:meth:`Dialog.create_request`,
:meth:`Dialog.create_ack`, §12.2.1.1 and §13.2.2.4).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from .headers import NameAddr, parse_cseq, parse_name_addr
from .message import Headers, SipRequest, SipResponse
from .uri import SipUri, parse_uri

__all__ = ["Dialog", "DialogId", "DialogState"]

#: Max-Forwards on requests we originate (RFC 3261 §8.1.1.6: "SHOULD be 70").
MAX_FORWARDS = 70
#: URI parameters that may not appear in a Request-URI (RFC 3261 §19.1.1 table).
_NOT_IN_REQUEST_URI = frozenset({"method", "ttl"})


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(frozen=True, slots=True)
class DialogId:
    """Call-ID, local tag, remote tag (RFC 3261 §12)."""

    call_id: str
    local_tag: str
    remote_tag: str


class Dialog:
    """The state of one dialog and a factory for its requests.

    Attributes:
        call_id: The Call-ID.
        local: Our From (UAC) or To (UAS) address, with our tag.
        remote: The peer's address, with its tag.
        local_seq: The last CSeq number we used; the next request uses one more.
        remote_seq: The last CSeq number the peer used, or ``None``.
        remote_target: Where requests go: the peer's Contact URI.
        route_set: Route set, in the order requests list it.
        state: Early, confirmed or terminated.
    """

    __slots__ = (
        "call_id",
        "local",
        "local_seq",
        "remote",
        "remote_seq",
        "remote_target",
        "route_set",
        "state",
    )

    def __init__(
        self,
        *,
        call_id: str,
        local: NameAddr,
        remote: NameAddr,
        local_seq: int,
        remote_seq: int | None,
        remote_target: SipUri,
        route_set: tuple[NameAddr, ...],
        state: DialogState,
    ) -> None:
        self.call_id = call_id
        self.local = local
        self.remote = remote
        self.local_seq = local_seq
        self.remote_seq = remote_seq
        self.remote_target = remote_target
        self.route_set = route_set
        self.state = state

    def __repr__(self) -> str:
        return f"<Dialog {self.call_id} {self.state.value}>"

    @property
    def id(self) -> DialogId:
        return DialogId(self.call_id, self.local.tag or "", self.remote.tag or "")

    @classmethod
    def as_uas(
        cls, request: SipRequest, local_tag: str, *, state: DialogState = DialogState.CONFIRMED
    ) -> Dialog:
        """Create the dialog for a request we answer with 101-299 (RFC 3261 §12.1.1).

        "The route set MUST be set to the list of URIs in the Record-Route
        header field from the request ... in order", "the remote target MUST
        be set to the URI from the Contact header field of the request", and
        "The remote sequence number MUST be set to the value of the sequence
        number in the CSeq header field of the request."

        Raises:
            SipParseError: A header it needs does not parse.
        """
        headers = request.headers
        contact = _first_contact(headers)
        local = parse_name_addr(headers.get("To") or "", "To").with_tag(local_tag)
        return cls(
            call_id=headers.get("Call-ID") or "",
            local=local,
            remote=parse_name_addr(headers.get("From") or "", "From"),
            local_seq=0,
            remote_seq=parse_cseq(headers.get("CSeq") or "").seq,
            # Without a Contact (a broken peer), its From address is the best guess.
            remote_target=contact.uri if contact is not None else _from_uri(request),
            route_set=tuple(_routes(headers.get_all("Record-Route"))),
            state=state,
        )

    @classmethod
    def as_uac(cls, request: SipRequest, response: SipResponse) -> Dialog:
        """Create the dialog from a 101-299 response to our request (RFC 3261 §12.1.2).

        "The route set MUST be set to the list of URIs in the Record-Route
        header field from the response, taken in reverse order".

        Raises:
            SipParseError: A header it needs does not parse.
        """
        state = DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY
        contact = _first_contact(response.headers)
        return cls(
            call_id=request.headers.get("Call-ID") or "",
            local=parse_name_addr(request.headers.get("From") or "", "From"),
            remote=parse_name_addr(response.headers.get("To") or "", "To"),
            local_seq=parse_cseq(request.headers.get("CSeq") or "").seq,
            remote_seq=None,
            remote_target=contact.uri if contact is not None else parse_uri(request.uri),
            route_set=tuple(reversed(_routes(response.headers.get_all("Record-Route")))),
            state=state,
        )

    def confirm(self, response: SipResponse) -> None:
        """Move an early UAC dialog to confirmed on its 2xx.

        RFC 3261 §12.1.2 computes the route set from the 2xx; §12.2.1.2 makes
        a 2xx's Contact the new remote target.

        Raises:
            SipParseError: A header it needs does not parse.
        """
        if self.state is DialogState.EARLY:
            self.route_set = tuple(reversed(_routes(response.headers.get_all("Record-Route"))))
        self.refresh_target(response.headers)
        self.state = DialogState.CONFIRMED

    def refresh_target(self, headers: Headers) -> None:
        """Take a new remote target from a target-refresh request or its 2xx (§12.2)."""
        contact = _first_contact(headers)
        if contact is not None:
            self.remote_target = contact.uri

    def accept_remote_seq(self, cseq: int, method: str) -> bool:
        """Check and record the CSeq of an in-dialog request (RFC 3261 §12.2.2).

        "If the remote sequence number was not empty, but the sequence number
        of the request is lower than the remote sequence number, the request
        is out of order and MUST be rejected with a 500". ACK and CANCEL reuse
        their INVITE's number and are not checked.

        Returns:
            False when the request is out of order (answer 500).
        """
        if method in ("ACK", "CANCEL"):
            return True
        if self.remote_seq is not None and cseq < self.remote_seq:
            return False
        self.remote_seq = cseq
        return True

    def next_hop(self) -> SipUri:
        """The URI whose host and port the next request is sent to (§8.1.2, §12.2.1.1)."""
        return self.route_set[0].uri if self.route_set else self.remote_target

    def create_request(
        self,
        method: str,
        *,
        via: str,
        contact: str | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        extra_headers: Iterable[tuple[str, str]] = (),
        cseq: int | None = None,
    ) -> SipRequest:
        """Build an in-dialog request (RFC 3261 §12.2.1.1).

        Args:
            method: The method; any but ACK (see :meth:`create_ack`) and CANCEL.
            via: Our Via value, with a fresh branch.
            contact: Our Contact value (needed on INVITE, a target refresh).
            body: The body.
            content_type: Its Content-Type.
            extra_headers: More headers, placed before Content-Type.
            cseq: Use this CSeq number instead of the next local one.
        """
        if cseq is None:
            # "The CSeq header field value ... MUST be incremented by one"
            self.local_seq += 1
            cseq = self.local_seq
        request_uri, routes = self._request_uri_and_routes()
        headers: list[tuple[str, str]] = [("Via", via)]
        headers.extend(("Route", route) for route in routes)
        headers.append(("Max-Forwards", str(MAX_FORWARDS)))
        headers.append(("From", self.local.serialize()))
        headers.append(("To", self.remote.serialize()))
        headers.append(("Call-ID", self.call_id))
        headers.append(("CSeq", f"{cseq} {method}"))
        if contact is not None:
            headers.append(("Contact", contact))
        headers.extend(extra_headers)
        if body:
            headers.append(("Content-Type", content_type or "application/sdp"))
        headers.append(("Content-Length", str(len(body))))
        return SipRequest(method, request_uri, Headers(headers), body)

    def create_ack(
        self, invite_cseq: int, *, via: str, body: bytes = b"", content_type: str | None = None
    ) -> SipRequest:
        """Build the ACK for a 2xx to our INVITE (RFC 3261 §13.2.2.4).

        "The sequence number of the CSeq header field MUST be the same as the
        INVITE being acknowledged, but the CSeq method MUST be ACK."
        """
        return self.create_request(
            "ACK", via=via, body=body, content_type=content_type, cseq=invite_cseq
        )

    def _request_uri_and_routes(self) -> tuple[str, list[str]]:
        if not self.route_set:
            return self.remote_target.serialize(), []
        first = self.route_set[0]
        if first.uri.param("lr") is not None:
            return self.remote_target.serialize(), [r.serialize() for r in self.route_set]
        # Strict router (RFC 2543): its URI becomes the Request-URI and the
        # remote target goes last in Route.
        stripped = first.uri.with_params(
            tuple((k, v) for k, v in first.uri.params if k.lower() not in _NOT_IN_REQUEST_URI)
        )
        routes = [r.serialize() for r in self.route_set[1:]]
        routes.append(f"<{self.remote_target.serialize()}>")
        return stripped.serialize(), routes


def _routes(values: list[str]) -> list[NameAddr]:
    return [parse_name_addr(value, "Record-Route") for value in values]


def _first_contact(headers: Headers) -> NameAddr | None:
    contacts = headers.get_all("Contact")
    if not contacts or contacts[0].strip() == "*":
        return None
    return parse_name_addr(contacts[0], "Contact")


def _from_uri(request: SipRequest) -> SipUri:
    return parse_name_addr(request.headers.get("From") or "", "From").uri
