"""What can go wrong with named weights; every message is one line meant for the user."""

from __future__ import annotations


class WeightsError(Exception):
    """A weights problem the user can act on; `str(error)` is a complete one-line explanation."""


class UnknownWeightsError(WeightsError):
    """Neither a registered name nor an existing file."""


class NotCachedError(WeightsError):
    """A registered name whose file is not in the cache (names the command that fetches it)."""


class CorruptCacheError(WeightsError):
    """A cached file whose size or sha256 no longer matches what was recorded when it was stored."""


class OfflineError(WeightsError):
    """A download was needed while offline mode forbids the network."""


class FetchError(WeightsError):
    """A download or registration failed; nothing was added to the cache."""


def describe(error: BaseException) -> str:
    """A short one-line reason for a client library's exception.

    The HTTP status when an HTTP response is anywhere in the exception chain, otherwise the innermost message:
    gdown, requests and huggingface_hub wrap the useful part ("Connection refused") in layers of context. A
    redirect's status is no reason: `requests` gives the last redirect's response with "Exceeded 30
    redirects."
    """
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    for link in chain:
        status = getattr(getattr(link, "response", None), "status_code", None)
        if isinstance(status, int) and not 300 <= status < 400:
            return f"HTTP {status}"
    for link in reversed(chain):
        text = " ".join(str(link).split())
        if text:
            return text if len(text) <= 200 else text[:197] + "..."
    return type(error).__name__
