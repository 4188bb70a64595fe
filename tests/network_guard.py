"""Keeps the test suite off the network: only loopback connections and name look-ups are allowed."""

from __future__ import annotations

import errno
import ipaddress
import socket
from typing import Any

import pytest


def _is_loopback(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if host in (None, "localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def allow_loopback_only(monkeypatch: pytest.MonkeyPatch, blocked: list[str]) -> None:
    """Refuse, and record, every connection and name look-up that is not on the loopback interface."""
    connect = socket.socket.connect
    getaddrinfo = socket.getaddrinfo

    def guarded_connect(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            blocked.append(str(address[0]))
            raise OSError(errno.ENETUNREACH, f"test guard: no connection to {address[0]}")
        connect(sock, address)

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _is_loopback(host):
            blocked.append(str(host))
            raise socket.gaierror(socket.EAI_NONAME, f"test guard: no name look-up for {host}")
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
