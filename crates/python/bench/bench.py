"""Python's cost of evstream, next to plain redis-py doing the same work.

    python crates/python/bench/bench.py [N]

Starts a private redis-server (never the shared one). Per call (p50, p99, ns):
`Publisher.publish(dict)`, `Publisher.on_order_created`, and redis-py's `pipeline.xadd`
sent every 100 commands (the call that sends pays the round trip: it shows in p99).
Consumer throughput (events/s): `Consumer.events()` with `ack()` per event, next to a
redis-py `XREADGROUP COUNT 100` + `XACK` loop decoding each event's JSON.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import redis

import evstream

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000


def percentiles(samples):
    samples.sort()
    return samples[len(samples) // 2], samples[len(samples) * 99 // 100]


def timed(calls, pause_every=None):
    """Per-call durations; with `pause_every`, sleeps 0.2 s after that many calls, so that
    the shipper drains the ring and the figures are the calls', not a full ring's."""
    clock = time.perf_counter_ns
    samples = []
    for i, (call, args, kwargs) in enumerate(calls, 1):
        start = clock()
        call(*args, **kwargs)
        samples.append(clock() - start)
        if pause_every and i % pause_every == 0:
            time.sleep(0.2)
    return percentiles(samples)


def main():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tempfile.mkdtemp()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no", "--dir", workdir],
                              stdout=subprocess.DEVNULL)
    try:
        url = f"redis://127.0.0.1:{port}"
        r = redis.Redis(port=port)
        while True:
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        run(url, r)
    finally:
        server.kill()


def run(url, r):
    rows = []
    pub = evstream.Publisher(url, stream="bench")
    data = [{"orderId": str(i), "symbol": "AAPL", "quantity": 100, "price": 187.25,
             "side": "BUY"} for i in range(N)]
    p = timed(((pub.publish, ("OrderCreated", d), {"correlation_id": d["orderId"]})
               for d in data), pause_every=10_000)
    rows.append(("evstream publish(dict)", *p))
    p = timed(((pub.on_order_created, (), dict(order_id=d["orderId"], symbol="AAPL",
                                               quantity=100, price=187.25, side="BUY",
                                               correlation_id=d["orderId"]))
               for d in data), pause_every=10_000)
    rows.append(("evstream on_order_created", *p))
    report = pub.close(timeout=60)
    assert report["shipped"] == 2 * N, report

    pipe = r.pipeline(transaction=False)
    counter = [0]

    def xadd(d):
        pipe.xadd("plain", {"event_type": "OrderCreated", "correlation_id": d["orderId"],
                            "data": json.dumps(d, separators=(",", ":"))})
        counter[0] += 1
        if counter[0] % 100 == 0:
            pipe.execute()

    p = timed(((xadd, (d,), {}) for d in data), pause_every=10_000)
    pipe.execute()
    rows.append(("redis-py pipelined XADD (100)", *p))
    print(f"{'per call, ns':32} {'p50':>8} {'p99':>8}")
    for name, p50, p99 in rows:
        print(f"{name:32} {p50:>8} {p99:>8}")

    # Consumers: the N on_order_created events of "bench", then of "plain".
    c = evstream.Consumer(url, stream="bench", group="g", consumer="c1")
    start = time.perf_counter()
    count = 0
    for ev in c.events(stop_when_idle=1.0):
        ev.data
        ev.ack()
        count += 1
        if count == 2 * N:
            break
    elapsed = time.perf_counter() - start
    c.close()
    assert count == 2 * N, count
    evstream_rate = count / elapsed

    r.xgroup_create("plain", "g", id="0")
    start = time.perf_counter()
    count = 0
    while True:
        reply = r.xreadgroup("g", "c1", {"plain": ">"}, count=100, block=100)
        if not reply:
            break
        entries = reply[0][1]
        for _, fields in entries:
            json.loads(fields[b"data"])
        r.xack("plain", "g", *[entry_id for entry_id, _ in entries])
        count += len(entries)
    elapsed = time.perf_counter() - start - 0.1  # the final empty BLOCK 100
    assert count == N, count
    print(f"\n{'consumer':32} {'events/s':>8}")
    print(f"{'evstream Consumer.events + ack':32} {evstream_rate:>8.0f}")
    print(f"{'redis-py XREADGROUP + XACK':32} {count / elapsed:>8.0f}")


if __name__ == "__main__":
    main()
