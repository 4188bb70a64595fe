"""Downloading a file from the Hugging Face hub with huggingface_hub, into the Hugging Face cache.

huggingface_hub keeps its own variables in charge: `HF_HOME` / `HF_HUB_CACHE` (where files go, shared with
transformers), `HF_TOKEN`, `HF_HUB_DOWNLOAD_TIMEOUT`. `HF_ENDPOINT` is also read here on every call, not only
once at import, so a mirror set after start-up is honoured.
"""

from __future__ import annotations

import errno
import logging
import os
import warnings
from pathlib import Path

import huggingface_hub.constants
from huggingface_hub import hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError

from docsam_cli.user_paths import home_folder
from docsam_cli.weights.errors import FetchError, describe
from docsam_cli.weights.progress import TransferBar
from docsam_cli.weights.registry import HubSource


def fetch_hub_file(name: str, source: HubSource, bar: TransferBar, *, force: bool) -> Path:
    """Download the first of `source.filenames` the repository has; `force` replaces a cached copy."""
    cache = huggingface_hub.constants.HF_HUB_CACHE
    if cache.startswith("~") and home_folder() is None:  # huggingface_hub's default, where there is no home
        raise FetchError(
            f"{name}: the Hugging Face cache has no folder ({cache}): HOME is not set and this user has no "
            "home directory; set HF_HOME (or XDG_CACHE_HOME) to a folder"
        )
    _quiet_hub_retries()
    endpoint = os.environ.get("HF_ENDPOINT") or None
    for filename in source.filenames:
        try:
            return Path(
                hf_hub_download(
                    source.repo_id,
                    filename,
                    revision=source.revision,
                    endpoint=endpoint,
                    force_download=force,
                    tqdm_class=bar.tqdm_class,  # type: ignore[arg-type]  # any tqdm-like callable is accepted
                )
            )
        except RemoteEntryNotFoundError:
            continue
        except LocalEntryNotFoundError as error:
            raise FetchError(
                f"{name}: cannot get {source.repo_id} from the Hugging Face hub ({describe(error)}); check "
                f"the network connection and HF_ENDPOINT, or copy the file in with "
                f"`docsam download-weights --from FILE {name}`"
            ) from error
        # huggingface_hub raises OSError subclasses, ValueError (a forced download whose metadata request
        # failed) and, once its own retries are spent, the transport errors of the HTTP client it is built on.
        except Exception as error:
            if isinstance(error, OSError) and error.errno == errno.ENOSPC:
                raise FetchError(
                    f"{name}: no space left on the device holding the Hugging Face cache "
                    f"({huggingface_hub.constants.HF_HUB_CACHE}); free some space or set HF_HUB_CACHE (or "
                    f"HF_HOME) to a larger disk, then run `docsam download-weights {name}`"
                ) from error
            if isinstance(error, ImportError) and "socksio" in str(error):  # its HTTP client's SOCKS extra
                raise FetchError(
                    f"{name}: the proxy set (ALL_PROXY or HTTPS_PROXY) is a SOCKS proxy, which the Hugging "
                    "Face client reaches only with the socksio package: install it (`pip install socksio`), "
                    "or set an HTTP proxy"
                ) from error
            raise FetchError(
                f"{name}: downloading {source.repo_id}/{filename} failed ({describe(error)})"
            ) from error
    raise FetchError(
        f"{name}: {source.repo_id} has none of {', '.join(source.filenames)} at revision {source.revision}"
    )


def _quiet_hub_retries() -> None:
    """huggingface_hub logs every retry of a failed request as a warning: offline, a dozen raw lines on
    stderr before the one error line that reports the outcome. They are shown from `-vv` on only.

    So is its Python warning that the cache's disk looks too small for the file (two raw lines, its source
    file and line, before the download fails with the one line naming that disk); installed on every call,
    as `docsam_cli.inputs.images` installs Pillow's (whoever restores the warning filters drops it)."""
    debugging = logging.getLogger(__package__).isEnabledFor(logging.DEBUG)
    logging.getLogger("huggingface_hub").setLevel(logging.NOTSET if debugging else logging.ERROR)
    if not debugging:
        warnings.filterwarnings("ignore", "Not enough free disk space to download the file", UserWarning)


def find_in_hf_cache(source: HubSource) -> Path | None:
    """A copy already in the Hugging Face cache (e.g. fetched by transformers), found without any network."""
    for filename in source.filenames:
        cached = try_to_load_from_cache(source.repo_id, filename, revision=source.revision)
        if isinstance(cached, str):
            return Path(cached)
    return None
