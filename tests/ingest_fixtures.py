"""A live gunicorn server for the ingestion tests, reaching PostgreSQL through a TCP proxy the test controls."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import requests
from django.conf import settings
from django.db import connection

from tests.harness import ARTIFACTS, ROOT, free_port, wait_until


@dataclass
class TcpProxy:
    """Forwards 127.0.0.1:port to the database; `cut()` drops every connection and refuses new ones."""

    target_host: str
    target_port: int
    port: int = field(default_factory=free_port)
    _listener: socket.socket | None = None
    _sockets: set[socket.socket] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def cut(self) -> None:
        """The database "goes down": listening stops (connection refused) and open connections are reset."""
        listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown() wakes the accept() blocked in the other thread; close() alone would not.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def restore(self) -> None:
        if self._listener is None:
            self.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection((self.target_host, self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while True:
                readable, _, _ = select.select([a, b], [], [], 1.0)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self._sockets.discard(a)
                self._sockets.discard(b)
            a.close()
            b.close()


@dataclass
class LiveServer:
    url: str
    proxy: TcpProxy
    process: subprocess.Popen[bytes]


def _database_url(host: str, port: int) -> str:
    db = connection.settings_dict
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"


@pytest.fixture(scope="session")
def live_ingest(django_db_setup: None, django_db_blocker: object) -> Iterator[LiveServer]:
    """gunicorn serving the app on a free port, its database connections going through a TcpProxy."""
    if not settings.REDIS_URL or connection.vendor != "postgresql":
        pytest.fail("live server tests need DATABASE_URL (PostgreSQL) and REDIS_URL: run scripts/test")
    db = connection.settings_dict
    proxy = TcpProxy(target_host=db.get("HOST") or "127.0.0.1", target_port=int(db.get("PORT") or 5432)).start()
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": _database_url("127.0.0.1", proxy.port),
        "REDIS_URL": settings.REDIS_URL,
        # Evaluation tasks go to a queue no test worker consumes: these tests are about storage.
        "UPLIFT_TASK_QUEUE": "ingest-live-tests",
        "UPLIFT_INGEST_RATE_LIMIT": "100000",
    }
    ARTIFACTS.mkdir(exist_ok=True)
    log = (ARTIFACTS / "ingest-gunicorn.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "expansion.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--threads",
            "4",
            "--timeout",
            "60",
            "--preload",  # as deployed (Dockerfile)
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError((ARTIFACTS / "ingest-gunicorn.log").read_text()[-4000:])
        try:
            return requests.get(f"{url}/healthz", timeout=10).status_code == 200
        except (requests.ConnectionError, requests.Timeout):
            return False

    try:
        wait_until(up, timeout=90, interval=0.2, what="gunicorn to serve")
        yield LiveServer(url=url, proxy=proxy, process=process)
    finally:
        process.terminate()
        process.wait(timeout=30)
        proxy.cut()
