"""Consuming from Python: the Rust consumer's guarantees behind a Python iterator."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

import evstream

SCHEMAS = pathlib.Path(__file__).resolve().parents[3] / "schemas"
WORKER = pathlib.Path(__file__).with_name("consume_worker.py")


def publish(url, n, stream="events"):
    pub = evstream.Publisher(url, stream=stream)
    for i in range(n):
        pub.publish("OrderCreated", {"orderId": str(i), "symbol": "AAPL", "quantity": i},
                    correlation_id=f"o{i}")
    assert pub.close(timeout=10)["shipped"] == n


def wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_events_come_with_their_envelope_and_are_acknowledged(redis_url, r):
    publish(redis_url, 50)
    c = evstream.Consumer(redis_url, stream="events", group="research", consumer="c1")
    seen = []
    for ev in c.events(stop_when_idle=2.0):
        seen.append((ev.sequence, ev.correlation_id, ev.event_type, ev.version, ev.data,
                     ev.deliveries))
        ev.ack()
        with pytest.raises(ValueError, match="verdict"):
            ev.ack()
    assert seen == [(i + 1, f"o{i}", "OrderCreated", 1,
                     {"orderId": str(i), "symbol": "AAPL", "quantity": i}, 1)
                    for i in range(50)]
    report = c.close()
    assert report["processed"] == 50
    assert r.xpending("events", "research")["pending"] == 0
    assert r.hget("events:consume:research", "processed") == b"50"
    with pytest.raises(evstream.Closed):
        next(c.events())


def test_v1_orders_are_migrated_with_the_registry(redis_url):
    pub = evstream.Publisher(redis_url, stream="events")
    pub.publish("OrderCreated", {"orderId": "1", "symbol": "AAPL"}, correlation_id="o1",
                version="v1")
    pub.on_order_created(order_id="2", symbol="MSFT", quantity=10, price=1.5, side="BUY",
                         correlation_id="o2")
    pub.close(timeout=10)
    c = evstream.Consumer(redis_url, stream="events", group="g", consumer="c1",
                          schemas=str(SCHEMAS))
    got = []
    for ev in c.events(stop_when_idle=2.0):
        got.append((ev.version, ev.data))
        ev.ack()
    assert got == [
        (2, {"orderId": "1", "symbol": "AAPL", "quantity": 0}),
        (2, {"orderId": "2", "symbol": "MSFT", "quantity": 10.0, "price": 1.5, "side": "BUY"}),
    ]


def test_a_schema_directory_that_does_not_exist_is_a_schema_error(redis_url):
    with pytest.raises(evstream.SchemaError, match="no-such-dir"):
        evstream.Consumer(redis_url, group="g", schemas="/no-such-dir")
    with pytest.raises(evstream.ConfigError, match="max_deliveries"):
        evstream.Consumer(redis_url, group="g", max_deliveries=0)


def test_a_poison_entry_reaches_the_dead_letters(redis_url, r):
    publish(redis_url, 3)
    c = evstream.Consumer(redis_url, stream="events", group="g", consumer="c1",
                          max_deliveries=3, min_idle_ms=200)
    deliveries = []
    for ev in c.events(stop_when_idle=3.0):
        if ev.correlation_id == "o1":
            deliveries.append(ev.deliveries)
            ev.fail("price feed says no")
        else:
            ev.ack()
    report = c.close()
    assert deliveries == [1, 2, 3]
    assert report["processed"] == 2
    assert report["dead_lettered"] == 1
    (_, dead), = r.xrange("events:dlq")
    assert dead[b"correlation_id"] == b"o1"
    assert dead[b"dlq_stage"] == b"consume"
    assert b"price feed says no" in dead[b"dlq_error"]
    assert dead[b"dlq_deliveries"] == b"3"
    assert r.xpending("events", "g")["pending"] == 0


def test_a_killed_consumer_s_entries_are_finished_by_another_each_acknowledged_once(
        redis_url, r, tmp_path):
    n = 3000
    publish(redis_url, n)
    log = tmp_path / "c1.log"
    worker = subprocess.Popen([sys.executable, str(WORKER), redis_url, str(log), "c1"])
    try:
        wait_for(lambda: log.exists() and len(log.read_text().split()) >= 500)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    handled_by_c1 = set(log.read_text().split())
    assert 500 <= len(handled_by_c1) < n
    # c1 held entries it never committed: pending, owned by a dead consumer.
    assert r.xpending("events", "research")["pending"] > 0

    c2 = evstream.Consumer(redis_url, stream="events", group="research", consumer="c2",
                           min_idle_ms=500)
    handled_by_c2 = []
    for ev in c2.events(stop_when_idle=3.0):
        handled_by_c2.append(ev.event_id)
        ev.ack()
    report = c2.close()
    assert report["claimed"] > 0
    assert len(handled_by_c2) == len(set(handled_by_c2))
    # Every event handled; those c1 handled but never committed were handled again by c2.
    all_ids = {fields[b"event_id"].decode() for _, fields in r.xrange("events")}
    assert handled_by_c1 | set(handled_by_c2) == all_ids
    # …and acknowledged exactly once: the group's commit counted each event once.
    assert r.xpending("events", "research")["pending"] == 0
    assert int(r.hget("events:consume:research", "processed")) == n
    assert int(r.hget("events:consume:research", "duplicates_skipped") or 0) == 0


def test_ctrl_c_stops_the_consumer_cleanly_committing_what_was_acknowledged(redis_url, r,
                                                                           tmp_path):
    publish(redis_url, 200)
    log = tmp_path / "c1.log"
    worker = subprocess.Popen([sys.executable, str(WORKER), redis_url, str(log), "c1"],
                              stdout=subprocess.PIPE, text=True)
    wait_for(lambda: log.exists() and len(log.read_text().split()) == 200)
    time.sleep(0.5)
    worker.send_signal(signal.SIGINT)
    out, _ = worker.communicate(timeout=10)
    assert worker.returncode == 0
    assert out.split() == ["interrupted", "200"]
    assert r.xpending("events", "research")["pending"] == 0
    assert r.hget("events:consume:research", "processed") == b"200"


def test_an_event_left_without_a_verdict_is_failed_and_comes_back(redis_url, r):
    publish(redis_url, 2)
    c = evstream.Consumer(redis_url, stream="events", group="g", consumer="c1",
                          min_idle_ms=200)
    seen = []
    for ev in c.events(stop_when_idle=2.0):
        seen.append((ev.correlation_id, ev.deliveries))
        if (ev.correlation_id, ev.deliveries) != ("o0", 1):
            ev.ack()  # the first delivery of o0 gets no verdict
    report = c.close()
    assert seen == [("o0", 1), ("o1", 1), ("o0", 2)]
    assert report["processed"] == 2
    assert report["failed_attempts"] == 1
    assert r.xpending("events", "g")["pending"] == 0
