#!/usr/bin/env python3
"""Reads an evstream stream and its dead-letter stream with redis-py, using nothing but the
field names documented in docs/envelope.md, and checks the contract.

Usage: read_stream.py REDIS_URL STREAM
Prints a JSON summary; exits 1 (listing the problems) if any entry breaks the contract.
"""
import json
import sys
import uuid

import redis

ENVELOPE = ["event_id", "event_type", "version", "correlation_id", "timestamp_ns",
            "producer_id", "sequence", "data"]
DEAD_LETTER = ENVELOPE + ["dlq_reason", "dlq_stage", "dlq_error", "dlq_at_ns"]


def read_all(client, key):
    entries, start = [], "-"
    while True:
        page = client.xrange(key, min=start, max="+", count=1000)
        if not page:
            return entries
        entries.extend(page)
        start = "(" + page[-1][0].decode()


def check_envelope(fields, problems, where):
    try:
        event_id = uuid.UUID(fields[b"event_id"].decode())
        if event_id.version != 7:
            problems.append(f"{where}: event_id is not a UUIDv7")
        if not fields[b"version"].decode().startswith("v"):
            problems.append(f"{where}: version is not v<N>")
        ts = int(fields[b"timestamp_ns"])
        if not 1_600_000_000_000_000_000 < ts < 4_000_000_000_000_000_000:
            problems.append(f"{where}: timestamp_ns {ts} is not wall-clock nanoseconds")
        return fields[b"producer_id"].decode(), int(fields[b"sequence"])
    except (KeyError, ValueError) as error:
        problems.append(f"{where}: {error!r}")
        return None, None


def main():
    url, stream = sys.argv[1], sys.argv[2]
    client = redis.Redis.from_url(url)
    problems, sequences = [], {}
    entries = read_all(client, stream)
    for entry_id, fields in entries:
        where = f"{stream} {entry_id.decode()}"
        if b"replay_for_group" in fields:
            # Put back from the dead letters for one group: the original entry's numbers.
            continue
        if sorted(k.decode() for k in fields) != sorted(ENVELOPE):
            problems.append(f"{where}: fields {sorted(fields)} are not the envelope")
            continue
        try:
            json.loads(fields[b"data"])
        except ValueError:
            problems.append(f"{where}: data is not JSON")
        producer, sequence = check_envelope(fields, problems, where)
        sequences.setdefault(producer, []).append(sequence)

    letters = read_all(client, stream + ":dlq")
    reasons = {}
    for entry_id, fields in letters:
        where = f"{stream}:dlq {entry_id.decode()}"
        if sorted(k.decode() for k in fields) != sorted(DEAD_LETTER):
            problems.append(f"{where}: fields {sorted(fields)} are not a ship-side dead letter")
            continue
        if fields[b"dlq_stage"] != b"ship":
            problems.append(f"{where}: dlq_stage is not ship")
        int(fields[b"dlq_at_ns"])
        reasons[fields[b"dlq_reason"].decode()] = reasons.get(fields[b"dlq_reason"].decode(), 0) + 1
        producer, sequence = check_envelope(fields, problems, where)
        sequences.setdefault(producer, []).append(sequence)

    for producer, seqs in sequences.items():
        ordered = sorted(seqs)
        if ordered != list(range(ordered[0], ordered[0] + len(ordered))):
            problems.append(f"producer {producer}: sequences are not consecutive across stream and DLQ")

    print(json.dumps({"entries": len(entries), "dead_letters": len(letters),
                      "reasons": reasons, "producers": len(sequences), "problems": problems}))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
