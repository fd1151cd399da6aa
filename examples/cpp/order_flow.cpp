// A C++ trading engine's integration layer publishing order lifecycles through evstream, as
// the original design's TestradEventIntegration does: a MarketDataUpdate, an OrderCreated and
// an OrderFilled per order, sharing the order's correlation id, from several engine threads.
//
// Build (see docs/cpp.md):
//   cargo build --release -p evstream-ffi
//   g++ -std=c++17 -O2 -Iinclude examples/cpp/order_flow.cpp
//       target/release/libevstream_ffi.a -lpthread -ldl -lm -o order_flow
// Run:
//   ./order_flow [redis-url] [orders-per-thread] [threads] [--metrics ADDR] [--rate N]
// --metrics serves /metrics and /health from this process (ADDR e.g. 127.0.0.1:9464, or
// 127.0.0.1:0 for a free port; the address served is printed on stderr); --rate paces each
// thread at N orders per second (default: as fast as the ring takes them).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "evstream.hpp"

namespace {

// What the engine calls; each method maps one engine callback to one event.
class EventIntegration {
public:
    explicit EventIntegration(const evstream::Publisher& events) : events_(events) {}

    evstream::Status on_market_data(const std::string& correlation_id, const char* symbol,
                                    double bid, double ask) const {
        // Typed: the fields are copied in binary, the shipper writes the JSON.
        evstream::MarketData update{correlation_id, symbol, bid, ask, (bid + ask) / 2, 500, 700,
                                    0};
        return events_.on_market_data(update);
    }

    evstream::Status on_order_created(const evstream::OrderCreated& order) const {
        return events_.on_order_created(order);
    }

    evstream::Status on_order_filled(const evstream::OrderFilled& fill) const {
        return events_.on_order_filled(fill);
    }

private:
    const evstream::Publisher& events_;
};

const char* const kSymbols[] = {"AAPL", "MSFT", "NVDA", "SPY", "TSLA"};

// Whether the engine's call was accepted. A full ring (the shipper is behind) yields and
// asks the caller to call again; any other refusal ends the program with its message.
bool accepted(evstream::Status status, const char* what) {
    if (status.ok()) return true;
    if (status.code() == EVSTREAM_FULL) {
        std::this_thread::yield();
        return false;
    }
    std::fprintf(stderr, "%s refused: %s: %s\n", what, status.name(),
                 evstream::Error::last(status).message.c_str());
    std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<const char*> positional;
    std::string metrics_addr;
    long rate = 0;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--metrics") == 0 && i + 1 < argc) {
            metrics_addr = argv[++i];
        } else if (std::strcmp(argv[i], "--rate") == 0 && i + 1 < argc) {
            rate = std::atol(argv[++i]);
        } else {
            positional.push_back(argv[i]);
        }
    }
    std::string url = positional.size() > 0 ? positional[0] : "redis://127.0.0.1:6379";
    long orders = positional.size() > 1 ? std::atol(positional[1]) : 1000;
    int threads = positional.size() > 2 ? std::atoi(positional[2]) : 2;

    evstream_options options{};
    options.producer_name = "cpp-engine";
    auto created = evstream::Publisher::connect(url, &options);
    if (!created) {
        std::fprintf(stderr, "cannot start evstream: %s (%s)\n", created.error().message.c_str(),
                     created.error().status.name());
        return 1;
    }
    evstream::Publisher& events = created.value();
    if (!metrics_addr.empty()) {
        // The capture side's figures, scraped from the engine itself (docs/cpp.md).
        std::string served;
        evstream::Status status = events.serve_metrics(metrics_addr, &served);
        if (!status.ok()) {
            std::fprintf(stderr, "cannot serve metrics: %s\n",
                         evstream::Error::last(status).message.c_str());
            return 1;
        }
        std::fprintf(stderr, "metrics on http://%s/metrics\n", served.c_str());
    }
    EventIntegration integration(events);

    std::vector<std::thread> engine;
    for (int t = 0; t < threads; ++t) {
        engine.emplace_back([&integration, t, orders, rate] {
            const auto started = std::chrono::steady_clock::now();
            for (long i = 0; i < orders; ++i) {
                if (rate > 0) {
                    std::this_thread::sleep_until(started + std::chrono::microseconds(
                                                                i * 1000000 / rate));
                }
                std::string correlation = "cpp-" + std::to_string(t) + "-" + std::to_string(i);
                std::string order_id = "O" + std::to_string(t) + "-" + std::to_string(i);
                std::string fill_id = order_id + "-F1";
                const char* symbol = kSymbols[i % 5];
                double price = 100.0 + static_cast<double>(i % 50);
                while (!accepted(integration.on_market_data(correlation, symbol, price - 0.01,
                                                            price + 0.01),
                                 "MarketDataUpdate")) {
                }
                evstream::OrderCreated order{correlation, order_id, symbol, 100, price, i % 2 == 0};
                while (!accepted(integration.on_order_created(order), "OrderCreated")) {
                }
                evstream::OrderFilled fill{correlation, order_id, fill_id, 100, price};
                while (!accepted(integration.on_order_filled(fill), "OrderFilled")) {
                }
            }
        });
    }
    for (auto& thread : engine) thread.join();

    evstream_shutdown_report report{};
    evstream::Status status = events.shutdown(10000, &report);
    evstream_metrics metrics{};
    events.metrics(metrics);
    const unsigned long long refused = metrics.refused_ring_full + metrics.refused_too_large +
                                       metrics.refused_invalid + metrics.refused_closed;
    std::printf(
        "{\"published\":%llu,\"refused\":%llu,\"shipped\":%llu,\"dead_lettered\":%llu,"
        "\"undelivered\":%llu,\"publish_timed\":%llu,\"publish_p50_ns\":%llu,"
        "\"publish_p99_ns\":%llu}\n",
        static_cast<unsigned long long>(metrics.published), refused,
        static_cast<unsigned long long>(report.shipped),
        static_cast<unsigned long long>(report.dead_lettered),
        static_cast<unsigned long long>(report.undelivered),
        static_cast<unsigned long long>(metrics.publish_timed),
        static_cast<unsigned long long>(metrics.publish_p50_ns),
        static_cast<unsigned long long>(metrics.publish_p99_ns));
    if (!status.ok()) {
        std::fprintf(stderr, "shutdown: %s\n", evstream::Error::last(status).message.c_str());
        return 1;
    }
    return 0;
}
