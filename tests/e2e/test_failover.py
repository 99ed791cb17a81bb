"""Node A killed with SIGKILL under live calls, behind Kamailio, on PostgreSQL + Redis,
while the webhook receiver stalls so that A dies holding webhook events in flight.

The survivor B releases A's outbox leases as soon as A's liveness expires (not after the
60 s outbox lease): every webhook is delivered, each call's in order, well within that
lease; each of A's calls ends with exactly one ``call.hangup``
(``unspecified``/``unknown``); B's calls get none and stay up, and the audio each
receives (forked to the test) is every packet its caller sent, in order, byte-identical,
from before the kill until after everything above; the front takes A out and sends new
calls to B. The figures are printed; bench/failover.py measures the same
at 100 calls (docs/cluster.md, "Failover").
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from tests.e2e.failover import OUTBOX_LEASE_SECS, SURVIVOR, VICTIM, failover_rig, kill_victim
from tests.store.postgres import PostgresServer

pytestmark = pytest.mark.slow

#: Spread by the front's Call-ID hash: one node gets none 1 time in 2,048.
CALLS = 12
AFTER_DOWN_CALLS = 4
#: Shorter than the defaults (6 s, 2 s): A's liveness expires, and its calls end, sooner.
LEASE_SECS, SCAN_SECS = 3.0, 0.5


def test_a_killed_nodes_calls_end_once_and_its_webhooks_go_out_at_once(
    postgres: PostgresServer, redis_url: str, tmp_path: Path
) -> None:
    with failover_rig(tmp_path, postgres, redis_url, LEASE_SECS, SCAN_SECS) as rig:
        # Everything within the outbox lease, or the release did not happen.
        report = kill_victim(rig, CALLS, rate=10, after_down_calls=AFTER_DOWN_CALLS,
                             timeout=OUTBOX_LEASE_SECS - 15)
    print(f"\nfailover: {asdict(report)}")
    assert report.per_node[VICTIM] and report.per_node[SURVIVOR], report.per_node
    # A died holding events in flight, and B released exactly those.
    assert report.victim_leased_at_kill > 0
    assert report.webhooks_released == report.victim_leased_at_kill
    # Every webhook delivered once (the receiver never took the held ones), in order.
    assert report.order_violations == []
    assert report.duplicates == 0
    # One call.hangup for each of A's calls; none for B's, which are still up.
    assert set(report.victim_hangups.values()) == {1}
    assert report.hangup_causes == [("unspecified", "unknown")]
    assert report.survivor_hangups == 0
    assert report.survivor_alive == report.per_node[SURVIVOR]
    # B's calls' audio: no frame lost, reordered or changed, before, during and after.
    assert report.survivor_audio_problems == []
    assert report.survivor_audio_span_s[0] < 0 < report.all_delivered_s
    assert report.survivor_audio_span_s[1] > report.all_delivered_s
    # The front took A out; new calls all went to B.
    assert report.front_down_s > 0
    assert report.after_down_calls == {SURVIVOR: AFTER_DOWN_CALLS}
    assert report.after_down_failed == 0
