"""A fake Hugging Face Hub on 127.0.0.1, for tests that exercise huggingface_hub's real HTTP code.

It answers the routes ``hf_hub_download`` uses (HEAD/GET ``/{repo}/resolve/{revision}/{path}``, large files
redirected to a content-addressed ``/_lfs/...`` URL as the Hub does) and a minimal ``/api/models/{repo}``,
with the headers huggingface_hub 2.x reads: ``X-Repo-Commit``, ``ETag`` / ``X-Linked-Etag``,
``X-Linked-Size``, ``Content-Length``, ``Location`` and ``X-Error-Code`` for 404s.

    with FakeHub() as hub:
        hub.add_folder("org/name", "main", checkpoint_dir)
        hub.fail_status = 500          # answer every request with HTTP 500 (see fault_methods/fault_paths)
        hub.truncate_fraction = 0.5    # send only half of each GET body (Content-Length says so too)
        ...

Point huggingface_hub at it with the ``hub_env`` helper (or the ``fake_hub`` fixture in the tests that use
it): it patches ``huggingface_hub.constants`` (read at import time) and redirects every cache path into
a temporary folder. Extra routes (uploads, for ``push_to_hub`` tests) go through ``add_route``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import unquote, urlsplit

__all__ = ["FakeHub", "Response", "hub_env"]

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".npz")


@dataclass
class Response:
    """What a route answers. ``body`` is sent for GET only; HEAD gets the same headers."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


Route = Callable[["FakeHub", str, re.Match, dict[str, str], bytes], Response]
"""``route(hub, method, match, request_headers, request_body) -> Response``."""


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a file's content (the Hub's ETag for files not in LFS)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """A loopback HTTP server that serves repos of files by revision, like the Hugging Face Hub.

    Args:
        root_dir: optional folder laid out as ``<org>/<name>/<revision>/<path>``; its files are published
            at construction (``add_file``/``add_folder`` add more, in memory).

    Attributes:
        url: ``http://127.0.0.1:<port>`` (a free port picked by the OS).
        requests: ``(method, path)`` of every request answered, in order.
        fail_status: when set, requests matching ``fault_methods``/``fault_paths`` get this status.
        truncate_fraction: when set, GET bodies of matching file requests are cut to this fraction of
            their length (``Content-Length`` matches the cut body, so the client sees a short file).
        fault_methods: methods the faults apply to (default HEAD and GET).
        fault_paths: file paths the faults apply to (``None``: all).
    """

    def __init__(self, root_dir: str | os.PathLike | None = None) -> None:
        self._repos: dict[str, dict[str, dict[str, bytes]]] = {}
        self._lock = threading.Lock()
        self._routes: list[tuple[str, re.Pattern, Route]] = []
        self.requests: list[tuple[str, str]] = []
        self.fail_status: int | None = None
        self.truncate_fraction: float | None = None
        self.fault_methods: tuple[str, ...] = ("HEAD", "GET")
        self.fault_paths: set[str] | None = None
        if root_dir is not None:
            self._load_tree(Path(root_dir))
        self.add_route("HEAD|GET", r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$", _resolve)
        self.add_route("HEAD|GET", r"^/_lfs/(?P<repo>[^/]+/[^/]+)/(?P<commit>[0-9a-f]{40})/(?P<path>.+)$", _lfs)
        self.add_route("GET", r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$", _model_info)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.hub = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="FakeHub", daemon=True)
        self._thread.start()
        self._running = True

    # Publishing ---------------------------------------------------------------------------------------
    def add_file(self, repo: str, revision: str, path: str, data: bytes) -> str:
        """Publish ``data`` at ``path`` on branch/tag ``revision`` of ``repo``; returns the new commit hash."""
        with self._lock:
            self._repos.setdefault(repo, {}).setdefault(revision, {})[path] = bytes(data)
        return self.commit(repo, revision)

    def add_folder(self, repo: str, revision: str, folder: str | os.PathLike) -> str:
        """Publish every file under ``folder`` (relative paths kept); returns the commit hash."""
        folder = Path(folder)
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            self.add_file(repo, revision, file.relative_to(folder).as_posix(), file.read_bytes())
        return self.commit(repo, revision)

    def remove_file(self, repo: str, revision: str, path: str) -> None:
        with self._lock:
            del self._repos[repo][revision][path]

    def files(self, repo: str, revision: str) -> dict[str, bytes]:
        """A copy of the files of a revision (branch/tag name or commit hash)."""
        with self._lock:
            branch = self._branch(repo, revision)
            return dict(self._repos[repo][branch]) if branch else {}

    def commit(self, repo: str, revision: str) -> str:
        """The 40-hex commit hash a branch/tag currently points to (changes whenever its files change)."""
        with self._lock:
            return self._commit_unlocked(repo, revision)

    def add_route(self, methods: str, pattern: str, route: Route) -> None:
        """Answer ``methods`` (``"GET"``, ``"POST|PUT"``...) on paths matching ``pattern`` with ``route``.

        Routes added later take precedence, so tests can override the built-in ones.
        """
        self._routes.insert(0, (methods, re.compile(pattern), route))

    # Lifecycle ----------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop answering; later requests get "connection refused". Idempotent."""
        if self._running:
            self._running = False
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)

    def __enter__(self) -> "FakeHub":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # Internals ----------------------------------------------------------------------------------------
    def _load_tree(self, root: Path) -> None:
        for org in sorted(p for p in root.iterdir() if p.is_dir()):
            for name in sorted(p for p in org.iterdir() if p.is_dir()):
                for revision in sorted(p for p in name.iterdir() if p.is_dir()):
                    self.add_folder(f"{org.name}/{name.name}", revision.name, revision)

    def _branch(self, repo: str, revision: str) -> str | None:
        """Branch/tag name of ``revision`` (a name or a commit hash), ``None`` when unknown. Lock held."""
        branches = self._repos.get(repo, {})
        if revision in branches:
            return revision
        for branch in branches:
            if self._commit_unlocked(repo, branch) == revision:
                return branch
        return None

    def _commit_unlocked(self, repo: str, branch: str) -> str:
        files = self._repos[repo][branch]
        digest = hashlib.sha1(f"{repo}\0{branch}\0".encode())
        for path in sorted(files):
            digest.update(f"{path}\0{hashlib.sha256(files[path]).hexdigest()}\0".encode())
        return digest.hexdigest()

    def _faulty(self, method: str, path: str | None) -> bool:
        return method in self.fault_methods and (self.fault_paths is None or path in self.fault_paths)

    def _dispatch(self, method: str, url_path: str, headers: dict[str, str], body: bytes) -> Response:
        self.requests.append((method, url_path))
        for methods, pattern, route in self._routes:
            match = pattern.match(url_path)
            if match and method in methods.split("|"):
                path = match.groupdict().get("path")
                if self.fail_status is not None and self._faulty(method, path and unquote(path)):
                    return Response(self.fail_status, {"X-Error-Message": f"fake hub: HTTP {self.fail_status}"},
                                    b"Internal Server Error (fake hub)")
                return route(self, method, match, headers, body)
        return Response(404, {"X-Error-Message": "no such route"}, b"not found")


def _not_found(code: str, message: str, commit: str | None = None) -> Response:
    headers = {"X-Error-Code": code, "X-Error-Message": message}
    if commit:
        headers["X-Repo-Commit"] = commit
    return Response(404, headers, message.encode())


def _lookup(hub: FakeHub, repo: str, revision: str, path: str) -> tuple[Response | None, str, bytes]:
    """(error response or None, commit hash, file bytes)."""
    with hub._lock:
        if repo not in hub._repos:
            return _not_found("RepoNotFound", f"Repository {repo} not found"), "", b""
        branch = hub._branch(repo, revision)
    if branch is None:
        return _not_found("RevisionNotFound", f"Invalid rev id: {revision}"), "", b""
    commit = hub.commit(repo, branch)
    files = hub.files(repo, branch)
    if path not in files:
        return _not_found("EntryNotFound", f"{path} does not exist on {revision}", commit), commit, b""
    return None, commit, files[path]


def _file_response(hub: FakeHub, method: str, path: str, data: bytes, headers: dict[str, str]) -> Response:
    body = data
    if method == "GET" and hub.truncate_fraction is not None and hub._faulty("GET", path):
        body = data[: int(len(data) * hub.truncate_fraction)]
    headers = {**headers, "Content-Length": str(len(body) if method == "GET" else len(data)),
               "Accept-Ranges": "none", "Content-Type": "application/octet-stream"}
    return Response(200, headers, body)


def _resolve(hub: FakeHub, method: str, match: re.Match, headers: dict[str, str], body: bytes) -> Response:
    repo, revision, path = match["repo"], unquote(match["rev"]), unquote(match["path"])
    error, commit, data = _lookup(hub, repo, revision, path)
    if error is not None:
        return error
    if path.endswith(LFS_SUFFIXES):  # large files: metadata here, bytes behind a redirect, as on the Hub
        sha256 = hashlib.sha256(data).hexdigest()
        return Response(302, {
            "Location": f"/_lfs/{repo}/{commit}/{path}", "X-Repo-Commit": commit,
            "X-Linked-Etag": f'"{sha256}"', "X-Linked-Size": str(len(data)), "ETag": f'"{git_blob_sha1(data)}"',
            "Content-Length": "0",
        })
    return _file_response(hub, method, path, data, {"X-Repo-Commit": commit, "ETag": f'"{git_blob_sha1(data)}"'})


def _lfs(hub: FakeHub, method: str, match: re.Match, headers: dict[str, str], body: bytes) -> Response:
    repo, commit, path = match["repo"], match["commit"], unquote(match["path"])
    error, commit, data = _lookup(hub, repo, commit, path)
    if error is not None:
        return error
    sha256 = hashlib.sha256(data).hexdigest()
    return _file_response(hub, method, path, data, {"X-Repo-Commit": commit, "ETag": f'"{sha256}"'})


def _model_info(hub: FakeHub, method: str, match: re.Match, headers: dict[str, str], body: bytes) -> Response:
    repo, revision = match["repo"], unquote(match["rev"] or "main")
    with hub._lock:
        known = repo in hub._repos
        branch = hub._branch(repo, revision) if known else None
    if not known:
        return _not_found("RepoNotFound", f"Repository {repo} not found")
    if branch is None:
        return _not_found("RevisionNotFound", f"Invalid rev id: {revision}")
    files = hub.files(repo, branch)
    info = {"id": repo, "modelId": repo, "sha": hub.commit(repo, branch), "private": False,
            "siblings": [{"rfilename": p, "size": len(d)} for p, d in sorted(files.items())]}
    data = json.dumps(info).encode()
    return Response(200, {"Content-Type": "application/json", "Content-Length": str(len(data))}, data)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers after stop()

    def _answer(self) -> None:
        hub: FakeHub = self.server.hub  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        request_body = self.rfile.read(length) if length else b""
        response = hub._dispatch(self.command, urlsplit(self.path).path, dict(self.headers.items()), request_body)
        self.send_response(response.status)
        headers = dict(response.headers)
        headers.setdefault("Content-Length", str(len(response.body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD" and response.body:
            self.wfile.write(response.body)

    do_HEAD = do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - keep test output quiet
        pass


# Pointing huggingface_hub at the fake Hub -------------------------------------------------------------
def hub_env(monkeypatch, endpoint: str, hf_home: str | os.PathLike, offline: bool = False) -> Path:
    """Make huggingface_hub talk to ``endpoint`` and keep every file it writes under ``hf_home``.

    huggingface_hub reads its environment once, at import, into ``huggingface_hub.constants``; this
    patches those constants (endpoint, URL template, offline flag, and every path under the real
    ``HF_HOME``) as well as ``os.environ`` (for code that imports huggingface_hub later, e.g. a subprocess),
    and resets its shared HTTP client. Returns the hub cache folder (``<hf_home>/hub``).
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    hf_home = Path(hf_home)
    old_home = constants.HF_HOME
    for name in dir(constants):
        value = getattr(constants, name)
        if name.isupper() and isinstance(value, str) and value.startswith(old_home):
            monkeypatch.setattr(constants, name, str(hf_home) + value[len(old_home):])
    monkeypatch.setattr(constants, "HF_HOME", str(hf_home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    set_offline(monkeypatch, offline)
    for key, value in {"HF_ENDPOINT": endpoint, "HF_HOME": str(hf_home), "HF_HUB_CACHE": str(hf_home / "hub"),
                       "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}.items():
        monkeypatch.setenv(key, value)
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy", "HF_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", True, raising=False)
    _http.close_session()  # the shared client is rebuilt with the environment above
    return hf_home / "hub"


def set_offline(monkeypatch, offline: bool) -> None:
    """Switch huggingface_hub's offline mode (``HF_HUB_OFFLINE``) for the rest of the test."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
