// Latency of publishing from C++ (through include/evstream.hpp), each call timed with
// steady_clock while the shipper ships into Redis: a ~400-byte OrderCreated JSON through
// evstream_publish, or with `typed` an OrderCreated through evstream_on_order_created (its
// fields copied in binary; the shipper writes the JSON).
// Calls are made in bursts of 50,000 and the harness waits for the ring to drain between
// bursts, so a full ring (a shipping limit, not a publish latency) is never timed.
//
// Build and run: scripts/bench-cpp.sh (it starts a private redis-server). By hand:
//   ./latency <redis-url> [calls] [typed]
//       -> {"calls":..,"p50_ns":..,"p99_ns":..,"p999_ns":..,"max_ns":..}
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "evstream.hpp"

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: latency <redis-url> [calls] [typed]\n");
        return 2;
    }
    long calls = argc > 2 ? std::atol(argv[2]) : 1000000;
    const bool typed = argc > 3 && std::string(argv[3]) == "typed";
    if (calls <= 0) {
        std::fprintf(stderr, "calls must be positive\n");
        return 2;
    }
    const long burst = 50000;

    evstream_options options{};
    options.ring_capacity = 131072;
    auto created = evstream::Publisher::connect(argv[1], &options);
    if (!created) {
        std::fprintf(stderr, "cannot start evstream: %s\n", created.error().message.c_str());
        return 1;
    }
    evstream::Publisher& events = created.value();

    // The same event as the Rust harness (crates/evstream/benches/publish_latency.rs).
    const std::string json =
        R"({"orderId":"ORD-2026-11-26-000000012345","clientOrderId":"CL-7f3a9c2e-5b1d-4e8f-a6c0-123456789abc",)"
        R"("symbol":"AAPL","quantity":100.0,"price":189.25,"side":"BUY","orderType":"LIMIT",)"
        R"("timeInForce":"DAY","account":"ACC-EQUITIES-PROP-001","strategy":"momentum-breakout-v3",)"
        R"("venue":"XNAS","trader":"algo-engine-7","createdTsNs":1764000000000000000,"riskCheckNs":850,)"
        R"("parentOrderId":"PARENT-2026-11-26-000000000042","notes":"risk checks passed"})";
    const std::string correlation = "corr-7f3a9c2e-5b1d-4e8f-a6c0-123456789abc";
    // The typed event of the Rust harness's typed rows (crates/ffi/benches/ffi_latency.rs).
    const evstream::OrderCreated order{"ord-000012345", "ORD-2026-12-04-000012345", "AAPL",
                                       100.0, 189.25, true};
    auto publish = [&] {
        return typed ? events.on_order_created(order)
                     : events.publish("OrderCreated", correlation, json);
    };

    std::vector<std::uint64_t> samples;
    samples.reserve(static_cast<std::size_t>(calls));
    auto drain = [&events] {
        evstream_health health{};
        do {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
            events.health(health);
        } while (health.ring_depth > 0);
    };
    // Warm-up: one burst, not timed.
    for (long i = 0; i < burst; ++i) {
        while (publish().code() == EVSTREAM_FULL) {
        }
    }
    drain();
    for (long done = 0; done < calls;) {
        long end = std::min(calls, done + burst);
        for (; done < end; ++done) {
            auto start = std::chrono::steady_clock::now();
            evstream::Status status = publish();
            auto elapsed = std::chrono::steady_clock::now() - start;
            if (!status.ok()) {
                std::fprintf(stderr, "publish refused: %s\n", status.name());
                return 1;
            }
            samples.push_back(static_cast<std::uint64_t>(
                std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count()));
        }
        drain();
    }
    evstream_shutdown_report report{};
    evstream::Status stopped = events.shutdown(30000, &report);
    if (!stopped) {
        std::fprintf(stderr, "shutdown: %s\n", evstream::Error::last(stopped).message.c_str());
        return 1;
    }
    std::sort(samples.begin(), samples.end());
    auto at = [&samples](double q) {
        return samples[std::min(samples.size() - 1, static_cast<std::size_t>(q * samples.size()))];
    };
    std::printf(
        "{\"calls\":%zu,\"payload_bytes\":%zu,\"p50_ns\":%llu,\"p99_ns\":%llu,\"p999_ns\":%llu,"
        "\"max_ns\":%llu,\"shipped\":%llu}\n",
        samples.size(), json.size(), static_cast<unsigned long long>(at(0.5)),
        static_cast<unsigned long long>(at(0.99)), static_cast<unsigned long long>(at(0.999)),
        static_cast<unsigned long long>(samples.back()),
        static_cast<unsigned long long>(report.shipped));
    return 0;
}
