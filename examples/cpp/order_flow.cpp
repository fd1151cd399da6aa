// A C++ trading engine's integration layer publishing order lifecycles through evstream, as
// the original design's TestradEventIntegration does: a MarketDataUpdate, an OrderCreated and
// an OrderFilled per order, sharing the order's correlation id, from several engine threads.
//
// Build (see docs/cpp.md):
//   cargo build --release -p evstream-ffi
//   g++ -std=c++17 -O2 -Iinclude examples/cpp/order_flow.cpp
//       target/release/libevstream_ffi.a -lpthread -ldl -lm -o order_flow
// Run:
//   ./order_flow [redis-url] [orders-per-thread] [threads]
#include <cstdio>
#include <cstdlib>
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
    std::string url = argc > 1 ? argv[1] : "redis://127.0.0.1:6379";
    long orders = argc > 2 ? std::atol(argv[2]) : 1000;
    int threads = argc > 3 ? std::atoi(argv[3]) : 2;

    evstream_options options{};
    options.producer_name = "cpp-engine";
    auto created = evstream::Publisher::connect(url, &options);
    if (!created) {
        std::fprintf(stderr, "cannot start evstream: %s (%s)\n", created.error().message.c_str(),
                     created.error().status.name());
        return 1;
    }
    evstream::Publisher& events = created.value();
    EventIntegration integration(events);

    std::vector<std::thread> engine;
    for (int t = 0; t < threads; ++t) {
        engine.emplace_back([&integration, t, orders] {
            for (long i = 0; i < orders; ++i) {
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
    evstream_health health{};
    events.health(health);
    std::printf(
        "{\"published\":%llu,\"refused\":%llu,\"shipped\":%llu,\"dead_lettered\":%llu,"
        "\"undelivered\":%llu}\n",
        static_cast<unsigned long long>(health.published),
        static_cast<unsigned long long>(health.refused),
        static_cast<unsigned long long>(report.shipped),
        static_cast<unsigned long long>(report.dead_lettered),
        static_cast<unsigned long long>(report.undelivered));
    if (!status.ok()) {
        std::fprintf(stderr, "shutdown: %s\n", evstream::Error::last(status).message.c_str());
        return 1;
    }
    return 0;
}
