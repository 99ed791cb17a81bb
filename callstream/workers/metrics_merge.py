"""``/metrics`` of a node with workers: every worker's exposition, summed sample by sample.

Counters and gauges of the same name and labels add up (calls, packets, frames, bytes,
histogram buckets and sums), but for ``*_info`` samples (``callstream_build_info``: 1 for
what runs), which say what the node is, once; the first ``# HELP``/``# TYPE`` line of
each family is kept and samples keep the order they first appear in.
"""

from __future__ import annotations

from collections.abc import Iterable


def merge_expositions(texts: Iterable[str]) -> str:
    comments: dict[str, None] = {}
    order: dict[str, list[str]] = {}  # family comment line -> its sample keys, in order
    values: dict[str, float] = {}
    family = ""
    for text in texts:
        for line in text.splitlines():
            if not line:
                continue
            if line.startswith("#"):
                comments.setdefault(line, None)
                family = line
                order.setdefault(family, [])
                continue
            key, _, value = line.rpartition(" ")
            try:
                number = float(value)
            except ValueError:
                continue
            if key not in values:
                order.setdefault(family, []).append(key)
                values[key] = 0.0
            if key.partition("{")[0].endswith("_info"):
                values[key] = max(values[key], number)
            else:
                values[key] += number
    out: list[str] = []
    for comment in comments:
        out.append(comment)
        out.extend(f"{key} {_number(values[key])}" for key in order.get(comment, ()))
    out.extend(f"{key} {_number(values[key])}" for key in order.get("", ()))
    return "\n".join(out) + "\n"


def _number(value: float) -> str:
    return repr(value)
