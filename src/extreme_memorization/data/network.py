"""Can a download host be reached, the way the download itself would go?

tfds downloads with ``requests``, which goes through the proxy of the
environment (HTTPS_PROXY, NO_PROXY): normal on cluster login nodes and in
companies, where a direct connection is refused. The probe goes the same
way, so it neither refuses a user whose only way out is the proxy nor waits
minutes for tfds' retries when nothing answers.
"""

from __future__ import annotations

import base64
import socket
import ssl
import threading
import urllib.parse


def proxy_for(host: str) -> str | None:
    """The proxy an HTTPS download from ``host`` goes through, or None.

    Asked from ``requests``, which tfds downloads with: HTTPS_PROXY (or
    ALL_PROXY), NO_PROXY, in upper or lower case, as it reads them.
    """
    import requests.utils

    url = f"https://{host}/"
    return requests.utils.select_proxy(url, requests.utils.get_environ_proxies(url))


def _tunnel(proxy: str, host: str, timeout: float) -> bool:
    """Whether ``proxy`` opens a tunnel (HTTP CONNECT) to host:443."""
    parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    with socket.create_connection((parts.hostname, port), timeout=timeout) as raw:
        conn = raw
        if parts.scheme == "https":
            conn = ssl.create_default_context().wrap_socket(raw, server_hostname=parts.hostname)
        request = f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n"
        if parts.username:
            user = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            request += f"Proxy-Authorization: Basic {base64.b64encode(user.encode()).decode()}\r\n"
        conn.sendall((request + "\r\n").encode())
        reply = b""
        while b"\r\n" not in reply and len(reply) < 8192:
            chunk = conn.recv(1024)
            if not chunk:
                break
            reply += chunk
    status = reply.split(b"\r\n", 1)[0].split()
    return len(status) >= 2 and status[1].startswith(b"2")


def without_password(proxy: str) -> str:
    parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def reachable(host: str, timeout: float) -> bool:
    """Whether host:443 can be reached within ``timeout`` seconds, the way the
    download goes: directly, or through the proxy of the environment
    (:func:`proxy_for`), which must then open a tunnel to it.

    Name resolution can hang far longer than any socket timeout, so the whole
    probe runs in a daemon thread that is abandoned when time is up.
    """
    result: list[bool] = []

    def probe() -> None:
        try:
            proxy = proxy_for(host)
            if proxy:
                result.append(_tunnel(proxy, host, timeout))
                return
            with socket.create_connection((host, 443), timeout=timeout):
                result.append(True)
        except (OSError, ValueError):
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])
