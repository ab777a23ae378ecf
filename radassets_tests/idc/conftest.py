"""A local S3-compatible server (moto) serving demo series, and a proxy that can stop mid-download."""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server(monkeypatch_module):
    """moto's S3 server on 127.0.0.1; s5cmd signs requests with these dummy credentials."""
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch_module.setenv(key, value)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    yield url
    server.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def upload_bucket(url: str, folder: Path) -> int:
    """Upload a folder laid out as BUCKET/KEY...; returns the bytes uploaded."""
    client = boto3.client("s3", endpoint_url=url)
    total = 0
    for bucket_dir in folder.iterdir():
        client.create_bucket(Bucket=bucket_dir.name)
        for f in sorted(bucket_dir.rglob("*")):
            if f.is_file():
                client.upload_file(str(f), bucket_dir.name, str(f.relative_to(bucket_dir)))
                total += f.stat().st_size
    return total


class StoppingProxy:
    """A TCP proxy to ``upstream`` that stops, like a crashed server, after forwarding ``budget`` bytes.

    Stopping closes every open connection and the listening port. ``restart`` listens again on the
    same port with a new budget. ``forwarded`` counts bytes sent to clients since the last start.
    """

    def __init__(self, upstream_port: int, budget: int | None = None):
        self.upstream_port = upstream_port
        self.port = free_port()
        self._start(budget)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _start(self, budget: int | None) -> None:
        self.budget = budget
        self.forwarded = 0
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def restart(self, budget: int | None = None) -> None:
        self.stop()
        self._start(budget)

    def stop(self) -> None:
        self.stopped.set()
        with self.lock:
            for s in [self.listener, *self.sockets]:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self.sockets.clear()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self.lock:
                if self.stopped.is_set():
                    client.close()
                    upstream.close()
                    return
                self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, downstream: bool) -> None:
        try:
            while chunk := source.recv(65536):
                target.sendall(chunk)
                if downstream:
                    with self.lock:
                        self.forwarded += len(chunk)
                        over = self.budget is not None and self.forwarded >= self.budget
                    if over:
                        self.stop()
                        return
        except OSError:
            pass
        finally:
            for s in (source, target):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
