"""Django-free helpers that run real processes (usable from bench/ before Django is set up)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.harness import free_port, wait_until


class RedisServer:
    """A private redis-server on a free loopback port (never the shared one), restartable, no persistence."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
        )
        wait_until(self._pings, timeout=20, interval=0.1, what="private redis-server")
        return self

    def _pings(self) -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=0.5).ping())
        except redis.ConnectionError:
            return False

    def kill9(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        """Crash it (everything queued in it is lost) and start an empty one on the same port."""
        self.kill9()
        self.start()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
