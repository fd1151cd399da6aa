//! Validate + migrate per event with the shipped schemas (issue 5 target: ≤ 2 µs per event),
//! next to the JSON parse and print the consumer does around it.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use evstream::schema::Registry;
use serde_json::Value;

fn registry() -> Registry {
    Registry::from_dir(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas"))
        .expect("shipped schemas load")
}

fn bench(c: &mut Criterion) {
    let registry = registry();
    let v1 = r#"{"orderId":"ord-1-4242","symbol":"AAPL","price":189.25,"side":"BUY"}"#;
    let v2 =
        r#"{"orderId":"ord-1-4242","symbol":"AAPL","quantity":100.0,"price":189.25,"side":"BUY"}"#;
    let fill = r#"{"orderId":"ord-1-4242","fillId":"ord-1-4242-1","quantity":100.0,"price":189.2}"#;
    let parsed = |text: &str| serde_json::from_str::<Value>(text).unwrap();

    let mut group = c.benchmark_group("schema");
    group.bench_function("validate+migrate OrderCreated v1→v2", |b| {
        b.iter_batched_ref(
            || parsed(v1),
            |data| registry.upgrade("OrderCreated", 1, data).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("validate OrderCreated v2 (latest)", |b| {
        let data = parsed(v2);
        b.iter(|| {
            registry
                .upgrade("OrderCreated", 2, &mut data.clone())
                .unwrap()
        })
    });
    group.bench_function("validate OrderFilled v1 (latest)", |b| {
        let data = parsed(fill);
        b.iter(|| registry.validate("OrderFilled", 1, &data).unwrap())
    });
    group.bench_function("baseline: clone of the parsed payload", |b| {
        let data = parsed(v2);
        b.iter(|| data.clone())
    });
    group.bench_function(
        "consumer path: parse + validate + migrate + print, v1",
        |b| {
            b.iter(|| {
                let mut data = parsed(v1);
                registry.upgrade("OrderCreated", 1, &mut data).unwrap();
                data.to_string()
            })
        },
    );
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
