"""localstripe for the suite: a real Stripe-compatible server in a temp dir, behind a counting proxy.

The proxy forwards every request unchanged and records (method, path, idempotency key), so a test
can assert exactly which Stripe calls the product made (never a mock: localstripe answers them).
The URL is chosen when this module is imported, before the session's Celery worker starts, so the
worker subprocess inherits STRIPE_API_BASE too.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import stripe
from django.conf import settings

from tests.harness import ARTIFACTS, free_port

STRIPE_KEY = "sk_test_uplift_suite_0000"
WEBHOOK_SECRET = "whsec_uplift_suite_secret"

_BACKEND_PORT = free_port()
_PROXY_PORT = free_port()
PROXY_URL = f"http://127.0.0.1:{_PROXY_PORT}"
os.environ["STRIPE_API_BASE"] = PROXY_URL
os.environ["STRIPE_DIALECT"] = "localstripe"
settings.STRIPE_API_BASE = PROXY_URL
settings.STRIPE_DIALECT = "localstripe"


@dataclass
class CallLog:
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, method: str, path: str, key: str) -> None:
        with self.lock:
            self.calls.append((method, path, key))

    def clear(self) -> None:
        with self.lock:
            self.calls.clear()

    def writes(self, prefix: str = "/v1/") -> list[tuple[str, str, str]]:
        """POST/DELETE calls except the read-only invoice preview."""
        with self.lock:
            return [
                c
                for c in self.calls
                if c[0] in ("POST", "DELETE") and c[1].startswith(prefix) and "create_preview" not in c[1]
            ]

    def matching(self, method: str, path_prefix: str) -> list[tuple[str, str, str]]:
        with self.lock:
            return [c for c in self.calls if c[0] == method and c[1].startswith(path_prefix)]


LOG = CallLog()


class _Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if not self.path.startswith("/_config"):
            LOG.add(self.command, self.path.split("?")[0], self.headers.get("Idempotency-Key", ""))
        conn = http.client.HTTPConnection("127.0.0.1", _BACKEND_PORT, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        conn.request(self.command, self.path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()

    do_GET = do_POST = do_DELETE = _forward

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class LocalStripe:
    process: subprocess.Popen[bytes]
    server: ThreadingHTTPServer
    log: CallLog

    def reset(self) -> None:
        request = urllib.request.Request(f"http://127.0.0.1:{_BACKEND_PORT}/_config/data", method="DELETE")
        urllib.request.urlopen(request, timeout=10).read()  # noqa: S310 -- a fixed loopback URL
        self.log.clear()


_SERVER: LocalStripe | None = None


def _start() -> LocalStripe:
    # localstripe 1.15.10 pickles its state to the fixed path /tmp/localstripe.pickle (shared by every
    # instance on the machine) and loads it at start: --from-scratch never loads it, so a file left
    # truncated by two instances writing at once cannot keep ours from starting.
    workdir = Path(tempfile.mkdtemp(prefix="localstripe-"))
    ARTIFACTS.mkdir(exist_ok=True)
    binary = Path(sys.executable).parent / "localstripe"
    logfile = open(ARTIFACTS / "localstripe.log", "ab")  # noqa: SIM115 -- lives as long as the process
    process = subprocess.Popen(
        [str(binary), "--port", str(_BACKEND_PORT), "--from-scratch"],
        cwd=workdir,
        stdout=logfile,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{_BACKEND_PORT}/v1/plans", timeout=1)
        except urllib.error.HTTPError:
            break  # it answers (401 without a key): up
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("localstripe did not start; see test-artifacts/localstripe.log") from None
            time.sleep(0.2)
            continue
        break
    server = ThreadingHTTPServer(("127.0.0.1", _PROXY_PORT), _Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return LocalStripe(process=process, server=server, log=LOG)


@pytest.fixture(scope="session")
def _localstripe_session() -> Iterator[LocalStripe]:
    global _SERVER
    _SERVER = _start()
    yield _SERVER
    _SERVER.server.shutdown()
    _SERVER.process.terminate()
    _SERVER.process.wait(timeout=10)


@pytest.fixture
def localstripe(_localstripe_session: LocalStripe) -> Iterator[LocalStripe]:
    """A clean localstripe (its data deleted) and an empty call log; the library pointed at it."""
    _localstripe_session.reset()
    stripe.api_base = PROXY_URL
    stripe.api_key = STRIPE_KEY
    yield _localstripe_session


def sign(payload: str, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """A Stripe-Signature header made exactly as Stripe makes it."""
    import hashlib
    import hmac

    ts = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{ts}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={ts},v1={digest}"


def stripe_catalog() -> None:
    """Product "Core" with Starter $29 / Growth $49 monthly, and an add-on product: as Plans (localstripe)."""
    core = stripe.Product.create(name="Core")
    extra = stripe.Product.create(name="Extra")
    stripe.Plan.create(id="starter", product=core.id, amount=2900, currency="usd", interval="month")
    stripe.Plan.create(id="growth", product=core.id, amount=4900, currency="usd", interval="month")
    stripe.Plan.create(id="automation", product=extra.id, amount=1000, currency="usd", interval="month")


def stripe_customer(external_id: str, plan: str = "starter", quantity: int = 1) -> tuple[str, str]:
    """A paying Stripe customer (card attached) on `plan`; returns (customer id, subscription id)."""
    customer = stripe.Customer.create(
        email=f"billing@{external_id}.example", metadata={"uplift_external_id": external_id}
    )
    method = stripe.PaymentMethod.create(
        type="card", card={"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}
    )
    stripe.PaymentMethod.attach(method.id, customer=customer.id)
    stripe.Customer.modify(customer.id, invoice_settings={"default_payment_method": method.id})
    subscription = stripe.Subscription.create(customer=customer.id, items=[{"plan": plan, "quantity": quantity}])
    return customer.id, subscription.id
