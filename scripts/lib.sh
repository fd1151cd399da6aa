# Shared helpers of the scripts: installing what is missing, the same way everywhere.

# need CMD PACKAGE [APT_OPTION...]: makes sure CMD is on PATH, installing Debian PACKAGE with
# apt-get (and the given install options, e.g. --no-install-recommends) when running as root;
# otherwise says which package to install and fails.
need() {
    local cmd=$1 package=$2
    shift 2
    command -v "$cmd" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "==> installing $package (for $cmd)" >&2
        if [ -z "${EVSTREAM_APT_UPDATED:-}" ]; then
            DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
            EVSTREAM_APT_UPDATED=1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" "$package" >&2
    fi
    if ! command -v "$cmd" >/dev/null 2>&1; then
        echo "error: '$cmd' is missing: install the Debian package '$package'" \
             "(sudo apt-get install $package) and run this script again" >&2
        return 1
    fi
}

# start_private_redis: starts a redis-server of the benchmarks' own on a free loopback port,
# without persistence, stopped and removed when the script exits; sets `port` and `dir`.
start_private_redis() {
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    dir=$(mktemp -d)
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save "" --appendonly no \
        --daemonize yes --logfile "$dir/redis.log"
    trap 'redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
    until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done
}
