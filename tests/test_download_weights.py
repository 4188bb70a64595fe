"""`docsam download-weights` against loopback fakes of Google Drive and the hub (weights_fake_remote.py)."""

from __future__ import annotations

import errno
import fcntl
import importlib.util
import logging
import math
import os
import pwd
import shutil
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from rich.filesize import decimal
from safetensors.torch import load_file
from typer.testing import CliRunner
from weights_fake_remote import (
    FakeFile,
    FakeRemote,
    Sandbox,
    checkpoint,
    make_sandbox,
    point_hub_constants_at,
    pth_bytes,
    safetensors_bytes,
)

import docsam_cli.weights.cache
import docsam_cli.weights.drive
import docsam_cli.weights.hub
import docsam_cli.weights.install
import model.checkpoint
from docsam_cli.app import app
from docsam_cli.weights import resolve_weights
from docsam_cli.weights.errors import CorruptCacheError, NotCachedError
from model.checkpoint import archive_damage

BASE_ID = "1M7Zc63eBGTKjynkmQ-2sI3m2WBvzqMO4"  # docsam-base on Drive
M2F_BASE = "facebook/mask2former-swin-base-coco-panoptic"
M2F_LARGE = "facebook/mask2former-swin-large-coco-panoptic"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(autouse=True)
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    sandbox = make_sandbox(tmp_path, monkeypatch)
    yield sandbox
    assert not sandbox.blocked, f"the test tried to reach a remote host: {sandbox.blocked}"


@pytest.fixture
def remote(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRemote]:
    remote = FakeRemote(tmp_path)
    remote.route_clients_here(monkeypatch)
    yield remote
    remote.close()
    assert not remote.refused, f"the test tried to tunnel to a real host: {remote.refused}"


@pytest.fixture
def base_pth() -> bytes:
    return pth_bytes(checkpoint(width=128))


def download(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["download-weights", *args])
    return result.exit_code, result.stdout, result.stderr


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def cache_files(sandbox: Sandbox) -> list[str]:
    """Everything under the docsam cache except lock files."""
    return sorted(
        str(p.relative_to(sandbox.home))
        for p in sandbox.home.rglob("*")
        if p.is_file() and p.suffix != ".lock"
    )


def test_drive_download_passes_the_confirmation_page_converts_and_resolves(
    remote: FakeRemote, sandbox: Sandbox, base_pth: bytes
) -> None:
    remote.drive[BASE_ID] = FakeFile(base_pth, name="docsam_base_all_dataset.pth")

    code, _, stderr = download("docsam-base")

    assert code == 0, stderr
    assert "licence: no explicit licence" in stderr
    assert "━" not in stderr and "bytes" not in stderr  # no progress bar when stderr is no terminal
    downloads = [seen.path for seen in remote.requests_to("drive.usercontent.google.com")]
    assert any("confirm=" not in path for path in downloads), "the confirmation page was skipped"
    assert any(f"confirm=t&uuid={remote.confirm_uuid}" in path for path in downloads)
    resolved = resolve_weights("docsam-base")
    assert resolved.path.suffix == ".safetensors" and not resolved.keep_size
    stored = load_file(resolved.path)
    for key, tensor in checkpoint(width=128).items():
        assert torch.equal(stored[key], tensor)
    assert cache_files(sandbox) == [
        "weights/docsam-base/docsam-base.safetensors",
        "weights/docsam-base/record.json",
    ]


def test_a_download_waiting_for_another_ones_lock_says_so(
    remote: FakeRemote, sandbox: Sandbox, base_pth: bytes
) -> None:
    """A second `docsam download-weights docsam-base` while the first one downloads waited in silence, for
    as long as a 1.3 GB download takes: it looked hung."""
    remote.drive[BASE_ID] = FakeFile(base_pth, name="docsam_base_all_dataset.pth")
    lock = docsam_cli.weights.cache.lock_path("docsam-base")
    lock.parent.mkdir(parents=True, exist_ok=True)
    held = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(held, fcntl.LOCK_EX)  # as the first download's process holds it
    release = threading.Timer(1.0, fcntl.flock, args=(held, fcntl.LOCK_UN))
    release.start()
    try:
        code, _, stderr = download("docsam-base")
    finally:
        release.cancel()
        os.close(held)
    assert code == 0, stderr
    lines = stderr.splitlines()
    assert lines[0] == f"docsam-base: waiting for another download of these weights to finish (lock {lock})"
    assert any(line.startswith("docsam-base: stored ") for line in lines[1:]), stderr


def test_a_downloaded_pth_is_read_for_its_crc_checks_once(
    remote: FakeRemote, sandbox: Sandbox, base_pth: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """download-weights checked the .pth's CRC-32s, then its load checked them again: the whole 1.3 GB
    file was read one time more than needed."""
    remote.drive[BASE_ID] = FakeFile(base_pth, name="docsam_base_all_dataset.pth")
    checked: list[Path] = []

    def counted(path: Path) -> str | None:
        checked.append(path)
        return archive_damage(path)

    monkeypatch.setattr(model.checkpoint, "archive_damage", counted)
    monkeypatch.setattr(docsam_cli.weights.install, "archive_damage", counted)
    code, _, stderr = download("docsam-base")
    assert code == 0, stderr
    assert len(checked) == 1


def test_interrupted_drive_download_resumes_on_the_next_run(
    remote: FakeRemote, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(docsam_cli.weights.drive, "RETRIES", 0)  # fail at once instead of retrying in-process
    state = checkpoint(width=128, filler=400_000)  # 1.6 MB: more than one of gdown's 512 KiB chunks
    data = pth_bytes(state)
    remote.drive[BASE_ID] = FakeFile(
        data, name="docsam_base_all_dataset.pth", interrupt_at=700_000, interruptions=1
    )

    code, _, stderr = download("docsam-base")

    assert code == 1
    [line] = error_lines(stderr)
    assert "stopped after" in line and "again to resume" in line
    with pytest.raises(NotCachedError, match="docsam download-weights docsam-base"):
        resolve_weights("docsam-base")
    [partial] = (sandbox.home / "downloads" / "docsam-base").glob("*.part")
    received = partial.stat().st_size
    assert 0 < received < len(data)
    listing = download("--list")[1]
    assert "partial" in next(line for line in listing.splitlines() if line.startswith("docsam-base "))

    code, _, stderr = download("docsam-base")

    assert code == 0, stderr
    ranges = [seen.headers.get("range") for seen in remote.requests_to("drive.usercontent.google.com")]
    assert f"bytes={received}-" in ranges
    stored = load_file(resolve_weights("docsam-base").path)
    assert all(torch.equal(stored[key], tensor) for key, tensor in state.items())
    assert not (sandbox.home / "downloads" / "docsam-base").exists()


def _stop_while_storing(remote: FakeRemote, base_pth: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """Download docsam-base and stop the run (Ctrl-C) while it converts the finished download."""
    remote.drive[BASE_ID] = FakeFile(base_pth, name="docsam_base_all_dataset.pth")
    converting = docsam_cli.weights.install.write_safetensors

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(docsam_cli.weights.install, "write_safetensors", interrupted)
    assert download("docsam-base")[0] == 130
    monkeypatch.setattr(docsam_cli.weights.install, "write_safetensors", converting)


def _rerun_stores_the_kept_download_without_drive(remote: FakeRemote, sandbox: Sandbox) -> None:
    """Rerun `download-weights docsam-base` with Drive serving only its quota page: the download kept in
    staging is stored without a request, and the staging folder goes."""
    remote.drive[BASE_ID] = FakeFile(b"unused", quota_exceeded=True)
    remote.seen.clear()

    code, _, stderr = download("docsam-base")

    assert code == 0, stderr
    assert remote.seen == []
    stored = load_file(resolve_weights("docsam-base").path)
    assert all(torch.equal(stored[key], tensor) for key, tensor in checkpoint(width=128).items())
    assert not (sandbox.home / "downloads" / "docsam-base").exists()


def test_a_download_completed_before_its_storing_was_interrupted_is_stored_without_drive(
    remote: FakeRemote, sandbox: Sandbox, base_pth: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run stopped while it converted the finished download (Ctrl-C, the OOM killer: the conversion holds
    the weights twice in memory) left the whole file in the staging folder, yet the rerun asked Drive for it
    again, and failed when Drive answered with its quota page by then."""
    _stop_while_storing(remote, base_pth, monkeypatch)
    _rerun_stores_the_kept_download_without_drive(remote, sandbox)


def test_a_download_completed_before_its_storing_was_interrupted_is_stored_offline(
    remote: FakeRemote, sandbox: Sandbox, base_pth: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rerun stores such a finished download without Drive, but with DOCSAM_OFFLINE=1 (set because the
    network is gone) it said 'not in the cache ... was not downloaded', the whole file left in staging."""
    _stop_while_storing(remote, base_pth, monkeypatch)
    monkeypatch.setenv("DOCSAM_OFFLINE", "1")
    _rerun_stores_the_kept_download_without_drive(remote, sandbox)


def test_a_partial_download_the_server_will_not_resume_is_fetched_again_from_the_start(
    remote: FakeRemote, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server (or a proxy on the way) that answers every byte-range request with the whole file: each rerun
    failed on the kept partial file, naming a rerun as the remedy, for ever."""
    monkeypatch.setattr(docsam_cli.weights.drive, "RETRIES", 0)
    state = checkpoint(width=128, filler=400_000)
    remote.drive[BASE_ID] = FakeFile(
        pth_bytes(state),
        name="docsam_base_all_dataset.pth",
        interrupt_at=700_000,
        interruptions=1,
        ranges=False,
    )
    assert download("docsam-base")[0] == 1  # interrupted; the partial file waits

    code, _, stderr = download("docsam-base")

    assert code == 0, stderr
    stored = load_file(resolve_weights("docsam-base").path)
    assert all(torch.equal(stored[key], tensor) for key, tensor in state.items())
    assert not (sandbox.home / "downloads" / "docsam-base").exists()


def test_a_download_resumed_after_the_file_changed_on_drive_is_refused_then_fetched_afresh(
    remote: FakeRemote, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gdown resumes an earlier run's partial file against the file as Drive serves it now: a re-upload in
    between splices two files, which torch would load. The archive's CRC-32s catch it."""
    monkeypatch.setattr(docsam_cli.weights.drive, "RETRIES", 0)
    old = checkpoint(width=128, filler=400_000)
    remote.drive[BASE_ID] = FakeFile(
        pth_bytes(old), name="docsam_base_all_dataset.pth", interrupt_at=700_000, interruptions=1
    )
    assert download("docsam-base")[0] == 1  # interrupted; the partial file waits
    new = {key: tensor + 1000 for key, tensor in old.items()}  # same layout and size, other values
    remote.drive[BASE_ID] = FakeFile(pth_bytes(new), name="docsam_base_all_dataset.pth")

    code, _, stderr = download("docsam-base")

    assert code == 1
    [line] = error_lines(stderr)
    assert "docsam_base_all_dataset.pth is damaged (Bad CRC-32" in line and "nothing was stored" in line
    assert cache_files(sandbox) == []

    code, _, stderr = download("docsam-base")

    assert code == 0, stderr
    stored = load_file(resolve_weights("docsam-base").path)
    assert all(torch.equal(stored[key], tensor) for key, tensor in new.items())


@pytest.mark.parametrize("status", [403, 404, 500])
def test_a_drive_error_page_names_its_possible_causes_not_only_permissions(
    remote: FakeRemote, sandbox: Sandbox, status: int
) -> None:
    remote.drive[BASE_ID] = FakeFile(b"unused", status=status)

    code, _, stderr = download("docsam-base")

    assert code == 1
    [line] = error_lines(stderr)
    assert "Drive answered with a page instead of the file: a temporary Drive error" in line
    assert "gdown" not in line and "--from FILE docsam-base" in line
    assert cache_files(sandbox) == []


def test_drive_answering_its_confirmation_form_with_the_form_again_ends_in_an_error(
    remote: FakeRemote, sandbox: Sandbox, base_pth: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gdown follows Drive's confirmation pages until the file comes: a form leading back to itself (Drive
    changing its scheme) kept the command requesting it, many times a second, for ever."""
    monkeypatch.setattr(docsam_cli.weights.drive, "FIRST_BYTE_WITHIN", 2.0)
    remote.drive[BASE_ID] = FakeFile(base_pth, name="docsam_base_all_dataset.pth", confirm_loops=True)
    finished: list[tuple[int, str, str]] = []
    worker = threading.Thread(target=lambda: finished.append(download("docsam-base")), daemon=True)

    worker.start()
    worker.join(timeout=60)

    assert finished, "still following Drive's confirmation pages after a minute"
    code, _, stderr = finished[0]
    assert code == 1
    [line] = error_lines(stderr)
    assert "sent no byte of docsam_base_all_dataset.pth within" in line and "--from FILE docsam-base" in line
    assert cache_files(sandbox) == []


def test_a_drive_certificate_not_trusted_here_names_the_ca_bundle_setting(
    remote: FakeRemote, sandbox: Sandbox, base_pth: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a network that inspects HTTPS (it re-signs Drive's certificate with its own CA) the line said
    'cannot download ... ([SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local
    issuer certificate ...); check the network connection', which works, and named no way to trust it."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")  # the fake's throw-away CA, as an inspecting network's
    remote.drive[BASE_ID] = FakeFile(base_pth, name="docsam_base_all_dataset.pth")

    code, _, stderr = download("docsam-base")

    assert code == 1
    [line] = error_lines(stderr)
    assert line.startswith(
        "error: docsam-base: cannot download docsam_base_all_dataset.pth from Google Drive: its TLS "
        "certificate is not trusted here ("
    )
    assert line.endswith(
        "); on a network that inspects HTTPS, set REQUESTS_CA_BUNDLE to a file of the network's CA "
        "certificates, or copy the file in with `docsam download-weights --from FILE docsam-base`"
    )
    assert cache_files(sandbox) == []


def test_a_drive_redirect_loop_is_named_not_given_as_an_http_status(
    remote: FakeRemote, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A download redirected to itself (a sign-in or consent loop) failed as 'cannot download ... (HTTP 302)',
    a status that means the redirect, not why the download stopped."""
    monkeypatch.setattr(docsam_cli.weights.drive, "RETRIES", 0)
    remote.drive[BASE_ID] = FakeFile(b"unused", redirect_loops=True)

    code, _, stderr = download("docsam-base")

    assert code == 1
    [line] = error_lines(stderr)
    assert line.startswith(
        "error: docsam-base: cannot download docsam_base_all_dataset.pth from Google Drive (Exceeded 30 "
        "redirects.)"
    ), line
    assert cache_files(sandbox) == []


def test_drive_quota_page_is_one_clear_error_and_leaves_nothing(remote: FakeRemote, sandbox: Sandbox) -> None:
    remote.drive[BASE_ID] = FakeFile(b"unused", quota_exceeded=True)

    code, _, stderr = download("docsam-base")

    assert code == 1
    [line] = error_lines(stderr)
    assert "Too many users have viewed or downloaded this file recently" in line
    assert "--from FILE docsam-base" in line
    assert cache_files(sandbox) == []


def test_truncated_drive_file_is_rejected_and_not_cached(
    remote: FakeRemote, sandbox: Sandbox, base_pth: bytes
) -> None:
    remote.drive[BASE_ID] = FakeFile(
        base_pth, name="docsam_base_all_dataset.pth", truncate_to=len(base_pth) // 2
    )

    code, _, stderr = download("docsam-base")

    assert code == 1
    [line] = error_lines(stderr)
    assert "docsam_base_all_dataset.pth is damaged (cut off: " in line
    assert cache_files(sandbox) == []


def test_hub_download_resumes_an_interrupted_transfer_into_the_hf_cache(
    remote: FakeRemote, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 4096)  # else one 10 MB chunk is all
    data = safetensors_bytes(checkpoint(width=128, prefix="model."))
    remote.hub[(M2F_BASE, "model.safetensors")] = FakeFile(data, interrupt_at=len(data) // 2, interruptions=1)

    code, _, stderr = download("mask2former-swin-base-coco-panoptic")

    assert code == 0, stderr
    assert "licence: CC BY-NC 4.0" in stderr
    [resumed] = [seen.headers["range"] for seen in remote.requests_to("127.0.0.1") if "range" in seen.headers]
    assert 0 < int(resumed.removeprefix("bytes=").rstrip("-")) <= len(data) // 2
    resolved = resolve_weights("mask2former-swin-base-coco-panoptic")
    assert resolved.path.is_relative_to(sandbox.hf_cache) and resolved.path.read_bytes() == data


def test_hub_repository_without_safetensors_falls_back_to_the_pickle_and_converts(remote: FakeRemote) -> None:
    remote.hub[(M2F_LARGE, "pytorch_model.bin")] = FakeFile(pth_bytes(checkpoint(width=192, prefix="model.")))

    code, _, stderr = download("mask2former-swin-large-coco-panoptic")

    assert code == 0, stderr
    resolved = resolve_weights("mask2former-swin-large-coco-panoptic")
    assert resolved.path.name == "mask2former-swin-large-coco-panoptic.safetensors"
    assert load_file(resolved.path).keys() == checkpoint(width=192, prefix="model.").keys()


def test_hub_file_differing_from_the_published_sha256_is_refused(
    remote: FakeRemote, sandbox: Sandbox
) -> None:
    remote.hub[(MINILM, "model.safetensors")] = FakeFile(safetensors_bytes({"w": torch.zeros(3)}))

    code, _, stderr = download("all-minilm-l6-v2")

    assert code == 1
    [line] = error_lines(stderr)
    assert "not the published file" in line
    assert cache_files(sandbox) == []
    assert not list(sandbox.hf_cache.rglob("model.safetensors")), (
        "the bad copy stayed in the Hugging Face cache"
    )


@pytest.mark.parametrize(
    ("file", "expected"),
    [
        (FakeFile(b"x", status=500), "HTTP 500"),
        (
            FakeFile(safetensors_bytes(checkpoint(prefix="model.")), truncate_to=100),
            "Consistency check failed",
        ),
    ],
    ids=["http-error", "truncated"],
)
def test_hub_failures_are_one_line_and_leave_nothing(
    remote: FakeRemote, sandbox: Sandbox, file: FakeFile, expected: str
) -> None:
    remote.hub[(M2F_BASE, "model.safetensors")] = file

    code, _, stderr = download("mask2former-swin-base-coco-panoptic")

    assert code == 1
    [line] = error_lines(stderr)
    assert expected in line
    assert cache_files(sandbox) == []
    assert not list(sandbox.hf_cache.rglob("model.safetensors"))


def test_unreachable_network_is_reported_per_name(monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox) -> None:
    monkeypatch.setattr(docsam_cli.weights.drive, "RETRIES", 0)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: connection refused
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")

    code, _, stderr = download("docsam-base", "mask2former-swin-base-coco-panoptic")

    assert code == 1
    drive_line, hub_line = error_lines(stderr)
    assert drive_line.startswith(
        "error: docsam-base: cannot download docsam_base_all_dataset.pth from Google Drive"
    )
    assert hub_line.startswith("error: mask2former-swin-base-coco-panoptic: cannot get")
    assert cache_files(sandbox) == []


def test_a_socks_proxy_the_hub_client_cannot_use_names_the_package_it_needs(
    monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox
) -> None:
    """With ALL_PROXY naming a SOCKS proxy (an ssh -D tunnel), which the Drive downloads use, the hub's
    initialisations failed with 'downloading .../model.safetensors failed (No module named 'socksio')':
    huggingface_hub's HTTP client needs a package docsam does not install for it."""
    if importlib.util.find_spec("socksio") is not None:
        pytest.skip("socksio is installed here")
    monkeypatch.setenv("ALL_PROXY", "socks5://127.0.0.1:9")

    code, _, stderr = download("all-minilm-l6-v2")

    assert code == 1
    assert error_lines(stderr) == [
        "error: all-minilm-l6-v2: the proxy set (ALL_PROXY or HTTPS_PROXY) is a SOCKS proxy, which the "
        "Hugging Face client reaches only with the socksio package: install it (`pip install socksio`), or "
        "set an HTTP proxy"
    ]


@pytest.mark.parametrize(("verbosity", "shown"), [([], False), (["-vv"], True)])
def test_hub_retry_warnings_are_shown_only_from_vv(
    monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox, verbosity: list[str], shown: bool
) -> None:
    """Offline, huggingface_hub warned once per retry: a dozen raw lines before the one error line."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    retry_logger = logging.getLogger("huggingface_hub.utils._http")
    monkeypatch.setattr(logging.getLogger("huggingface_hub"), "level", logging.WARNING)

    code, _, _ = download(*verbosity, "all-minilm-l6-v2")

    assert code == 1
    assert retry_logger.isEnabledFor(logging.WARNING) is shown


def test_the_default_endpoints_are_never_contacted_from_tests(
    monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox
) -> None:
    """Without a fake in the way the clients aim at drive.google.com and huggingface.co: both are stopped."""
    monkeypatch.setattr(docsam_cli.weights.drive, "RETRIES", 0)
    point_hub_constants_at(monkeypatch, "https://huggingface.co")

    code, _, stderr = download("docsam-base", "all-minilm-l6-v2")

    assert code == 1 and len(error_lines(stderr)) == 2
    assert {"drive.google.com", "huggingface.co"} <= set(sandbox.blocked)
    sandbox.blocked.clear()


def test_corrupted_cache_file_is_detected_reported_and_fetched_again(
    remote: FakeRemote, sandbox: Sandbox, base_pth: bytes
) -> None:
    remote.drive[BASE_ID] = FakeFile(base_pth, name="docsam_base_all_dataset.pth")
    assert download("docsam-base")[0] == 0
    stored = resolve_weights("docsam-base").path
    corrupted = bytearray(stored.read_bytes())
    corrupted[-1] ^= 0xFF
    stored.write_bytes(bytes(corrupted))

    with pytest.raises(CorruptCacheError, match=r"corrupted .*docsam download-weights docsam-base"):
        resolve_weights("docsam-base")

    code, _, stderr = download("docsam-base")

    assert code == 0, stderr
    assert "corrupted or gone; fetching it again" in stderr
    assert resolve_weights("docsam-base").path == stored


def _no_space(state: object, target: Path, metadata: object = None) -> None:
    """A conversion that fills the disk half-way through its file."""
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    Path(target).write_bytes(b"half")
    raise OSError(errno.ENOSPC, "No space left on device", str(target))


def test_disk_full_leaves_no_converted_file_behind_but_keeps_the_download(
    remote: FakeRemote, sandbox: Sandbox, base_pth: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(docsam_cli.weights.install, "write_safetensors", _no_space)
    remote.drive[BASE_ID] = FakeFile(base_pth, name="docsam_base_all_dataset.pth")

    code, _, stderr = download("docsam-base")

    assert code == 1
    [line] = error_lines(stderr)
    kept = sandbox.home / "downloads" / "docsam-base" / "docsam_base_all_dataset.pth"
    assert "no space left" in line and f"the finished download is kept ({kept})" in line
    assert f"needs about {math.ceil(len(base_pth) / 1e6)} MB free there" in line
    assert "DOCSAM_HOME" in line and f"--from {kept} docsam-base" in line
    assert cache_files(sandbox) == ["downloads/docsam-base/docsam_base_all_dataset.pth"]
    assert kept.read_bytes() == base_pth
    listing = download("--list")[1]  # it showed as absent ("no"), as if nothing had been downloaded
    row = next(line for line in listing.splitlines() if line.startswith("docsam-base "))
    assert row.endswith(f"partial ({decimal(len(base_pth))})")


def test_a_failed_store_cleans_up_before_another_process_waiting_for_the_lock_stores(
    remote: FakeRemote, sandbox: Sandbox, base_pth: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that fails (a full disk while converting) removes its half-written file; it did so only once
    it had released the lock, by which time a process waiting for the lock was storing the same name: the
    removal took that one's freshly converted file, its record not yet written (so no intact copy was seen),
    and the other process then recorded a file that was gone. The clean-up is now done under the lock."""
    converted = docsam_cli.weights.cache.converted_path("docsam-base")
    another = b"another process's conversion, its record not yet written"

    class ThenAnotherProcess(docsam_cli.weights.install.FileLock):
        def release(self, force: bool = False) -> None:
            super().release(force)
            converted.write_bytes(another)  # the waiting process takes the lock and converts

    monkeypatch.setattr(docsam_cli.weights.install, "FileLock", ThenAnotherProcess)
    monkeypatch.setattr(docsam_cli.weights.install, "write_safetensors", _no_space)
    remote.drive[BASE_ID] = FakeFile(base_pth, name="docsam_base_all_dataset.pth")

    code, _, stderr = download("docsam-base")

    assert code == 1 and "no space left" in stderr
    assert converted.read_bytes() == another


def test_a_disk_too_full_for_the_lock_is_said_to_be_full(
    remote: FakeRemote, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first download on a full disk, with no room for the locks' folder: since the lock was taken outside
    the handling of a full disk, the line said 'cannot store the weights in DIR (...); make it a writable
    folder', for a folder that was writable. It says that the disk is full, as a full disk during the store
    does."""
    lock = docsam_cli.weights.cache.lock_path("docsam-base")

    class FullDisk(docsam_cli.weights.install.FileLock):
        def acquire(self, *args: object, **kwargs: object) -> None:
            raise OSError(errno.ENOSPC, "No space left on device", str(lock.parent))

    monkeypatch.setattr(docsam_cli.weights.install, "FileLock", FullDisk)

    code, _, stderr = download("docsam-base")

    assert code == 1
    assert error_lines(stderr) == [
        f"error: docsam-base: no space left on the device holding {lock.parent}; free some space or set "
        "DOCSAM_HOME to a larger disk, then run `docsam download-weights docsam-base`"
    ]


def test_the_rerun_after_a_full_disk_stores_the_kept_download_without_drive(
    remote: FakeRemote, sandbox: Sandbox, base_pth: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk that filled while the finished 1.3 GB download was converted took the download with it: the
    rerun, once the user had freed the space, downloaded it all again (or failed on Drive's quota page)."""
    converting = docsam_cli.weights.install.write_safetensors
    monkeypatch.setattr(docsam_cli.weights.install, "write_safetensors", _no_space)
    remote.drive[BASE_ID] = FakeFile(base_pth, name="docsam_base_all_dataset.pth")
    assert download("docsam-base")[0] == 1
    monkeypatch.setattr(docsam_cli.weights.install, "write_safetensors", converting)
    _rerun_stores_the_kept_download_without_drive(remote, sandbox)


def test_a_disk_that_fills_during_the_download_keeps_the_partial_file_for_the_rerun(
    remote: FakeRemote, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The full-disk handling deleted the `.part` file, so the rerun started the download over."""
    data = pth_bytes(checkpoint(width=128, filler=400_000))  # more than one of gdown's 512 KiB chunks
    remote.drive[BASE_ID] = FakeFile(data, name="docsam_base_all_dataset.pth")
    downloading = docsam_cli.weights.drive._gdown

    def filling(source: object, output: Path, report: object, cancel: threading.Event) -> None:
        def full_after_a_chunk(received: int, total: int | None) -> None:
            raise OSError(errno.ENOSPC, "No space left on device", str(output))

        downloading(source, output, full_after_a_chunk, cancel)

    monkeypatch.setattr(docsam_cli.weights.drive, "_gdown", filling)

    code, _, stderr = download("docsam-base")

    assert code == 1
    [line] = error_lines(stderr)
    [partial] = (sandbox.home / "downloads" / "docsam-base").glob("*.part")
    received = partial.stat().st_size
    assert 0 < received < len(data)
    assert "no space left" in line and f"stopped after {received} bytes, which are kept" in line
    assert "again to resume it" in line

    monkeypatch.setattr(docsam_cli.weights.drive, "_gdown", downloading)
    code, _, stderr = download("docsam-base")

    assert code == 0, stderr
    ranges = [seen.headers.get("range") for seen in remote.requests_to("drive.usercontent.google.com")]
    assert f"bytes={received}-" in ranges


def test_a_full_disk_under_the_hf_cache_names_that_cache_and_its_variable(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hub files go to the Hugging Face cache: the message named the docsam cache, which had room, and
    advised DOCSAM_HOME, which does not move them."""

    def no_space(*args: object, **kwargs: object) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")  # as huggingface_hub's write raises it

    monkeypatch.setattr(docsam_cli.weights.hub, "hf_hub_download", no_space)

    code, _, stderr = download("mask2former-swin-base-coco-panoptic")

    assert code == 1
    [line] = error_lines(stderr)
    assert f"no space left on the device holding the Hugging Face cache ({sandbox.hf_cache})" in line
    assert "HF_HUB_CACHE" in line and "DOCSAM_HOME" not in line
    assert cache_files(sandbox) == []


def test_a_user_without_a_home_is_told_to_give_the_hub_cache_a_folder(
    monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox
) -> None:
    """A container run under an arbitrary uid, HOME unset, DOCSAM_HOME set as docsam asks there: the hub's
    initialisations failed with 'downloading .../model.safetensors failed (Could not determine home
    directory.)', naming no variable that gives the Hugging Face cache its folder."""

    def unknown_user(uid: int) -> None:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.setattr(pwd, "getpwuid", unknown_user)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", "~/.cache/huggingface/hub")  # its default

    code, _, stderr = download("mask2former-swin-base-coco-panoptic")

    assert code == 1
    assert error_lines(stderr) == [
        "error: mask2former-swin-base-coco-panoptic: the Hugging Face cache has no folder "
        "(~/.cache/huggingface/hub): HOME is not set and this user has no home directory; set HF_HOME (or "
        "XDG_CACHE_HOME) to a folder"
    ]


def test_the_hubs_low_disk_warning_is_not_raw_output_on_stderr(
    remote: FakeRemote, monkeypatch: pytest.MonkeyPatch
) -> None:
    """huggingface_hub warns through Python's warnings when the cache's disk looks too small: its source
    file, line and `warnings.warn(` landed on stderr beside docsam's own lines."""
    data = safetensors_bytes(checkpoint(width=128))
    remote.hub[(M2F_BASE, "model.safetensors")] = FakeFile(data)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 10))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, stderr = download("mask2former-swin-base-coco-panoptic")

    assert code == 0, stderr
    assert [str(warning.message) for warning in caught if "disk space" in str(warning.message)] == []


@pytest.mark.parametrize("variable", ["DOCSAM_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_mode_never_touches_the_network(
    remote: FakeRemote, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "1")

    code, _, stderr = download("docsam-base", "mask2former-swin-base-coco-panoptic")

    assert code == 1
    drive_line, hub_line = error_lines(stderr)
    assert f"offline mode is on ({variable}=1)" in drive_line
    assert (
        "docsam_base_all_dataset.pth" in drive_line and "`docsam download-weights docsam-base`" in drive_line
    )
    assert "model.safetensors or pytorch_model.bin" in hub_line
    assert remote.seen == []
    assert cache_files(sandbox) == []


def test_offline_mode_adopts_a_copy_already_in_the_hf_cache(
    remote: FakeRemote, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = safetensors_bytes(checkpoint(width=128, prefix="model."))
    remote.hub[(M2F_BASE, "model.safetensors")] = FakeFile(data)
    assert download("mask2former-swin-base-coco-panoptic")[0] == 0
    docsam_cli.weights.cache.remove_entry(
        "mask2former-swin-base-coco-panoptic"
    )  # only the HF cache has it now
    remote.seen.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    code, _, stderr = download("mask2former-swin-base-coco-panoptic")

    assert code == 0, stderr
    assert "found in the Hugging Face cache" in stderr
    assert remote.seen == []
    assert resolve_weights("mask2former-swin-base-coco-panoptic").path.read_bytes() == data


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--list", "docsam-base"], "error: --list takes no names or other options"),
        (["--list", "--all"], "error: --list takes no names or other options"),
        (["--from", "x.pth"], "error: --from FILE takes exactly one NAME"),
        (["--from", "x.pth", "--all", "docsam-base"], "error: --from FILE takes exactly one NAME"),
        (
            ["--from", "https://example.org/w.pth", "docsam-base"],
            "error: --from https://example.org/w.pth: a URL; --from takes a file on this machine: download "
            "it first (a browser, curl), then give its path",
        ),
        (["--all", "docsam-base"], "error: --all takes no names"),
        ([], "error: name the weights to download, or use --all or --list"),
    ],
    ids=["list-name", "list-all", "from-no-name", "from-all", "from-url", "all-name", "nothing"],
)
def test_options_that_do_not_go_together_are_one_usage_error(args: list[str], line: str) -> None:
    code, stdout, stderr = download(*args)
    assert code == 2 and stdout == "" and error_lines(stderr) == [line]


def test_an_unknown_name_is_a_usage_error_listing_the_known_ones() -> None:
    code, _, stderr = download("docsam-bogus")
    (line,) = error_lines(stderr)
    assert code == 2 and line.startswith("error: docsam-bogus: unknown weights name (known: docsam-base, ")


def test_list_shows_names_sizes_licences_and_what_is_cached(remote: FakeRemote, base_pth: bytes) -> None:
    remote.drive[BASE_ID] = FakeFile(base_pth, name="docsam_base_all_dataset.pth")
    assert download("docsam-base")[0] == 0

    code, stdout, _ = download("--list")

    assert code == 0
    rows = {
        line.split()[0]: line
        for line in stdout.splitlines()
        if line.startswith(("docsam", "mask2former", "all-"))
    }
    assert len(rows) == 11
    assert rows["docsam-base"].split()[-1] == "yes"
    assert rows["docsam-large"].split()[-1] == "no" and "~1.3 GB" in rows["docsam-large"]
    assert "CC BY-NC 4.0" in rows["mask2former-swin-large-coco-panoptic"]
    assert "no explicit licence" in rows["docsam-large-keepsize"]
    assert "90.9 MB" in rows["all-minilm-l6-v2"]
    assert "CC BY-NC 4.0 (non-commercial use only)" in stdout and "no explicit licence" in stdout


def test_segment_finds_downloaded_weights_by_name(
    remote: FakeRemote, sandbox: Sandbox, base_pth: bytes, tmp_path: Path, reference_fixtures: Path
) -> None:
    remote.drive[BASE_ID] = FakeFile(base_pth, name="docsam_base_all_dataset.pth")
    assert download("docsam-base")[0] == 0
    cached = resolve_weights("docsam-base").path
    page = str(reference_fixtures / "tiny-e2e-page.png")
    result = CliRunner().invoke(
        app, ["segment", page, "--weights", "docsam-base", "--out", str(tmp_path / "out")]
    )
    # The name resolved through the verified cache to the converted file; the stand-in checkpoint holds only
    # a few tensors, so the strict loader then refuses it, naming that file and what is missing.
    assert result.exit_code == 2  # nothing was processed
    assert f"error: {cached}: does not fit the model (missing:" in " ".join(result.stderr.split())
    assert not remote.refused and not sandbox.blocked
