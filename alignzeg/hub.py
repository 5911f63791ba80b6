"""Weight transport: where a checkpoint's ``config.json`` and weights file are, locally or on the Hub.

All Hub traffic goes through huggingface_hub (its cache, its offline mode, its endpoint setting), behind a
reachability probe that fails fast. This module finds and downloads files; it reads no tensor (that is
``alignzeg.state_dicts``) and builds no model (``alignzeg.checkpoint``). A pickle file is only returned
when the caller opts in.
"""

from __future__ import annotations

import logging
import os
import socket
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

from ._version import __version__
from .errors import WeightsError

logger = logging.getLogger(__name__)

__all__ = [
    "CONFIG_NAME", "WEIGHTS_NAME", "WeightsError", "hub_download", "resolve_checkpoint", "not_cached_message",
    "HUB_CONNECT_TIMEOUT", "HubUnreachable",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PICKLE_NAMES = ("pytorch_model.bin", "model.pt", "model.pth", "model.bin")

HUB_CONNECT_TIMEOUT = float(os.environ.get("ALIGNZEG_HUB_CONNECT_TIMEOUT", "3"))
"""Seconds the reachability probe waits for a TCP connection to the Hub (env ``ALIGNZEG_HUB_CONNECT_TIMEOUT``).

Before a download that may touch the network, alignzeg resolves the Hub's host name and opens one TCP
connection to it. A name that does not resolve, a refused connection or an unreachable network fails at
once (the cache is still used when it holds the file): these do not pass with waiting, so they are not
retried. A probe that times out, and everything after the probe (HTTP 5xx, 429, read timeouts), is left
to huggingface_hub's own bounded backoff: at most 5 retries, waits of 1, 2, 4, 8, 8 s, each attempt
bounded by ``HF_HUB_ETAG_TIMEOUT`` / ``HF_HUB_DOWNLOAD_TIMEOUT`` (10 s by default). The probe is skipped
when a proxy is configured (``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY``): only the proxy can reach the Hub then.
"""

# Reaching the Hub ---------------------------------------------------------------------------------------
def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


class HubUnreachable(Exception):
    """The Hub's host does not resolve or refuses connections, and the cache does not hold the file."""


def _proxy_configured() -> bool:
    return any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
                                                 "ALL_PROXY", "all_proxy"))


def hub_unreachable(endpoint: str, timeout: float | None = None) -> str | None:
    """Why ``endpoint`` cannot be reached now in a way that waiting will not fix, or ``None``.

    ``None`` also when the probe timed out (that can pass: huggingface_hub's backoff handles it) and when
    a proxy is configured. See ``HUB_CONNECT_TIMEOUT``.
    """
    if _proxy_configured():
        return None
    parts = urlsplit(endpoint)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    if not host:
        return None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        return f"its host name {host!r} does not resolve: {err}"
    errors = []
    for family, kind, proto, _, address in infos:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(HUB_CONNECT_TIMEOUT if timeout is None else timeout)
                sock.connect(address)
                return None
        except (socket.timeout, TimeoutError):
            return None  # may pass: leave it to huggingface_hub's bounded retries
        except OSError as err:  # refused, network or host unreachable
            where = f"{address[0]} port {address[1]}"  # type: ignore[str-bytes-safe]  # (host name, port)
            errors.append(f"{where}: {err.strerror or err}")
    return "connection failed (" + "; ".join(errors) + ")" if errors else None


def hub_download(repo_id: str, filename: str, *, revision: str | None = None, cache_dir: str | None = None,
                 local_files_only: bool = False) -> str:
    """``huggingface_hub.hf_hub_download`` (with alignzeg's user agent) that fails fast when the Hub cannot
    be reached at all: the cached copy is used if there is one, else ``HubUnreachable`` at once.

    huggingface_hub is imported here, not when alignzeg is imported.
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    download = partial(hf_hub_download, repo_id, filename, revision=revision, cache_dir=cache_dir,
                       library_name="alignzeg", library_version=__version__)
    if not local_files_only and not _offline():
        reason = hub_unreachable(constants.ENDPOINT)
        if reason is not None:
            try:
                return download(local_files_only=True)
            except LocalEntryNotFoundError:
                raise HubUnreachable(reason) from None
    return download(local_files_only=local_files_only)


def not_cached_message(what: str, repo_id: str, err: Exception, local_files_only: bool, fix: str) -> str:
    """The one message for a file that is not cached and cannot be downloaded now: what, why, and ``fix``."""
    why = "HF_HUB_OFFLINE=1 is set" if _offline() else (
        "local_files_only=True was given" if local_files_only else _unreachable_reason(err))
    return f"{what} is not in the local Hugging Face cache and {why}. {fix}"


def _unreachable_reason(err: Exception) -> str:
    """Why huggingface_hub fell back to a cache that did not have the file: HTTP status, bad endpoint, or network."""
    from huggingface_hub import constants
    from huggingface_hub.errors import FileMetadataError, HfHubHTTPError

    if isinstance(err, HubUnreachable):
        return f"the Hub at {constants.ENDPOINT} could not be reached: {err}"
    cause = err.__cause__
    response = getattr(cause, "response", None)
    if isinstance(cause, HfHubHTTPError) and response is not None:
        return (f"the Hub at {constants.ENDPOINT} answered HTTP {response.status_code}"
                + (" (a server error: try again later)" if response.status_code >= 500 else ""))
    if isinstance(cause, FileMetadataError):
        return f"the server at {constants.ENDPOINT} did not answer like a Hugging Face Hub (check HF_ENDPOINT): {cause}"
    detail = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
    return f"the Hub at {constants.ENDPOINT} could not be reached{detail}"


# Resolving where the files are ---------------------------------------------------------------------------
def _download(repo_id: str, filename: str, revision: str | None, cache_dir: str | None,
              local_files_only: bool) -> Path:
    from huggingface_hub.errors import (
        EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
    )

    try:
        return Path(hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir,
                                 local_files_only=local_files_only))
    except (LocalEntryNotFoundError, HubUnreachable) as err:
        what = f"{filename} of {repo_id!r}{f' (revision {revision!r})' if revision else ''}"
        raise WeightsError(not_cached_message(
            what, repo_id, err, local_files_only,
            f"Download it once with network access (`hf download {repo_id}`, or call from_pretrained online), "
            "or pass a local folder.")) from err
    except RepositoryNotFoundError as err:
        raise WeightsError(f"no repository {repo_id!r} on the Hub (or it is private: log in with `hf auth login`)") from err
    except RevisionNotFoundError as err:
        raise WeightsError(f"repository {repo_id!r} has no revision {revision!r}") from err
    except EntryNotFoundError as err:
        raise WeightsError(f"repository {repo_id!r} has no file {filename!r}") from err
    except HfHubHTTPError as err:
        raise WeightsError(f"downloading {filename} of {repo_id!r} failed: {err}") from err
    except OSError as err:  # broken connection, truncated body, disk errors
        raise WeightsError(
            f"downloading {filename} of {repo_id!r} failed (connection dropped, body truncated in transit, or a "
            f"disk error); nothing was cached, try again: {err}"
        ) from err


_URL_SCHEMES = ("http://", "https://", "ftp://", "s3://", "gs://", "hf://")


def refuse_url(value: str, what: str) -> None:
    """Raise ``ValueError`` for a URL where a local path (or repo id) belongs: alignzeg downloads nothing by URL."""
    if value.lower().startswith(_URL_SCHEMES):
        raise ValueError(f"{what} {value!r} is a URL; URLs are not supported, download it first and pass the local path")


def resolve_checkpoint(name_or_path: str | os.PathLike, revision: str | None = None, cache_dir: str | None = None,
                       local_files_only: bool = False, allow_pickle: bool = False) -> tuple[Path, Path]:
    """Find ``config.json`` and the weights file of a local folder or a Hub repo.

    Returns:
        (config path, weights path); the weights are ``model.safetensors``, or a pickle file only when
        ``allow_pickle`` is set and no safetensors file exists.
    """
    if isinstance(name_or_path, str):
        refuse_url(name_or_path, "from_pretrained:")
    elif not isinstance(name_or_path, os.PathLike):
        raise TypeError(f"name_or_path must be a folder path or a Hub repo id, got {type(name_or_path).__name__} "
                        f"{name_or_path!r}")
    path = Path(name_or_path)
    if path.is_dir():
        return path / CONFIG_NAME, _local_weights(path, allow_pickle)
    if path.exists():
        raise WeightsError(f"{str(path)!r} is a file; from_pretrained takes a folder or a Hub repo id")
    repo_id = str(name_or_path)
    from huggingface_hub.errors import HFValidationError

    try:
        config_path = _download(repo_id, CONFIG_NAME, revision, cache_dir, local_files_only)
    except HFValidationError as err:
        raise WeightsError(
            f"{repo_id!r} is neither an existing local folder nor a valid Hub repo id ('org/name')"
        ) from err
    return config_path, _download(repo_id, WEIGHTS_NAME, revision, cache_dir, local_files_only)


def _local_weights(folder: Path, allow_pickle: bool) -> Path:
    if not (folder / CONFIG_NAME).is_file():
        raise WeightsError(f"{str(folder)!r} has no {CONFIG_NAME}; is it a folder written by save_pretrained?")
    weights = folder / WEIGHTS_NAME
    if weights.is_file():
        return weights
    pickles = [folder / n for n in PICKLE_NAMES if (folder / n).is_file()]
    if pickles and allow_pickle:
        logger.warning("loading pickle checkpoint %s with torch.load(weights_only=True)", pickles[0])
        return pickles[0]
    if pickles:
        raise WeightsError(
            f"{str(folder)!r} holds a pickle checkpoint ({pickles[0].name}) but no {WEIGHTS_NAME}. Pickles can "
            "run code when loaded, so alignzeg refuses them by default; if you trust the file, pass "
            "allow_pickle=True (it is then read with torch.load(weights_only=True)), or convert it to safetensors."
        )
    raise WeightsError(f"{str(folder)!r} has no {WEIGHTS_NAME}")
