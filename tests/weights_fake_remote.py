"""Loopback fakes of Google Drive and the Hugging Face hub for the weights tests; nothing leaves 127.0.0.1.

One threaded HTTP server on 127.0.0.1 plays three parts:

- the hub, reached as `HF_ENDPOINT=http://127.0.0.1:PORT` (`HEAD`/`GET /<repo>/resolve/<revision>/<file>`);
- an HTTPS proxy (`HTTPS_PROXY`) that accepts `CONNECT` only for Google's Drive hosts and terminates TLS
  itself with a certificate from a throw-away CA (`REQUESTS_CA_BUNDLE`), so gdown runs unmodified;
- Google Drive behind that proxy: the `uc?id=` redirect, the large-file confirmation form with its `confirm=`
  token, the quota-exceeded page, byte ranges, interrupted and truncated transfers.

`make_sandbox` isolates a test: a fresh `DOCSAM_HOME` and Hugging Face cache, no proxy or offline variables
inherited from the caller's environment, and a socket guard under which every connection or DNS look-up
outside loopback fails and is recorded.
"""

from __future__ import annotations

import hashlib
import io
import re
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import huggingface_hub.constants
import huggingface_hub.file_download
import huggingface_hub.utils._http
import pytest
import safetensors.torch
import torch
import trustme
from network_guard import allow_loopback_only

DRIVE_HOSTS = ("drive.google.com", "drive.usercontent.google.com", "docs.google.com")
CLOSED_PORT = "http://127.0.0.1:9"
HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"
PATCH_EMBEDDING = "mask2former.model.pixel_level_module.encoder.embeddings.patch_embeddings.projection.weight"

# Drive's pages, reduced to the lines gdown reads (it parses them line by line).
CONFIRM_PAGE = (
    "<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>\n"
    '<p class="uc-warning-subcaption">{name} ({size}) is too large for Google to scan for viruses.</p>\n'
    '<form id="download-form" action="https://drive.usercontent.google.com/download" method="get">'
    '<input type="submit" id="uc-download-link" value="Download anyway"/>'
    '<input type="hidden" name="id" value="{id}"><input type="hidden" name="export" value="download">'
    '<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="{uuid}"></form>\n'
    "</body></html>\n"
)
QUOTA_PAGE = (
    "<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body>\n"
    '<p class="uc-error-caption">Sorry, you can\'t view or download this file at this time.</p>\n'
    '<p class="uc-error-subcaption">Too many users have viewed or downloaded this file recently. Please try '
    "accessing the file again later. If the file you are trying to access is particularly large or is shared "
    "with many people, it may take up to 24 hours to be able to view or download the file.</p>\n"
    "</body></html>\n"
)


# --- checkpoints ----------------------------------------------------------------------------------------


def checkpoint(
    width: int = 128, prefix: str = "mask2former.model.", filler: int = 512
) -> dict[str, torch.Tensor]:
    """A small state dict shaped like DocSAM's where it matters: the Swin patch embedding tells the variant.

    `filler` float32 values pad it out: clients read in chunks (gdown: 512 KiB) and drop a chunk cut short,
    so an interrupted transfer keeps bytes only once the file spans more than one chunk.
    """
    generator = torch.Generator().manual_seed(width)
    return {
        PATCH_EMBEDDING.replace("mask2former.model.", prefix): torch.randn(
            width, 3, 4, 4, generator=generator
        ),
        f"{prefix}transformer_module.queries.weight": torch.randn(filler, generator=generator),
        f"{prefix}relative_position_index": torch.arange(144, dtype=torch.int64).reshape(12, 12),
    }


def pth_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def safetensors_bytes(state: dict[str, torch.Tensor]) -> bytes:
    return safetensors.torch.save(state)


# --- the fake remote ------------------------------------------------------------------------------------


@dataclass
class FakeFile:
    """A file one of the fakes serves, and how badly."""

    data: bytes
    name: str = "weights.bin"
    interrupt_at: int | None = None  # cut the transfer after this byte offset ...
    interruptions: int = 0  # ... this many times, then serve it whole
    truncate_to: int | None = None  # serve only the first bytes, consistently (a short upload)
    quota_exceeded: bool = False  # Drive answers with its quota page
    status: int | None = None  # answer with this HTTP error status
    ranges: bool = True  # False: answer a byte-range request with the whole file (a proxy dropping Range)
    confirm_loops: bool = False  # Drive answers its confirmation form with the form again
    redirect_loops: bool = False  # Drive redirects its download to itself

    @property
    def etag(self) -> str:
        return f'"{hashlib.sha256(self.data).hexdigest()}"'


@dataclass(frozen=True)
class Seen:
    host: str
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class FakeRemote:
    """The server, what it serves and what it saw."""

    folder: Path
    drive: dict[str, FakeFile] = field(default_factory=dict)
    hub: dict[tuple[str, str], FakeFile] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    confirm_uuid: str = field(default_factory=lambda: str(uuid.uuid4()))

    def __post_init__(self) -> None:
        authority = trustme.CA()
        self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        authority.issue_cert(*DRIVE_HOSTS).configure_cert(self.tls)
        self.ca_bundle = self.folder / "fake-ca.pem"
        authority.cert_pem.write_to_path(str(self.ca_bundle))
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler, self)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def route_clients_here(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Point huggingface_hub (HF_ENDPOINT) and gdown (proxy + CA bundle) at this server."""
        monkeypatch.setenv("HF_ENDPOINT", self.url)
        point_hub_constants_at(monkeypatch, self.url)
        monkeypatch.setenv("HTTPS_PROXY", self.url)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(self.ca_bundle))

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def requests_to(self, host: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.host == host]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _lowercase(headers: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], remote: FakeRemote
    ) -> None:
        self.remote = remote
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the tests read `FakeRemote.seen` instead."""

    @property
    def remote(self) -> FakeRemote:
        return self.server.remote

    def do_CONNECT(self) -> None:
        host = self.path.rsplit(":", 1)[0]
        self.remote.record(Seen(host, "CONNECT", self.path, _lowercase(self.headers)))
        if host not in DRIVE_HOSTS:
            self.remote.refused.append(host)
            self.send_error(403)
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        self.close_connection = True
        tunnel = self.remote.tls.wrap_socket(self.connection, server_side=True)
        try:
            _Handler(tunnel, self.client_address, self.server)  # serves the requests sent through the tunnel
        except OSError:
            pass  # the client dropped the tunnel
        finally:
            tunnel.close()

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def _dispatch(self, head: bool) -> None:
        host = (self.headers.get("Host") or "").split(":")[0]
        self.remote.record(Seen(host, self.command, self.path, _lowercase(self.headers)))
        url = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        if host == "drive.google.com" and url.path == "/uc":
            location = "https://drive.usercontent.google.com/download?" + urlencode(
                {"id": query.get("id", ""), "export": "download"}
            )
            self._reply(303, b"", {"Location": location})
        elif host == "drive.usercontent.google.com" and url.path == "/download":
            self._drive_download(query)
        elif host in DRIVE_HOSTS:
            self._html(404, "<html><body>Not Found</body></html>")
        else:
            self._hub(url.path, head)

    def _drive_download(self, query: dict[str, str]) -> None:
        file = self.remote.drive.get(query.get("id", ""))
        if file is None:
            self._html(404, "<html><body>Not Found</body></html>")
        elif file.status is not None:
            self._html(file.status, "<html><body>Error</body></html>")
        elif file.quota_exceeded:
            self._html(200, QUOTA_PAGE)
        elif file.redirect_loops:
            self._reply(302, b"", {"Location": self.path})
        elif file.confirm_loops or not self._confirmed(query):
            page = CONFIRM_PAGE.format(
                id=query["id"], name=file.name, size=len(file.data), uuid=self.remote.confirm_uuid
            )
            self._html(200, page)
        else:
            self._send_file(
                file, head=False, headers={"Content-Disposition": f'attachment; filename="{file.name}"'}
            )

    def _confirmed(self, query: dict[str, str]) -> bool:
        """Whether a download request carries the confirmation form's fields."""
        return query.get("confirm") == "t" and query.get("uuid") == self.remote.confirm_uuid

    def _hub(self, path: str, head: bool) -> None:
        match = re.fullmatch(r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<file>.+)", path)
        if match is None or not any(repo == match["repo"] for repo, _ in self.remote.hub):
            self._reply(404, b"Repository not found", {"X-Error-Code": "RepoNotFound"}, head=head)
            return
        revision = unquote(match["revision"])
        commit = revision if re.fullmatch(r"[0-9a-f]{40}", revision) else HUB_COMMIT
        file = self.remote.hub.get((match["repo"], unquote(match["file"])))
        if file is None:
            self._reply(
                404, b"Entry not found", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, head=head
            )
        elif file.status is not None:
            self._reply(file.status, b"Internal Error", {"X-Repo-Commit": commit}, head=head)
        else:
            linked = {
                "X-Repo-Commit": commit,
                "X-Linked-Etag": file.etag,
                "X-Linked-Size": str(len(file.data)),
            }
            self._send_file(file, head=head, headers=linked)

    def _send_file(self, file: FakeFile, head: bool, headers: dict[str, str]) -> None:
        data = file.data if file.truncate_to is None else file.data[: file.truncate_to]
        start, status = 0, 200
        ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if ranged and file.ranges and self.headers.get("If-Range", file.etag) == file.etag:
            start, status = int(ranged[1]), 206
            headers = {**headers, "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
        body = data[start:]
        cut = None
        if not head and file.interruptions and file.interrupt_at is not None and start < file.interrupt_at:
            file.interruptions -= 1
            cut = file.interrupt_at - start
        headers = {
            **headers,
            "ETag": file.etag,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        self._reply(status, body, headers, head=head, cut=cut)

    def _html(self, status: int, page: str) -> None:
        self._reply(status, page.encode(), {"Content-Type": "text/html; charset=utf-8"})

    def _reply(
        self, status: int, body: bytes, headers: dict[str, str], head: bool = False, cut: int | None = None
    ) -> None:
        """Send a response; `cut` drops the connection after that many body bytes (a broken transfer)."""
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if head:
            return
        try:
            self.wfile.write(body if cut is None else body[:cut])
            if cut is not None:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            self.close_connection = True  # the client hung up first (e.g. gdown reopening with a Range)


# --- isolation ----------------------------------------------------------------------------------------------


@dataclass
class Sandbox:
    home: Path
    hf_cache: Path
    blocked: list[str]


_INHERITED = (
    "DOCSAM_OFFLINE",
    "HF_HUB_OFFLINE",
    "HF_ENDPOINT",
    "HF_TOKEN",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
)


def make_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    for name in _INHERITED:
        monkeypatch.delenv(name, raising=False)
    sandbox = Sandbox(home=tmp_path / "docsam-home", hf_cache=tmp_path / "hf-cache", blocked=[])
    monkeypatch.setenv("DOCSAM_HOME", str(sandbox.home))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    # huggingface_hub reads these once, at import: point them at the sandbox for this test.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(sandbox.hf_cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(
        huggingface_hub.constants, "AGENT_HARNESSES_PATH", str(tmp_path / "agent-harnesses.json")
    )
    point_hub_constants_at(monkeypatch, CLOSED_PORT)
    # huggingface_hub retries failed requests for up to ~23 s; keep the retries, skip the waiting.
    for module in (huggingface_hub.utils._http, huggingface_hub.file_download):
        monkeypatch.setattr(module, "time", _NoWaiting())
    allow_loopback_only(monkeypatch, sandbox.blocked)
    return sandbox


class _NoWaiting:
    """The `time` module, except that `sleep` returns at once."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        del seconds


def point_hub_constants_at(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """What `HF_ENDPOINT=endpoint` at start-up would have set.

    Besides file URLs, huggingface_hub sends a best-effort look-up (`/api/agent-harnesses`) to its import-time
    endpoint while building request headers; by default the sandbox points it at a closed loopback port.
    """
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
    template = endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
