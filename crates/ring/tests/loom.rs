//! loom models of claim / commit / drain. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p evstream-ring --test loom --profile loom`.
#![cfg(loom)]

use evstream_ring::{channel, ClaimError, PublishError};
use loom::thread;

fn publish(producer: &evstream_ring::Producer<u32>, value: u32) -> Result<u64, PublishError<()>> {
    producer.try_publish(|slot| {
        *slot = value;
        Ok(())
    })
}

/// Drains until `count` events arrived, yielding to loom between attempts.
fn drain_until(consumer: &mut evstream_ring::Consumer<u32>, count: usize) -> Vec<u32> {
    let mut out = Vec::new();
    while out.len() < count {
        consumer.drain(8, |v| out.push(*v));
        if out.len() < count {
            thread::yield_now();
        }
    }
    out
}

#[test]
fn two_producers_one_consumer_exactly_once() {
    loom::model(|| {
        let (producer, mut consumer) = channel(2, || 0u32).unwrap();
        let p1 = producer.clone();
        let t1 = thread::spawn(move || publish(&p1, 1).unwrap());
        let p2 = producer.clone();
        let t2 = thread::spawn(move || publish(&p2, 2).unwrap());
        let mut got = drain_until(&mut consumer, 2);
        let pos1 = t1.join().unwrap();
        let pos2 = t2.join().unwrap();
        // Claim order is drain order.
        let expected = if pos1 < pos2 { vec![1, 2] } else { vec![2, 1] };
        assert_eq!(got, expected);
        got.sort();
        assert_eq!(got, vec![1, 2]);
        drop(producer);
    });
}

#[test]
fn wrap_around_while_draining_keeps_order() {
    loom::model(|| {
        let (producer, mut consumer) = channel(2, || 0u32).unwrap();
        let t = thread::spawn(move || {
            for value in 1..=3 {
                loop {
                    match publish(&producer, value) {
                        Ok(_) => break,
                        Err(PublishError::Full) => thread::yield_now(),
                        Err(other) => panic!("unexpected {other:?}"),
                    }
                }
            }
        });
        assert_eq!(drain_until(&mut consumer, 3), vec![1, 2, 3]);
        t.join().unwrap();
    });
}

#[test]
fn abandoned_claim_is_skipped_not_stalled() {
    loom::model(|| {
        let (producer, mut consumer) = channel(2, || 0u32).unwrap();
        let p1 = producer.clone();
        let t1 = thread::spawn(move || {
            let refused = p1.try_publish(|slot| {
                *slot = 9;
                Err(())
            });
            assert_eq!(refused, Err(PublishError::Rejected(())));
        });
        let p2 = producer.clone();
        let t2 = thread::spawn(move || publish(&p2, 2).unwrap());
        assert_eq!(drain_until(&mut consumer, 1), vec![2]);
        t1.join().unwrap();
        t2.join().unwrap();
        // Both positions are eventually drained (one skipped).
        consumer.drain(8, |_| panic!("nothing else was committed"));
        assert_eq!(producer.stats().abandoned, 1);
    });
}

#[test]
fn full_is_reported_only_when_slots_are_in_use() {
    loom::model(|| {
        let (producer, mut consumer) = channel(2, || 0u32).unwrap();
        publish(&producer, 1).unwrap();
        publish(&producer, 2).unwrap();
        let p = producer.clone();
        let t = thread::spawn(move || publish(&p, 3));
        let mut drained = Vec::new();
        assert_eq!(consumer.drain(1, |v| drained.push(*v)).events, 1);
        match t.join().unwrap() {
            // The drain freed a slot first: the event must follow in order.
            Ok(_) => {
                drained.extend(drain_until(&mut consumer, 2));
                assert_eq!(drained, vec![1, 2, 3]);
            }
            Err(PublishError::Full) => {
                assert!(producer.stats().full >= 1);
                drained.extend(drain_until(&mut consumer, 1));
                assert_eq!(drained, vec![1, 2]);
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            producer.try_claim().map(drop),
            Ok(()) | Err(ClaimError::Full)
        ));
    });
}

/// Issue 18: a publish that races `close()` and the final drain. The drainer closes the
/// ring, then drains until every position claimed so far has been drained (the ring's own
/// counters: `claimed` minus `drained`). A publish that returned Ok must be in what the final
/// drain saw; one that lost the race must be refused with `Closed`. Before the fix, the
/// closed flag was read before the claim: a producer could pass the check, the drainer could
/// close and find the ring empty, and the producer then claimed and committed an event that
/// nobody would ever drain, with Ok.
#[test]
fn issue_18_publish_racing_close_is_drained_or_refused() {
    loom::model(|| {
        let (producer, mut consumer) = channel(4, || 0u32).unwrap();
        let p = producer.clone();
        let t = thread::spawn(move || publish(&p, 1));
        consumer.close();
        let mut got = Vec::new();
        loop {
            consumer.drain(8, |v| got.push(*v));
            if consumer.stats().depth() == 0 {
                break;
            }
            thread::yield_now();
        }
        match t.join().unwrap() {
            Ok(_) => assert_eq!(got, vec![1], "published Ok, so the final drain has it"),
            Err(PublishError::Closed) => assert!(got.is_empty()),
            Err(other) => panic!("unexpected {other:?}"),
        }
        drop(producer);
    });
}

/// Issue 18, with the close protocol's own end condition and two producers: each publish is
/// either in the final drain or refused with `Closed`, and the drain ends without a timeout.
#[test]
fn issue_18_two_publishes_racing_close_and_is_drained() {
    loom::model(|| {
        let (producer, mut consumer) = channel(4, || 0u32).unwrap();
        let p1 = producer.clone();
        let t1 = thread::spawn(move || publish(&p1, 1));
        let p2 = producer.clone();
        let t2 = thread::spawn(move || publish(&p2, 2));
        consumer.close();
        let mut got = Vec::new();
        while !consumer.is_drained() {
            consumer.drain(8, |v| got.push(*v));
            thread::yield_now();
        }
        let mut accepted = Vec::new();
        for (value, result) in [(1, t1.join().unwrap()), (2, t2.join().unwrap())] {
            match result {
                Ok(_) => accepted.push(value),
                Err(PublishError::Closed) => {}
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        got.sort();
        assert_eq!(got, accepted, "exactly the accepted events are drained");
        assert!(producer.try_claim().is_err(), "closed for good");
        drop(producer);
    });
}
