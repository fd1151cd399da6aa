"""evstream from Python: the Rust publisher, shipper and consumer (see docs/python.md)."""

from __future__ import annotations

from collections.abc import Iterator

from . import _evstream
from ._evstream import (
    Closed,
    ConfigError,
    ConsumerError,
    Event,
    EvstreamError,
    InvalidEvent,
    Publisher,
    RingFull,
    SchemaError,
    TooLarge,
)

__all__ = [
    "Closed",
    "ConfigError",
    "Consumer",
    "ConsumerError",
    "Event",
    "EvstreamError",
    "InvalidEvent",
    "Publisher",
    "RingFull",
    "SchemaError",
    "TooLarge",
]


class Consumer(_evstream.Consumer):
    """One member of a consumer group, run by the Rust consumer on a thread of its own."""

    def events(self, stop_when_idle: float | None = None) -> Iterator[Event]:
        """Yields events until none came for `stop_when_idle` seconds (None: forever).

        Give each event a verdict, `ev.ack()` or `ev.fail(reason)`, before asking for the
        next; one left without is failed. Leaving the loop (break, an exception, Ctrl-C)
        closes the consumer: what was acknowledged is committed, the rest stays pending.
        """
        try:
            while True:
                event = self._next_event(stop_when_idle)
                if event is None:
                    return
                yield event
        finally:
            self.close()

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
