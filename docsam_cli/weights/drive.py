"""Downloading a public Google Drive file with gdown.

gdown walks Drive's large-file confirmation page, resumes from the partial file it keeps beside the output,
and reports Drive's own error pages (quota exceeded, no access). It talks to drive.google.com through
`requests`, so the usual `HTTPS_PROXY` and `REQUESTS_CA_BUNDLE` settings apply (the tests use them to reach a
loopback fake of Drive).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import gdown
import requests
from gdown.exceptions import DownloadCancelled, DownloadError, FileURLRetrievalError

from docsam_cli.weights.cache import staging_dir
from docsam_cli.weights.errors import FetchError, describe
from docsam_cli.weights.progress import TransferBar
from docsam_cli.weights.registry import DriveSource

RETRIES = 3
"""Transient failures gdown retries (resuming) within one run; then the partial file waits for a rerun."""

TIMEOUT = (30.0, 120.0)
"""Seconds to connect, and to wait between bytes, before a stalled transfer counts as failed."""

FIRST_BYTE_WITHIN = 900.0
"""Seconds from the start to the file's first byte. gdown follows Drive's confirmation pages until the file
comes (three requests, each bounded by `TIMEOUT`): one that leads back to itself would loop for ever."""


def finished_drive_file(name: str, source: DriveSource) -> Path | None:
    """The whole file an earlier run downloaded into the entry's staging folder (gdown gives it its name only
    once complete) and was stopped before storing it; None when there is none."""
    output = staging_dir(name) / source.filename
    return output if output.is_file() else None


def fetch_drive_file(name: str, source: DriveSource, bar: TransferBar) -> Path:
    """Download `source` into the entry's staging folder and return the complete file.

    The size is checked against the length Drive announced; a partial file stays behind for the next run,
    except one the server will not resume, which is replaced by a download from the start at once. A file an
    earlier run finished but was stopped while storing (`finished_drive_file`) is returned without asking
    Drive again, which may answer with its quota page by then; storing checks it as any.
    """
    finished = finished_drive_file(name, source)
    if finished is not None:
        return finished
    folder = staging_dir(name)
    folder.mkdir(parents=True, exist_ok=True)
    output = folder / source.filename
    announced: dict[str, int] = {}
    cancel = threading.Event()
    deadline = threading.Timer(FIRST_BYTE_WITHIN, cancel.set)
    deadline.daemon = True

    def report(received: int, total: int | None) -> None:
        deadline.cancel()
        if total is not None:
            announced["total"] = total
        bar.report(received, total)

    deadline.start()
    try:
        try:
            _gdown(source, output, report, cancel)
        except DownloadError as error:
            if _RANGE_REFUSED not in str(error):
                raise
            for part in _partial_files(folder, source):  # never resumable: kept, it failed every rerun
                part.unlink()
            _gdown(source, output, report, cancel)
    except DownloadCancelled as error:
        raise FetchError(
            f"{name}: Google Drive sent no byte of {source.filename} within {FIRST_BYTE_WITHIN:.0f} s (it "
            f"kept answering with pages instead); try again later, or download it in a browser from "
            f"{source.url}, then run `docsam download-weights --from FILE {name}`"
        ) from error
    except FileURLRetrievalError as error:
        raise FetchError(
            f"{name}: Google Drive did not hand out {source.filename} ({_drive_reason(error)}); download it "
            f"in a browser from {source.url}, then run `docsam download-weights --from FILE {name}`"
        ) from error
    except (DownloadError, requests.RequestException) as error:
        raise FetchError(_transfer_failure(name, source, folder, error)) from error
    finally:
        deadline.cancel()

    size = output.stat().st_size
    if "total" in announced and size != announced["total"]:
        output.unlink()
        raise FetchError(
            f"{name}: {source.filename} is truncated ({size} of {announced['total']} bytes); "
            f"run `docsam download-weights {name}` again"
        )
    return output


def _gdown(
    source: DriveSource, output: Path, report: Callable[[int, int | None], None], cancel: threading.Event
) -> None:
    """gdown's download of `source` to `output`, resuming from a partial file beside it; `cancel` stops it."""
    gdown.download(
        id=source.file_id,
        output=str(output),
        quiet=True,
        resume=True,
        use_cookies=False,
        progress=report,
        timeout=TIMEOUT,
        retries=RETRIES,
        cancel=cancel,
    )


def _partial_files(folder: Path, source: DriveSource) -> list[Path]:
    """gdown's partial files of `source` (its file name, random letters, `.part`)."""
    return list(folder.glob(f"{source.filename}*.part"))


_RANGE_REFUSED = "did not honor the requested byte range"
"""gdown's words when a resume was answered with anything but the rest of the file: the whole file (a server
or proxy that drops `Range`) or an error page; the partial file cannot be resumed then, only replaced."""

_UNTRUSTED = "CERTIFICATE_VERIFY_FAILED"
"""OpenSSL's words for a server certificate no trusted authority signed: Drive's own, re-signed by a network
that inspects HTTPS (common in institutions), unless its CA certificate is given to `requests`."""

_NO_LINK = "Cannot retrieve the public link"
"""How gdown's message starts when Drive answered with a page it cannot read: a sign-in or error page."""


def _drive_reason(error: FileURLRetrievalError) -> str:
    """Drive's own words (e.g. its quota message); gdown re-raises them wrapped in a long multi-line hint.

    When Drive gave no words of its own, gdown guesses at sharing permissions; Drive's temporary errors
    (HTTP 5xx) and its download quota end the same way, so all three are named.
    """
    original = error.__context__ if isinstance(error.__context__, FileURLRetrievalError) else error
    reason = describe(original)
    if reason.startswith(_NO_LINK):
        return (
            "Drive answered with a page instead of the file: a temporary Drive error (try again later), its "
            "download quota for the file, or the file is no longer shared publicly"
        )
    return reason


def _transfer_failure(name: str, source: DriveSource, folder: Path, error: Exception) -> str:
    if isinstance(error, requests.exceptions.SSLError) and _UNTRUSTED in str(error):
        return (
            f"{name}: cannot download {source.filename} from Google Drive: its TLS certificate is not "
            f"trusted here ({describe(error)}); on a network that inspects HTTPS, set REQUESTS_CA_BUNDLE to "
            f"a file of the network's CA certificates, or copy the file in with `docsam download-weights "
            f"--from FILE {name}`"
        )
    received = sum(part.stat().st_size for part in _partial_files(folder, source))
    if received:
        return (
            f"{name}: the download of {source.filename} stopped after {received} bytes ({describe(error)}); "
            f"run `docsam download-weights {name}` again to resume it"
        )
    return (
        f"{name}: cannot download {source.filename} from Google Drive ({describe(error)}); check the network "
        f"connection, or copy the file in with `docsam download-weights --from FILE {name}`"
    )
