"""Bridging two calls held by different processes: each keeps its leg, a hop joins them.

With ``--workers`` (or the nodes of a cluster) the two calls of a bridge may be held by
different processes, each owning its call's SIP dialog and RTP sockets (DESIGN rule 5).
The process that gets the ``bridge`` command (the owner of its call, A) opens a hop
(:mod:`callstream.media.hop`) on A's leg and asks the owner of the other call, B, to
join: ``POST /internal/calls/{B}/bridge`` with A's hop offer, sent to the deployment's
front (the ``--workers`` supervisor, or this node's own listener in a cluster), which
routes it to B's owner as it routes any command for B. B's owner opens its hop, joins
it to A's, stores ``call.bridged`` for B and answers with its offer; A's owner joins
its hop to B's and stores ``call.bridged`` for A. Each call's webhooks are committed
by its owner, in its order, as always.

When either call ends, its owner closes its hop and tells the other owner
(``POST /internal/calls/{other}/unbridge``), which closes its own: the other call goes
on, unbridged, as in one process.

The internal requests carry the deployment's peer token (derived from the webhook
signing key every process of a deployment shares:
:meth:`callstream.webhooks.signing.WebhookSigner.peer_token`); anything else is refused.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
from collections.abc import Callable
from urllib.parse import quote, urlsplit

import orjson

from callstream.calls.exceptions import (
    CallEnded,
    CallNotAnswered,
    CallNotFound,
    CommandError,
    PeerUnavailable,
)
from callstream.calls.features import FeatureEvent, LegMedia
from callstream.http_fetch import fetch
from callstream.media.codecs import FRAMES_PER_SECOND
from callstream.media.hop import HopEndpoint, HopError, HopOffer, open_hop
from callstream.media.hub import Bridge, Subscription, Track, bridge
from callstream.media.metrics import BRIDGE_HOP_FRAMES, BRIDGE_HOPS

log = logging.getLogger(__name__)

#: Where a call's remote bridge is kept among its features (so it ends with the call).
FEATURE_KEY = "remote_bridge"
#: The other call's leg in this call's hub is named this and its call_control_id.
PEER_LEG_PREFIX = "peer:"
#: The header an internal request shows the peer token in.
PEER_TOKEN_HEADER = "x-callstream-peer-token"
#: Seconds a bridge waits for the other call's owner to answer.
PEER_ANSWER_SECS = 5.0
#: Seconds the other call's owner waits for that call's lock before it answers busy:
#: less than PEER_ANSWER_SECS, so two bridges crossing (A to B and B to A at once, each
#: holding its own call's lock) both get an answer instead of both timing out.
PEER_LOCK_SECS = 2.0
#: Seconds a stopping process waits for its last unbridge notices to go out.
CLOSE_WAIT_SECS = 1.0
#: Most bytes of a peer's answer to read.
MAX_PEER_ANSWER = 64 * 1024

#: The refusals a peer may answer, as the command here refuses (others: unavailable).
_REFUSALS: dict[str, type[CommandError]] = {
    "90015": CallNotFound, "90018": CallEnded, "90034": CallNotAnswered}


class RemoteBridge:
    """A call's half of a bridge with a call of another process (a call feature).

    The other call shows up in this call's hub as a leg of its own, ``peer_media``: its
    inbound is what the hop brings (the other call's voice), its outbound what the hop
    takes (what the other call should hear), so the two legs are joined by the bridge
    of one process (:func:`callstream.media.hub.bridge`), and a stream's playback to
    the "opposite" leg reaches the other call through the same hop.

    ``connect`` starts the audio both ways; ``detach`` (the call ended) closes the hop
    and tells the peer; ``close`` closes it without a word (the peer ended it).
    """

    def __init__(self, media: LegMedia, hop: HopEndpoint, call_id: str, peer_call: str,
                 left: Callable[[str, str, int], None]) -> None:
        self.media = media
        self.hop = hop
        self.call_id = call_id
        self.peer_call = peer_call
        self.peer_media: LegMedia | None = None
        self._left = left
        self._subscriptions: list[Subscription | Bridge] = []
        BRIDGE_HOPS.inc()

    @property
    def offer(self) -> HopOffer:
        host, port = self.hop.address
        if ipaddress.ip_address(host).is_unspecified:  # bound on every interface
            host = "::1" if ":" in host else "127.0.0.1"
        return HopOffer(host, port, self.media.sample_rate, self.hop.ssrc)

    def connect(self, theirs: HopOffer) -> None:
        """Join the other side's hop. Both sides carry PCM at the higher of the two
        legs' rates, so neither direction loses what the better leg can hear."""
        rate = max(self.media.sample_rate, theirs.sample_rate)
        hub, name = self.media.hub, f"{PEER_LEG_PREFIX}{self.peer_call}"
        hub.add_leg(name, rate)
        self.peer_media = LegMedia(hub, name, "L16", rate, 0)
        loop = asyncio.get_running_loop()

        def heard(pcm: bytes) -> None:
            hub.push_inbound(name, pcm, loop.time())

        self.hop.connect(theirs, 2 * rate // FRAMES_PER_SECOND, heard)
        # One at a time, so that close() undoes what was done if the call's leg is gone.
        self._subscriptions = [hub.add_frame_callback(name, Track.OUTBOUND, self.hop.send_frame)]
        self._subscriptions.append(bridge(hub, self.media.leg, hub, name))

    def close(self) -> None:
        if self.hop.closed:
            return
        for subscription in self._subscriptions:
            subscription.close()
        self._subscriptions = []
        peer = self.peer_media
        if peer is not None and peer.leg in peer.hub.legs:  # the call's hub may be closed
            peer.hub.remove_leg(peer.leg)
        hop = self.hop
        hop.close()
        BRIDGE_HOPS.dec()
        for outcome, count in (("sent", hop.frames_sent), ("received", hop.frames_received),
                               ("early", hop.early), ("dropped", hop.dropped)):
            BRIDGE_HOP_FRAMES.labels(outcome).inc(count)

    def detach(self, reason: str) -> list[FeatureEvent]:
        self.close()
        self._left(self.peer_call, self.call_id, self.hop.ssrc)
        return []


class RemoteBridges:
    """Opens hops and speaks to the other calls' owners.

    Args:
        front: the URL that routes a call's requests to its owner (the ``--workers``
            supervisor's listener, or this node's own with its owner forwarding).
        token: the deployment's peer token.
        host: where hops listen: the address the calls' RTP uses.
    """

    def __init__(self, front: str, token: str, host: str) -> None:
        target = urlsplit(front)
        self._front = (target.hostname or "127.0.0.1", target.port or 80)
        self._token = token
        self._host = host
        self._notices: set[asyncio.Task[None]] = set()

    def token_ok(self, shown: str | None) -> bool:
        return shown is not None and hmac.compare_digest(shown.encode(), self._token.encode())

    async def open(self, media: LegMedia, call_id: str, peer_call: str) -> RemoteBridge:
        hop = await open_hop(self._host)
        return RemoteBridge(media, hop, call_id, peer_call, self.tell_left)

    async def ask_join(self, other: str, call_id: str, offer: HopOffer) -> HopOffer:
        """Ask the owner of ``other`` to bridge it with ``call_id``: its hop's offer.

        Raises:
            CallNotFound, CallEnded, CallNotAnswered: the other call can't be bridged
                (as its owner answered).
            PeerUnavailable: its owner did not answer in time, or answered nonsense.
        """
        body: dict[str, object] = {"call_control_id": call_id, "hop": offer.as_json()}
        status, answer = await self._post(other, "bridge", body)
        if status == 200:
            try:
                return HopOffer.from_json(answer.get("data"))
            except HopError as exc:
                raise PeerUnavailable(f"The owner of call {other} answered a bad hop: "
                                      f"{exc}.") from exc
        if status == 401:
            raise PeerUnavailable(
                f"The process holding call {other} refused this one's peer token: the "
                "processes of a deployment must share one webhook signing key "
                "(webhook_signing_seed, or one data directory's key file).")
        error = _first_error(answer)
        refusal = _REFUSALS.get(str(error.get("code")))
        detail = str(error.get("detail") or f"HTTP {status}")
        if refusal is not None:
            raise refusal(detail, pointer="/call_control_id")
        raise PeerUnavailable(f"The process holding call {other} can't bridge it now "
                              f"({detail}); retry.")

    def tell_left(self, other: str, call_id: str, ssrc: int) -> None:
        """Tell the owner of ``other`` that ``call_id`` left their bridge, the one whose
        hop on our side sent with ``ssrc`` (in a task). Named by its hop, a notice
        late for one bridge can't end a newer one of the same two calls."""
        task = asyncio.get_running_loop().create_task(self._tell_left(other, call_id, ssrc))
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    async def _tell_left(self, other: str, call_id: str, ssrc: int) -> None:
        try:
            await self._post(other, "unbridge", {"call_control_id": call_id, "ssrc": ssrc})
        except PeerUnavailable as exc:
            # Its hop hears nothing more; it unbridges when its own call ends.
            log.warning("call %s: could not tell the owner of call %s that the bridge "
                        "ended: %s", call_id, other, exc.detail)

    async def _post(self, call_id: str, action: str, body: dict[str, object]
                    ) -> tuple[int, dict[str, object]]:
        payload = orjson.dumps(body)
        host, port = self._front
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        request = (f"POST /internal/calls/{quote(call_id, safe='')}/{action} HTTP/1.1\r\n"
                   f"host: {authority}\r\ncontent-type: application/json\r\n"
                   f"content-length: {len(payload)}\r\n{PEER_TOKEN_HEADER}: {self._token}\r\n"
                   "connection: close\r\n\r\n").encode() + payload
        try:
            async with asyncio.timeout(PEER_ANSWER_SECS):
                head, answer = await fetch(host, port, request, max_body=MAX_PEER_ANSWER)
        except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError) as exc:
            raise PeerUnavailable(f"The process holding call {call_id} did not answer "
                                  f"({exc!r}); retry.") from exc
        try:
            status = int(head.split(b" ", 2)[1])
            parsed = orjson.loads(answer) if answer else {}
        except (IndexError, ValueError) as exc:
            raise PeerUnavailable(f"The process holding call {call_id} answered "
                                  "garbage; retry.") from exc
        return status, parsed if isinstance(parsed, dict) else {}

    async def close(self) -> None:
        """At shutdown, once its calls hung up: wait a little for their notices."""
        if self._notices:
            await asyncio.wait(self._notices, timeout=CLOSE_WAIT_SECS)


def _first_error(answer: dict[str, object]) -> dict[str, object]:
    errors = answer.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return errors[0]
    return {}
