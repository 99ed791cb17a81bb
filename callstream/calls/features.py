"""Media features on a live call: WebSocket streams, RTP forks, transcriptions.

A feature taps a call's media hub (see :mod:`callstream.media.hub`) and lives as long
as the call or until it is stopped. Two seams connect features to Call Control:

* :class:`Feature` — one running stream/fork/transcription, kept in
  ``Call.features`` under a key of its own choosing (``"stream:<id>"``...). When the
  leg ends, :meth:`CallControl.leg_ended` calls :meth:`Feature.detach` on each and
  commits the webhooks they return (``streaming.stopped``, ``call.fork.stopped``...)
  *before* ``call.hangup``, in the same transaction.
* :class:`CallHooks` — a feature manager's reaction to a call's life: ``before_dial``
  (``stream_establish_before_call_originate``) and ``answered`` (start what ``dial``
  or ``answer`` asked for: ``stream_url``, ``transcription``...). The request is
  ``call.setup``, a typed :class:`~callstream.calls.requests.Dial` or
  :class:`~callstream.calls.requests.Answer`.

Managers reach a call's media through :meth:`CallControl.media`, which returns a
:class:`LegMedia` or raises the one error every feature answers (call ended, not
answered yet).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from callstream.calls.model import Call
    from callstream.media.hub import MediaHub

#: A webhook a feature wants sent: (event_type, payload fields beyond the call's own).
FeatureEvent = tuple[str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class LegMedia:
    """Where one call leg's audio is, for taps.

    ``hub.open_tap(leg, "inbound")`` gives what the remote party sends,
    ``"outbound"`` what we send it; ``hub.add_source(leg, ...)`` plays audio to it;
    ``hub.add_packet_callback(leg, ...)`` sees its RTP packets byte for byte. Frames
    are PCM s16le mono at ``sample_rate`` (the codec's audio rate).
    """

    hub: MediaHub
    leg: str
    codec: str
    sample_rate: int
    payload_type: int


class Feature(Protocol):
    def detach(self, reason: str) -> list[FeatureEvent]:
        """The call ended (``reason``: "hangup"): let go of the media now, without
        waiting on I/O (finish sockets in a task), and return the stop webhooks."""
        ...


class CallHooks(Protocol):
    async def before_dial(self, call: Call) -> None:
        """Runs after call.initiated is stored and before the INVITE goes out."""

    async def answered(self, call: Call) -> None:
        """Runs once call.answered is stored (incoming or outgoing)."""


@runtime_checkable
class DtmfListener(Protocol):
    """A feature that wants the call's DTMF digits (a stream's ``dtmf`` frames)."""

    def on_dtmf(self, digit: str, now: float) -> None: ...


def notify_dtmf(call: Call, digit: str, now: float) -> None:
    """Hand a digit to every feature of the call that listens for them."""
    for feature in list(call.features.values()):
        if isinstance(feature, DtmfListener):
            feature.on_dtmf(digit, now)
