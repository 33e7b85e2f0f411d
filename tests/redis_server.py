"""A real ``redis-server`` on 127.0.0.1 for the streaming tests: a free port, a
temporary directory, no persistence; stopped with the fixture."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(tmp_dir) -> tuple[subprocess.Popen, str]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run does)")
    import redis

    for _ in range(5):
        port = free_port()
        p = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--dir",
                              str(tmp_dir), "--save", "", "--appendonly", "no",
                              "--protected-mode", "yes"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and p.poll() is None:
            try:
                redis.Redis.from_url(url).ping()
                return p, url
            except redis.ConnectionError:
                time.sleep(0.05)
        p.kill()
        p.wait()
    raise RuntimeError("could not start redis-server")
