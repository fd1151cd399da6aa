//! Typed events of the trading engine, as the original design names them.
//!
//! Fields borrow (`&str`), so building an event on the engine's hot path allocates nothing.
//! The JSON payload uses the design's camelCase names (`orderId`, `fillId`, …); the
//! correlation id travels in the envelope, not in `data`.

use serde::Serialize;

/// An event with a fixed type name and a correlation id, publishable with
/// [`Publisher::publish_event`](super::Publisher::publish_event).
pub trait Event: Serialize {
    /// The envelope's `event_type`.
    const EVENT_TYPE: &'static str;

    /// The schema version of this payload (the envelope's `version`, `v<N>`). Default 1.
    const VERSION: u32 = 1;

    /// The envelope's `correlation_id`: groups the events of one order's life.
    fn correlation_id(&self) -> &str;
}

/// Order side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Side {
    /// Buy.
    Buy,
    /// Sell.
    Sell,
}

/// An order was created (`OrderCreated`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderCreated<'a> {
    /// Correlation id of the order's life (envelope field, not in `data`).
    #[serde(skip)]
    pub correlation_id: &'a str,
    /// Order id.
    pub order_id: &'a str,
    /// Instrument symbol.
    pub symbol: &'a str,
    /// Ordered quantity.
    pub quantity: f64,
    /// Limit price.
    pub price: f64,
    /// Buy or sell.
    pub side: Side,
}

impl Event for OrderCreated<'_> {
    const EVENT_TYPE: &'static str = "OrderCreated";

    fn correlation_id(&self) -> &str {
        self.correlation_id
    }
}

/// An order was (partly) filled (`OrderFilled`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderFilled<'a> {
    /// Correlation id of the order's life (envelope field, not in `data`).
    #[serde(skip)]
    pub correlation_id: &'a str,
    /// Order id.
    pub order_id: &'a str,
    /// Fill id, unique per fill.
    pub fill_id: &'a str,
    /// Filled quantity.
    pub quantity: f64,
    /// Fill price.
    pub price: f64,
}

impl Event for OrderFilled<'_> {
    const EVENT_TYPE: &'static str = "OrderFilled";

    fn correlation_id(&self) -> &str {
        self.correlation_id
    }
}

/// A top-of-book market data update (`MarketDataUpdate`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MarketDataUpdate<'a> {
    /// Correlation id, e.g. of the order this update triggers, or empty.
    #[serde(skip)]
    pub correlation_id: &'a str,
    /// Instrument symbol.
    pub symbol: &'a str,
    /// Best bid.
    pub bid: f64,
    /// Best ask.
    pub ask: f64,
    /// Last trade price.
    pub last: f64,
    /// Quantity at the best bid.
    pub bid_size: f64,
    /// Quantity at the best ask.
    pub ask_size: f64,
    /// Exchange time of the update, nanoseconds since the Unix epoch.
    pub exchange_ts_ns: u64,
}

impl Event for MarketDataUpdate<'_> {
    const EVENT_TYPE: &'static str = "MarketDataUpdate";

    fn correlation_id(&self) -> &str {
        self.correlation_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_use_the_design_field_names_and_omit_the_correlation_id() {
        let order = OrderCreated {
            correlation_id: "c-1",
            order_id: "o-1",
            symbol: "AAPL",
            quantity: 100.0,
            price: 189.5,
            side: Side::Buy,
        };
        assert_eq!(
            serde_json::to_string(&order).unwrap(),
            r#"{"orderId":"o-1","symbol":"AAPL","quantity":100.0,"price":189.5,"side":"BUY"}"#
        );
        let fill = OrderFilled {
            correlation_id: "c-1",
            order_id: "o-1",
            fill_id: "f-1",
            quantity: 40.0,
            price: 189.4,
        };
        assert_eq!(
            serde_json::to_string(&fill).unwrap(),
            r#"{"orderId":"o-1","fillId":"f-1","quantity":40.0,"price":189.4}"#
        );
    }
}
