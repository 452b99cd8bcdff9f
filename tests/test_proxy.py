"""The download probe goes the way the download goes: through HTTPS_PROXY.

The proxy is a real one, started by the test on 127.0.0.1: a threaded HTTP
CONNECT proxy that tunnels the data host's name to a local listener standing
in for it, and refuses (502) any other name. No traffic leaves 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import select
import socket
import socketserver
import threading

import pytest

from extreme_memorization.data import datasets as data
from extreme_memorization.data import network

DATA_HOST = "data-host.example.invalid"  # resolvable by no DNS: only the proxy knows where it is


class ConnectProxy(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, routes: dict[str, tuple[str, int]]):
        self.routes, self.requests = routes, []
        super().__init__(("127.0.0.1", 0), ConnectHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class ConnectHandler(socketserver.StreamRequestHandler):
    def handle(self):
        line = self.rfile.readline().decode().strip()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # the headers
        self.server.requests.append(line)
        method, target, _ = line.split(" ", 2)
        if method != "CONNECT" or target not in self.server.routes:
            self.wfile.write(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
            return
        with socket.create_connection(self.server.routes[target], timeout=5) as upstream:
            self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            self.wfile.flush()
            ends = [self.connection, upstream]
            while True:  # the tunnel: bytes both ways until one end closes
                ready, _, _ = select.select(ends, [], [], 5)
                if not ready:
                    return
                for end in ready:
                    chunk = end.recv(65536)
                    if not chunk:
                        return
                    (upstream if end is self.connection else self.connection).sendall(chunk)


@pytest.fixture
def listener():
    """A local TCP server standing in for the data host: it greets whoever connects."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"hello from the data host\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()
    stop.set()
    thread.join()
    server.close()


@pytest.fixture
def proxy(listener):
    server = ConnectProxy({f"{DATA_HOST}:443": listener})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def no_proxy_settings(monkeypatch):
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def test_without_a_proxy_the_probe_connects_directly_and_fails_for_an_unknown_host():
    assert network.proxy_for(DATA_HOST) is None
    assert not network.reachable(DATA_HOST, 5)


def test_through_https_proxy_the_probe_asks_the_proxy_for_a_tunnel_to_the_host(proxy, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    assert network.proxy_for(DATA_HOST) == proxy.url
    assert network.reachable(DATA_HOST, 5)
    assert proxy.requests == [f"CONNECT {DATA_HOST}:443 HTTP/1.1"]


def test_lower_case_https_proxy_and_credentials_work_too(proxy, monkeypatch):
    monkeypatch.setenv("https_proxy", proxy.url.replace("http://", "http://user:s%40cret@"))
    assert network.reachable(DATA_HOST, 5)
    assert network.without_password(network.proxy_for(DATA_HOST)) == proxy.url


def test_no_proxy_sends_the_host_direct(proxy, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", ".example.invalid,localhost")
    assert network.proxy_for(DATA_HOST) is None
    assert not network.reachable(DATA_HOST, 5)
    assert proxy.requests == []


def test_a_proxy_that_refuses_the_tunnel_means_unreachable(proxy, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    assert not network.reachable("other-host.example.invalid", 5)
    assert proxy.requests == ["CONNECT other-host.example.invalid:443 HTTP/1.1"]


def test_a_dead_proxy_fails_fast_with_what_to_do(params, tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HTTPS_PROXY", f"http://u:secret@127.0.0.1:{port}")
    monkeypatch.setitem(data.TFDS_DATASETS, "cifar10", (10, DATA_HOST))
    config = dataclasses.replace(params.data, tfds_data_dir=str(tmp_path / "tfds"))
    with pytest.raises(data.DataError) as info:
        data.build("cifar10", config)
    message = str(info.value)
    # The probe's error, raised before tfds' download (which retries for minutes) starts.
    assert f"cannot be reached through the proxy http://127.0.0.1:{port} (HTTPS_PROXY)" in message, message
    assert f"(no network within {config.download_timeout:g} s)" in message, message
    assert not (tmp_path / "tfds" / "downloads").exists()
    assert "secret" not in message and "TFDS_DATA_DIR" in message
