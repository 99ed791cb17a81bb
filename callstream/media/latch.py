"""Whose RTP a leg accepts: the source policy ("strict RTP"), sans-I/O.

Theory of operation
-------------------
An RTP port is reachable by anyone who can send a UDP datagram to it. A leg
that followed any new source (as symmetric RTP once did after a second of
silence) hands its call's audio to whoever sprays packets at the port range
and lets them talk into the call ("RTP bleed", Asterisk CVE-2017-14099).
So a leg's source is learned once, when media starts, and then locked:

* The address the SDP named is trusted at once.
* Any other address (a peer behind NAT) must pass *probation* while no
  source is learned yet: :data:`PROBATION_PACKETS` consecutive in-sequence
  packets from one address. Packets on probation are dropped (40 ms of audio;
  Asterisk drops them too).
* Once learned, packets from anywhere else are dropped, however long the
  source stays silent (hold, DTX and listen-only legs are silent for long).
  Only the SDP's own address may take over from a source learned on
  probation: it is the negotiated one, and what goes to it goes to the peer.
* A new SDP address (re-INVITE, UPDATE) starts learning afresh (:meth:`reset`).

The modes (``CALLSTREAM_STRICT_RTP``) as a table: the :class:`Verdict` on a packet from
``addr`` (packets from the locked source itself are accepted before the policy is asked):

==========  ================  =========================  =================  =================
mode        nothing learned,  nothing learned,           learned,           learned,
            addr is SDP's     addr is another            addr is SDP's      addr is another
==========  ================  =========================  =================  =================
``learn``   LEARNED           PROBATION, until the       LEARNED            FOREIGN
                              PROBATION_PACKETS-th in a
                              row: LEARNED
``strict``  LEARNED           FOREIGN                    (it is the locked  FOREIGN
                                                         source)
``off``     LEARNED           LEARNED                    LEARNED if the     LEARNED if the
                                                         source was silent  source was silent
                                                         RELATCH_IDLE,      RELATCH_IDLE,
                                                         else FOREIGN       else FOREIGN
==========  ================  =========================  =================  =================
"""

from __future__ import annotations

import contextlib
import enum
import functools
import ipaddress

__all__ = [
    "PROBATION_PACKETS",
    "RELATCH_IDLE",
    "SourceLatch",
    "StrictRtp",
    "Verdict",
]

Address = tuple[str, int] | tuple[str, int, int, int]

PROBATION_PACKETS = 3  # consecutive in-sequence packets that teach an address not in the SDP
RELATCH_IDLE = 1.0  # mode "off" only: seconds of silence after which any source takes over


class StrictRtp(enum.StrEnum):
    """How a leg chooses whose RTP to accept (``CALLSTREAM_STRICT_RTP``)."""

    LEARN = "learn"
    """The SDP's address at once, else one learned on probation; then locked."""
    STRICT = "strict"
    """Only the SDP's address; no learning (peers behind NAT get no audio in)."""
    OFF = "off"
    """Follow any source after a second of silence: unsafe, for broken NATs only."""


class Verdict(enum.Enum):
    """What to do with a packet from a source other than the locked one."""

    LEARNED = "learned"
    """Accept it: its address is now the locked source."""
    PROBATION = "probation"
    """Drop it: the address is on probation, not yet learned."""
    FOREIGN = "foreign"
    """Drop it: the source is locked to another address."""


def _key(addr: Address) -> tuple[str, int]:
    # SDP and the socket may spell one IPv6 address differently; asyncio adds
    # flow info and scope to IPv6 addresses.
    return _host_key(addr[0]), addr[1]


@functools.lru_cache(maxsize=4096)
def _host_key(host: str) -> str:
    # Cached: asked for every packet until the source is learned, and peers are few.
    with contextlib.suppress(ValueError):  # a host name in the SDP: compared as written
        host = ipaddress.ip_address(host).compressed
    return host


class SourceLatch:
    """The source policy of one leg's RTP and RTCP.

    Args:
        mode: the policy.
        expected: the RTP address the SDP named, or None before there is one.
        expected_rtcp: the RTCP address the SDP named (default: RTP port + 1;
            with RTCP mux, the RTP address).
        rtcp_mux: RTP and RTCP share one port (RFC 5761).
    """

    __slots__ = (
        "_candidate",
        "_candidate_count",
        "_candidate_seq",
        "_expected",
        "_expected_rtcp",
        "mode",
        "source",
    )

    def __init__(
        self,
        mode: StrictRtp,
        expected: Address | None,
        expected_rtcp: Address | None = None,
        *,
        rtcp_mux: bool = False,
    ) -> None:
        self.mode = mode
        self.source: Address | None = None
        """The locked source: packets from exactly this address skip :meth:`check`."""
        self._expected: tuple[str, int] | None = None
        self._expected_rtcp: tuple[str, int] | None = None
        self._candidate: tuple[str, int] | None = None
        self._candidate_seq = 0
        self._candidate_count = 0
        self.reset(expected, expected_rtcp, rtcp_mux=rtcp_mux)

    def reset(
        self, expected: Address | None, expected_rtcp: Address | None = None, *,
        rtcp_mux: bool = False,
    ) -> None:
        """Forget the learned source: the SDP now names ``expected``."""
        self.source = None
        self._candidate = None
        self._candidate_count = 0
        self._expected = None if expected is None else _key(expected)
        if expected_rtcp is not None:
            self._expected_rtcp = _key(expected_rtcp)
        elif self._expected is None:
            self._expected_rtcp = None
        elif rtcp_mux:
            self._expected_rtcp = self._expected
        else:
            self._expected_rtcp = (self._expected[0], self._expected[1] + 1)

    def is_expected(self, addr: Address) -> bool:
        """Whether ``addr`` is the RTP address the SDP named."""
        return self._expected is not None and _key(addr) == self._expected

    def check(self, addr: Address, seq: int, silent_for: float) -> Verdict:
        """Judge an RTP packet from ``addr`` (not the locked source).

        Args:
            addr: where it came from.
            seq: its sequence number (probation wants them consecutive).
            silent_for: seconds since the last accepted packet (mode ``off``).
        """
        mode = self.mode
        if self.is_expected(addr) and (mode is not StrictRtp.OFF or self.source is None):
            return self._learn(addr)
        if mode is StrictRtp.STRICT:
            return Verdict.FOREIGN
        if mode is StrictRtp.OFF:
            if self.source is None or silent_for >= RELATCH_IDLE:
                return self._learn(addr)
            return Verdict.FOREIGN
        if self.source is not None:
            return Verdict.FOREIGN
        key = _key(addr)
        if key == self._candidate and seq == (self._candidate_seq + 1) & 0xFFFF:
            self._candidate_count += 1
        else:
            self._candidate = key
            self._candidate_count = 1
        self._candidate_seq = seq
        if self._candidate_count >= PROBATION_PACKETS:
            return self._learn(addr)
        return Verdict.PROBATION

    def _learn(self, addr: Address) -> Verdict:
        self.source = addr
        self._candidate = None
        self._candidate_count = 0
        return Verdict.LEARNED

    def accepts_rtcp(self, addr: Address) -> bool:
        """Whether RTCP from ``addr`` is the peer's: from the learned RTP host,
        or from the RTCP address the SDP named."""
        if self.mode is StrictRtp.OFF:
            return True
        key = _key(addr)
        source = self.source
        if source is not None and key[0] == _key(source)[0]:
            return True
        return key == self._expected_rtcp
