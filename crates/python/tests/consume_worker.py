"""A consumer process for test_consume.py: acks every event, logging its event id first."""

import sys

import evstream

url, log_path, name = sys.argv[1:4]
consumer = evstream.Consumer(url, stream="events", group="research", consumer=name,
                             batch_size=10, min_idle_ms=500)
try:
    with open(log_path, "a", buffering=1) as log:
        for ev in consumer.events(stop_when_idle=None):
            log.write(ev.event_id + "\n")
            ev.ack()
except KeyboardInterrupt:
    print("interrupted", consumer.stats()["processed"], flush=True)
