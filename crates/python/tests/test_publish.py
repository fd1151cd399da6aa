"""Publishing from Python: what reaches the stream, read back with redis-py."""

from __future__ import annotations

import json
import time

import pytest

import evstream

COMPACT = dict(separators=(",", ":"), ensure_ascii=False)


def retrying(call, *args, **kwargs):
    """Calls `call`, waiting while the ring is full: this machine may be busy, and a Python
    loop can outrun the shipper. A refused event takes no sequence number."""
    while True:
        try:
            return call(*args, **kwargs)
        except evstream.RingFull:
            time.sleep(0.001)


def test_100k_events_arrive_in_order_with_byte_identical_data(redis_url, r):
    n = 100_000
    pub = evstream.Publisher(redis_url, stream="events")
    sent = []
    for i in range(n):
        if i % 10 == 9:
            retrying(pub.on_order_created, order_id=str(i), symbol="MSFT", quantity=i, price=1.5,
                     side="SELL", correlation_id=f"o{i}")
            sent.append(("OrderCreated", "v1", f"o{i}", json.dumps(
                {"orderId": str(i), "symbol": "MSFT", "quantity": float(i), "price": 1.5,
                 "side": "SELL"}, **COMPACT)))
        else:
            data = {"orderId": str(i), "symbol": "AAPL", "qty": i, "note": "é ✓"}
            retrying(pub.publish, "OrderCreated", data, correlation_id=f"o{i}", version="v1")
            sent.append(("OrderCreated", "v1", f"o{i}", json.dumps(data, **COMPACT)))
    report = pub.close(timeout=30)
    assert report == {"shipped": n, "dead_lettered": 0, "journaled": 0, "undelivered": 0,
                      "panicked": False}

    entries = []
    last = "-"
    while True:
        batch = r.xrange("events", min=last, count=10_000)
        if last != "-":
            batch = batch[1:]
        if not batch:
            break
        entries.extend(batch)
        last = batch[-1][0]
    assert len(entries) == n
    for i, ((_, fields), (event_type, version, correlation_id, data)) in enumerate(
            zip(entries, sent)):
        assert int(fields[b"sequence"]) == i + 1
        assert fields[b"event_type"].decode() == event_type
        assert fields[b"version"].decode() == version
        assert fields[b"correlation_id"].decode() == correlation_id
        assert fields[b"data"] == data.encode(), i
        assert fields[b"producer_id"].decode() == pub.producer_id


def test_str_and_bytes_are_published_byte_for_byte_and_versions_are_kept(redis_url, r):
    with evstream.Publisher(redis_url, stream="raw") as pub:
        pub.publish("PriceTick", '{"b": 1,  "a": 2}', correlation_id="x", version=3)
        pub.publish("PriceTick", b'{"z":[1,2]}')
    (_, first), (_, second) = r.xrange("raw")
    assert first[b"data"] == b'{"b": 1,  "a": 2}'
    assert first[b"version"] == b"v3"
    assert second[b"data"] == b'{"z":[1,2]}'
    assert second[b"correlation_id"] == b""


def test_configuration_from_the_toml_file(redis_url, r, tmp_path):
    path = tmp_path / "evstream.toml"
    path.write_text(f'[redis]\nurl = "{redis_url}"\nstream = "from-file"\n')
    pub = evstream.Publisher(config=str(path))
    pub.publish("Ping", {"n": 1})
    assert pub.close(timeout=10)["shipped"] == 1
    assert r.xlen("from-file") == 1
    # Keyword arguments override the file.
    pub = evstream.Publisher(config=str(path), stream="overridden")
    pub.publish("Ping", {"n": 2})
    pub.close(timeout=10)
    assert r.xlen("overridden") == 1


def test_errors_are_typed_exceptions_with_the_rust_message(redis_url, tmp_path):
    with pytest.raises(evstream.ConfigError, match="ring.capacity"):
        evstream.Publisher(redis_url, ring_capacity=3)
    bad = tmp_path / "bad.toml"
    bad.write_text("[redis]\nurll = 1\n")
    with pytest.raises(evstream.ConfigError, match="unknown field"):
        evstream.Publisher(config=str(bad))
    with pytest.raises(evstream.ConfigError, match="when_full"):
        evstream.Publisher(redis_url, when_full="sometimes")

    pub = evstream.Publisher(redis_url, stream="errors", max_event_bytes=1024)
    with pytest.raises(evstream.InvalidEvent, match="event type"):
        pub.publish("not a type!", {})
    with pytest.raises(evstream.InvalidEvent, match="version"):
        pub.publish("Ping", {}, version=0)
    with pytest.raises(evstream.InvalidEvent, match="side"):
        pub.on_order_created(order_id="1", symbol="A", quantity=1, price=1, side="HOLD")
    with pytest.raises(evstream.TooLarge, match="1024"):
        pub.publish("Ping", {"blob": "x" * 2000})
    with pytest.raises(ValueError):  # NaN is not JSON
        pub.publish("Ping", {"price": float("nan")})
    assert issubclass(evstream.TooLarge, evstream.EvstreamError)
    pub.close(timeout=5)
    with pytest.raises(evstream.Closed):
        pub.publish("Ping", {})


def test_a_full_ring_raises_ring_full():
    # Nothing listens on port 1: the shipper cannot send, the small ring fills up.
    pub = evstream.Publisher("redis://127.0.0.1:1", stream="nowhere", ring_capacity=64)
    with pytest.raises(evstream.RingFull, match="full"):
        for i in range(100_000):
            pub.publish("Ping", {"i": i})
    assert 64 <= i < 100_000
    report = pub.close(timeout=0.2)
    assert report["shipped"] == 0
    assert report["undelivered"] >= 64


def test_threads_publish_through_one_publisher(redis_url, r):
    import threading

    pub = evstream.Publisher(redis_url, stream="threads")

    def work(t):
        for i in range(5_000):
            retrying(pub.publish, "Tick", {"t": t, "i": i}, correlation_id=f"t{t}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert pub.close(timeout=30)["shipped"] == 20_000
    entries = r.xrange("threads")
    assert [int(f[b"sequence"]) for _, f in entries] == list(range(1, 20_001))
    for t in range(4):  # each thread's events in its order
        mine = [json.loads(f[b"data"])["i"] for _, f in entries
                if f[b"correlation_id"] == f"t{t}".encode()]
        assert mine == list(range(5_000))
