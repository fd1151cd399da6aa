// evstream C++ wrapper: header-only, over the C ABI of include/evstream.h.
//
// - evstream::Publisher owns a handle (RAII: the destructor shuts down and frees it); it is
//   movable, not copyable, and safe to share by reference between threads.
// - Strings are std::string_view; nothing is copied on the publish path.
// - No exceptions: every call returns evstream::Status; Error carries a code and a message.
//
//     auto created = evstream::Publisher::connect("redis://127.0.0.1:6379");
//     if (!created) { std::cerr << created.error().message << "\n"; return 1; }
//     evstream::Publisher& events = created.value();
//     events.publish("Signal", "corr-1", R"({"name":"momentum"})");
#ifndef EVSTREAM_HPP
#define EVSTREAM_HPP

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "evstream.h"

namespace evstream {

// The result of a call: EVSTREAM_OK or a failure code (see evstream.h).
class Status {
public:
    constexpr Status(evstream_status code = EVSTREAM_OK) noexcept : code_(code) {}
    constexpr bool ok() const noexcept { return code_ == EVSTREAM_OK; }
    constexpr explicit operator bool() const noexcept { return ok(); }
    constexpr evstream_status code() const noexcept { return code_; }
    // A static name for the code ("ring full", ...).
    const char* name() const noexcept { return evstream_status_name(code_); }

private:
    evstream_status code_;
};

// A failure with its message (the calling thread's last error, copied when it happened).
struct Error {
    Status status;
    std::string message;

    static Error last(Status status) {
        Error error{status, {}};
        std::size_t length = evstream_last_error(nullptr, 0);
        error.message.resize(length + 1);
        evstream_last_error(error.message.data(), error.message.size());
        error.message.resize(length);
        return error;
    }
};

inline evstream_str view(std::string_view s) noexcept { return evstream_str{s.data(), s.size()}; }

// An order as the engine creates it.
struct OrderCreated {
    std::string_view correlation_id;
    std::string_view order_id;
    std::string_view symbol;
    double quantity = 0;
    double price = 0;
    bool buy = true;
};

// A fill of an order.
struct OrderFilled {
    std::string_view correlation_id;
    std::string_view order_id;
    std::string_view fill_id;
    double quantity = 0;
    double price = 0;
};

// A top-of-book update.
struct MarketData {
    std::string_view correlation_id;  // may be empty
    std::string_view symbol;
    double bid = 0;
    double ask = 0;
    double last = 0;
    double bid_size = 0;
    double ask_size = 0;
    std::uint64_t exchange_ts_ns = 0;
};

class Publisher;

// Either a Publisher or the Error that prevented it.
class Created;

class Publisher {
public:
    // Connects to redis_url (redis://[user:password@]host:port[/db]); options may be null.
    static Created connect(const std::string& redis_url, const evstream_options* options = nullptr);
    // Reads a TOML configuration file (docs/configuration.md).
    static Created from_file(const std::string& path);

    Publisher(Publisher&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
    Publisher& operator=(Publisher&& other) noexcept {
        if (this != &other) {
            evstream_destroy(handle_);
            handle_ = std::exchange(other.handle_, nullptr);
        }
        return *this;
    }
    Publisher(const Publisher&) = delete;
    Publisher& operator=(const Publisher&) = delete;
    ~Publisher() { evstream_destroy(handle_); }

    // Publishes a payload that is already JSON. Never blocks; never throws.
    Status publish(std::string_view event_type, std::string_view correlation_id,
                   std::string_view json) const noexcept {
        return evstream_publish(handle_, view(event_type), view(correlation_id),
                                reinterpret_cast<const std::uint8_t*>(json.data()), json.size());
    }

    // The same, with the payload's schema version (the envelope's `version` is v<version>).
    Status publish(std::string_view event_type, std::uint32_t version,
                   std::string_view correlation_id, std::string_view json) const noexcept {
        return evstream_publish_versioned(handle_, view(event_type), version,
                                          view(correlation_id),
                                          reinterpret_cast<const std::uint8_t*>(json.data()),
                                          json.size());
    }

    Status on_order_created(const OrderCreated& order) const noexcept {
        evstream_order_created c{view(order.correlation_id), view(order.order_id),
                                 view(order.symbol),         order.quantity,
                                 order.price, order.buy ? EVSTREAM_SIDE_BUY : EVSTREAM_SIDE_SELL};
        return evstream_on_order_created(handle_, &c);
    }

    Status on_order_filled(const OrderFilled& fill) const noexcept {
        evstream_order_filled f{view(fill.correlation_id), view(fill.order_id),
                                view(fill.fill_id), fill.quantity, fill.price};
        return evstream_on_order_filled(handle_, &f);
    }

    Status on_market_data(const MarketData& update) const noexcept {
        evstream_market_data m{view(update.correlation_id), view(update.symbol), update.bid,
                               update.ask,  update.last, update.bid_size, update.ask_size,
                               update.exchange_ts_ns};
        return evstream_on_market_data(handle_, &m);
    }

    Status health(evstream_health& out) const noexcept { return evstream_health_snapshot(handle_, &out); }

    // Every figure /metrics shows, for an engine with a metrics system of its own.
    Status metrics(evstream_metrics& out) const noexcept {
        return evstream_metrics_snapshot(handle_, &out, sizeof out);
    }

    // Serves /metrics and /health from this process until the Publisher is destroyed.
    // addr empty: 127.0.0.1:9464, or a free loopback port when taken; port 0: a free port.
    // On success *served (if not null) is the address served.
    Status serve_metrics(const std::string& addr = {}, std::string* served = nullptr,
                         const std::string& token_file = {}, bool is_public = false) const {
        evstream_metrics_options options{addr.empty() ? nullptr : addr.c_str(),
                                         static_cast<std::uint8_t>(is_public ? 1 : 0),
                                         token_file.empty() ? nullptr : token_file.c_str()};
        char buffer[128] = {};
        Status status = evstream_serve_metrics(handle_, &options, buffer, sizeof buffer);
        if (status.ok() && served != nullptr) *served = buffer;
        return status;
    }

    // Flushes and stops the shipper; publish returns EVSTREAM_CLOSED afterwards.
    Status shutdown(std::uint32_t timeout_ms, evstream_shutdown_report* report = nullptr) noexcept {
        return evstream_shutdown(handle_, timeout_ms, report);
    }

    // The C handle, for calls the wrapper does not cover.
    const evstream_handle* native() const noexcept { return handle_; }

private:
    explicit Publisher(evstream_handle* handle) noexcept : handle_(handle) {}
    friend class Created;
    evstream_handle* handle_;
};

class Created {
public:
    explicit operator bool() const noexcept { return publisher_.handle_ != nullptr; }
    Publisher& value() noexcept { return publisher_; }
    const Error& error() const noexcept { return error_; }

    static Created from(evstream_handle* handle, evstream_status status) {
        Created created;
        created.publisher_.handle_ = handle;
        if (handle == nullptr) created.error_ = Error::last(Status(status));
        return created;
    }

private:
    Created() noexcept : publisher_(nullptr) {}
    Publisher publisher_;
    Error error_{};
};

inline Created Publisher::connect(const std::string& redis_url, const evstream_options* options) {
    evstream_status status = EVSTREAM_OK;
    evstream_handle* handle = evstream_create(redis_url.c_str(), options, &status);
    return Created::from(handle, status);
}

inline Created Publisher::from_file(const std::string& path) {
    evstream_status status = EVSTREAM_OK;
    evstream_handle* handle = evstream_create_from_file(path.c_str(), &status);
    return Created::from(handle, status);
}

}  // namespace evstream

#endif  // EVSTREAM_HPP
