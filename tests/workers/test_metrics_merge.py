from __future__ import annotations

from callstream.workers.metrics_merge import merge_expositions

W0 = """# HELP pkts_total Packets.
# TYPE pkts_total counter
pkts_total{direction="rx"} 10.0
pkts_total{direction="tx"} 5.0
# HELP calls Live calls.
# TYPE calls gauge
calls 3.0
"""
W1 = """# HELP pkts_total Packets.
# TYPE pkts_total counter
pkts_total{direction="rx"} 1.0
pkts_total{direction="fork"} 2.0
# HELP calls Live calls.
# TYPE calls gauge
calls 4.0
garbage line
"""


def test_same_samples_add_up_and_families_stay_whole() -> None:
    assert merge_expositions([W0, W1]) == """# HELP pkts_total Packets.
# TYPE pkts_total counter
pkts_total{direction="rx"} 11.0
pkts_total{direction="tx"} 5.0
pkts_total{direction="fork"} 2.0
# HELP calls Live calls.
# TYPE calls gauge
calls 7.0
"""


def test_one_worker_is_unchanged_but_for_number_spelling() -> None:
    assert merge_expositions([W0]) == W0


def test_info_samples_say_what_runs_once() -> None:
    one = '# TYPE callstream_build_info gauge\ncallstream_build_info{media="pure"} 1.0\n'
    assert merge_expositions([one, one, one]) == one
