"""What a message to another process costs on this machine: the price of every hop.

The media floor (``bench/hot_path.py --callstream floor``) and every hop between
``serve --workers`` processes (a SIP datagram relayed, a REST request forwarded, a
webhook wake-up) are system calls that hand bytes to another process, and often wake
it. Their cost is the machine's, not callstream's: a virtual machine pays for a wake-up
with an inter-processor interrupt through its hypervisor. This measures it directly,
with no callstream code: CPU per message (user + system: the sender's ``CLOCK_THREAD_CPUTIME_ID``
around each send, less the clock's own cost; the receiver's ``getrusage`` from its first
message to its last), for

* ``syscall`` — a system call that does nothing (``getppid``): the entry and exit alone;
* ``udp wake`` / ``unix wake`` — a loopback UDP or ``AF_UNIX`` datagram to a process
  blocked in ``recv``, one every millisecond, so each one wakes it;
* ``udp busy`` / ``unix busy`` — the same datagrams to a receiver that never sleeps
  (it polls with ``MSG_DONTWAIT``), so none wakes it: the difference is the wake-up.
  (The busy receiver's own figure is its spinning, not a cost.)

Usage::

    python bench/process_hop.py [--messages 3000] [--rounds 3] [--json out.json]

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import socket
import statistics
import tempfile
import time
from multiprocessing.synchronize import Event
from pathlib import Path

KINDS = ("syscall", "udp wake", "udp busy", "unix wake", "unix busy")
#: Time between two messages: long enough that a blocked receiver is asleep again.
GAP_S = 0.001


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _clock_cost() -> float:
    """Seconds a pair of ``time.thread_time()`` reads adds to what they bracket."""
    count, start = 20000, time.thread_time()
    for _ in range(count):
        time.thread_time()
        time.thread_time()
    return (time.thread_time() - start) / count


def _receive(family: int, address: object, count: int, busy: bool, ready: Event,
             result: multiprocessing.Queue[float]) -> None:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind(address)
    ready.set()
    got, start = 0, None
    while got < count:
        if busy:
            try:
                sock.recv(64, socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
        else:
            sock.recv(64)
        if start is None:
            start = _cpu()  # from the first message on: not the start-up
        got += 1
    result.put(_cpu() - (start or 0.0))
    sock.close()


def measure(kind: str, messages: int) -> dict[str, float]:
    """Sender and receiver CPU µs per message for one kind."""
    if kind == "syscall":
        start = _cpu()
        for _ in range(messages * 100):
            os.getppid()
        return {"sender_us": 1e6 * (_cpu() - start) / (messages * 100), "receiver_us": 0.0}
    transport, mode = kind.split()
    with tempfile.TemporaryDirectory() as tmp:
        if transport == "udp":
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            probe.bind(("127.0.0.1", 0))
            address: object = probe.getsockname()
            probe.close()
            family = socket.AF_INET
        else:
            address, family = str(Path(tmp) / "hop.sock"), socket.AF_UNIX
        ready = multiprocessing.Event()
        result: multiprocessing.Queue[float] = multiprocessing.Queue()
        receiver = multiprocessing.Process(
            target=_receive, args=(family, address, messages, mode == "busy", ready, result))
        receiver.start()
        ready.wait(10)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        payload = b"x" * 32
        sock.sendto(payload, address)  # the first: the receiver starts its clock on it
        clock = _clock_cost()
        spent, deadline = 0.0, time.monotonic()
        for _ in range(messages - 1):
            deadline += GAP_S
            while time.monotonic() < deadline:  # spin: wait without a system call
                continue
            before = time.thread_time()
            sock.sendto(payload, address)
            spent += time.thread_time() - before - clock
        received = result.get(timeout=30)
        receiver.join(10)
        sock.close()
    return {"sender_us": 1e6 * spent / (messages - 1),
            "receiver_us": 1e6 * received / (messages - 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS}
    for _ in range(args.rounds):
        for kind in KINDS:
            runs[kind].append(measure(kind, args.messages))
    print(f"{args.messages} messages, {args.rounds} rounds, medians; CPU µs per message")
    print(f"{'kind':<10} {'sender':>8} {'receiver':>9}")
    medians = {}
    for kind in KINDS:
        sender = statistics.median(r["sender_us"] for r in runs[kind])
        receiver = statistics.median(r["receiver_us"] for r in runs[kind])
        medians[kind] = {"sender_us": round(sender, 2), "receiver_us": round(receiver, 2)}
        print(f"{kind:<10} {sender:8.2f} {receiver:9.2f}")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "medians": medians}, indent=2))


if __name__ == "__main__":
    main()
