"""Type stubs of the compiled module (src/*.rs)."""

from os import PathLike
from typing import Any, Literal, TypedDict

class ShutdownReport(TypedDict):
    shipped: int
    dead_lettered: int
    journaled: int
    undelivered: int
    panicked: bool

class ConsumeReport(TypedDict):
    read: int
    processed: int
    duplicates_skipped: int
    skipped: int
    unvalidated: int
    dead_lettered: int
    failed_attempts: int
    claimed: int
    deleted: int
    redis_errors: int
    connected: bool
    last_error: str | None

class EvstreamError(Exception): ...
class RingFull(EvstreamError): ...
class TooLarge(EvstreamError): ...
class InvalidEvent(EvstreamError): ...
class Closed(EvstreamError): ...
class ConfigError(EvstreamError): ...
class SchemaError(EvstreamError): ...
class ConsumerError(EvstreamError): ...

class Publisher:
    def __init__(
        self,
        url: str | None = None,
        *,
        stream: str | None = None,
        config: str | PathLike[str] | None = None,
        producer_name: str | None = None,
        journal_dir: str | PathLike[str] | None = None,
        ring_capacity: int | None = None,
        max_event_bytes: int | None = None,
        when_full: Literal["refuse", "wait"] | None = None,
    ) -> None: ...
    @property
    def producer_id(self) -> str: ...
    def publish(
        self,
        event_type: str,
        data: Any,
        correlation_id: str = "",
        version: int | str = 1,
    ) -> None: ...
    def on_order_created(
        self,
        *,
        order_id: str,
        symbol: str,
        quantity: float,
        price: float,
        side: Literal["BUY", "SELL", "buy", "sell"],
        correlation_id: str = "",
    ) -> None: ...
    def close(self, timeout: float | None = None) -> ShutdownReport: ...
    def __enter__(self) -> Publisher: ...
    def __exit__(self, *exc: object) -> None: ...

class Event:
    @property
    def stream_id(self) -> str: ...
    @property
    def event_id(self) -> str: ...
    @property
    def event_type(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def correlation_id(self) -> str: ...
    @property
    def timestamp_ns(self) -> int: ...
    @property
    def producer_id(self) -> str: ...
    @property
    def sequence(self) -> int: ...
    @property
    def deliveries(self) -> int: ...
    @property
    def raw_data(self) -> str: ...
    @property
    def data(self) -> Any: ...
    def ack(self) -> None: ...
    def fail(self, reason: str = "failed by the Python handler") -> None: ...

class Consumer:
    def __init__(
        self,
        url: str | None = None,
        *,
        stream: str | None = None,
        group: str | None = None,
        consumer: str | None = None,
        schemas: str | None = None,
        config: str | PathLike[str] | None = None,
        max_deliveries: int | None = None,
        min_idle_ms: int | None = None,
        batch_size: int | None = None,
        block_ms: int | None = None,
        start_id: str | None = None,
    ) -> None: ...
    def _next_event(self, idle: float | None = None) -> Event | None: ...
    def stats(self) -> ConsumeReport: ...
    def close(self) -> ConsumeReport: ...
