"""A private redis-server per test (never the shared one on 6379)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time

import pytest
import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_url():
    """Starts redis-server on a free loopback port; yields its URL; kills it."""
    workdir = tempfile.mkdtemp(prefix="evstream-pytest-")
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise
            time.sleep(0.02)
    yield f"redis://127.0.0.1:{port}"
    server.kill()
    server.wait()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def r(redis_url):
    """A redis-py client of the private server, decoding nothing."""
    return redis.Redis.from_url(redis_url)
