//! The capture timestamp: a cycle counter read in `publish`, turned into wall-clock
//! nanoseconds when the event is drained.
//!
//! Reading the wall clock (`clock_gettime`) costs tens of nanoseconds on a virtual machine,
//! a large part of a `publish` call; reading the CPU's counter costs a few (`quanta` reads the
//! TSC where it is invariant, and falls back to the monotonic clock elsewhere). The drain
//! reads both clocks once per batch, and each event's wall-clock time is that anchor minus
//! the ticks between the event and the anchor. The error is the counter's calibration error
//! over the time the event spent in the ring (parts per million of microseconds), not its
//! drift since start, and a wall clock stepped by NTP is followed at the next batch.

use super::wall_clock_ns;

/// The clock of one publisher and its receiver.
#[derive(Debug, Clone)]
pub(crate) struct Clock {
    counter: quanta::Clock,
}

impl Clock {
    /// Calibrates the counter against the monotonic clock, once per process.
    pub(crate) fn new() -> Self {
        Self {
            counter: quanta::Clock::new(),
        }
    }

    /// Now, in the counter's ticks: what `publish` stamps.
    #[inline(always)]
    pub(crate) fn ticks(&self) -> u64 {
        self.counter.raw()
    }

    /// Both clocks now, read after the events to convert were published.
    pub(crate) fn anchor(&self) -> Anchor {
        let ticks = self.counter.raw();
        Anchor {
            ticks,
            wall_ns: wall_clock_ns(),
        }
    }

    /// The wall-clock time of `ticks`, an instant before `anchor`.
    #[inline]
    pub(crate) fn wall_ns(&self, anchor: Anchor, ticks: u64) -> u64 {
        // An event stamped on another core may read a few ticks past the anchor: it gets the
        // anchor's time (`delta_as_nanos` is 0 then).
        anchor
            .wall_ns
            .saturating_sub(self.counter.delta_as_nanos(ticks, anchor.ticks))
    }
}

/// The two clocks read together.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Anchor {
    ticks: u64,
    wall_ns: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_convert_to_the_wall_clock_time_they_were_read_at() {
        let clock = Clock::new();
        let before = wall_clock_ns();
        let ticks = clock.ticks();
        let after = wall_clock_ns();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let converted = clock.wall_ns(clock.anchor(), ticks);
        // Within the read window, give or take the calibration error over 20 ms (< 0.1 ms).
        assert!(
            converted + 100_000 >= before && converted <= after + 100_000,
            "{before} <= {converted} <= {after}"
        );
        let anchor = clock.anchor();
        assert!(clock.wall_ns(anchor, clock.ticks()) <= wall_clock_ns());
    }
}
