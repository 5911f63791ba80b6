"""from_pretrained("org/name") over real HTTP, against a loopback fake Hub (tests/hub_server.py).

huggingface_hub's own download code runs unmodified: HEAD for metadata, redirects for large files, GET,
its cache layout, its offline mode. Only its backoff sleeps are skipped where a test provokes retries.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from alignzeg import AlignZegSegmenter
from alignzeg.hub import WeightsError

from hub_server import FakeHub, hub_env, set_offline

REPO = "org/tiny"
VOCAB = ["person", "sofa", "tvmonitor"]


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and mtime (empty when the folder does not exist)."""
    if not folder.exists():
        return {}
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def image(voc):
    return voc["rgb"][::4, ::4].copy()


@pytest.fixture
def real_hf_home():
    """The HF_HOME this process would write to without the fake-hub patching, with its file listing."""
    from huggingface_hub import constants

    home = Path(constants.HF_HOME)
    return home, _tree(home)


@pytest.fixture
def hub(real_hf_home, tiny_checkpoint):
    with FakeHub() as server:
        server.add_folder(REPO, "main", tiny_checkpoint)
        yield server


@pytest.fixture
def cache(monkeypatch, tmp_path, hub, real_hf_home) -> Path:
    cache_dir = hub_env(monkeypatch, hub.url, tmp_path / "hf_home")
    yield cache_dir
    home, before = real_hf_home
    assert _tree(home) == before, f"files were written under the real HF_HOME {home}"


@pytest.fixture
def no_backoff(monkeypatch):
    """Skip huggingface_hub's retry sleeps (1 + 2 + 4 + 8 + 8 s) without touching the global time module."""
    from huggingface_hub.utils import _http

    class _Clock:
        def __getattr__(self, name):
            return getattr(time, name)

        @staticmethod
        def sleep(seconds: float) -> None:
            pass

    monkeypatch.setattr(_http, "time", _Clock())


@pytest.fixture(scope="module")
def other_checkpoint(tmp_path_factory, tiny_segmenter):
    """A tiny checkpoint with different (seed 1) weights, for a second revision."""
    path = tmp_path_factory.mktemp("tiny_seed1")
    seen = tiny_segmenter.config.seen_classes
    AlignZegSegmenter.from_preset("tiny", seen_classes=seen, seed=1).save_pretrained(path)
    return path


def _same_weights(a: AlignZegSegmenter, b: AlignZegSegmenter) -> bool:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# Download and cache -----------------------------------------------------------------------------------
def test_first_download_matches_the_local_folder_bit_for_bit(hub, cache, tiny_checkpoint, image):
    remote = AlignZegSegmenter.from_pretrained(REPO, device="cpu")  # default cache_dir: the patched one
    local = AlignZegSegmenter.from_pretrained(tiny_checkpoint, device="cpu")
    assert _same_weights(remote, local)
    a, b = remote.segment(image, VOCAB, bias_correction=False), local.segment(image, VOCAB, bias_correction=False)
    np.testing.assert_array_equal(a.class_probs, b.class_probs)
    np.testing.assert_array_equal(a.label_map, b.label_map)

    commit = hub.commit(REPO, "main")
    lfs = f"/_lfs/{REPO}/{commit}/model.safetensors"
    assert ("HEAD", f"/{REPO}/resolve/main/model.safetensors") in hub.requests
    assert ("HEAD", lfs) in hub.requests and ("GET", lfs) in hub.requests  # the redirect was followed
    assert ("GET", f"/{REPO}/resolve/main/config.json") in hub.requests
    snapshot = cache / "models--org--tiny" / "snapshots" / commit
    assert (snapshot / "model.safetensors").read_bytes() == (tiny_checkpoint / "model.safetensors").read_bytes()
    assert (cache / "models--org--tiny" / "refs" / "main").read_text() == commit


def test_cache_hit_with_the_server_stopped(hub, cache, image):
    first = AlignZegSegmenter.from_pretrained(REPO)
    hub.stop()
    second = AlignZegSegmenter.from_pretrained(REPO)  # HEAD is refused; the cached snapshot is used
    assert _same_weights(first, second)
    np.testing.assert_array_equal(first.segment(image, VOCAB, bias_correction=False).class_probs,
                                  second.segment(image, VOCAB, bias_correction=False).class_probs)


def test_explicit_cache_dir_is_used(hub, cache, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    AlignZegSegmenter.from_pretrained(REPO, cache_dir=str(elsewhere))
    assert (elsewhere / "models--org--tiny" / "refs" / "main").is_file()
    assert not (cache / "models--org--tiny").exists()


# Revisions ----------------------------------------------------------------------------------------------
def test_revision_pinning(hub, cache, other_checkpoint, tiny_checkpoint, monkeypatch):
    v1 = hub.add_folder(REPO, "v1", other_checkpoint)
    main = AlignZegSegmenter.from_pretrained(REPO)
    pinned = AlignZegSegmenter.from_pretrained(REPO, revision="v1")
    by_commit = AlignZegSegmenter.from_pretrained(REPO, revision=v1)
    assert _same_weights(main, AlignZegSegmenter.from_pretrained(tiny_checkpoint))
    assert _same_weights(pinned, AlignZegSegmenter.from_pretrained(other_checkpoint))
    assert _same_weights(pinned, by_commit)
    assert not _same_weights(main, pinned)
    assert (cache / "models--org--tiny" / "refs" / "v1").read_text() == v1

    hub.stop()  # both revisions now come from the cache, by name
    set_offline(monkeypatch, True)
    assert _same_weights(AlignZegSegmenter.from_pretrained(REPO, revision="v1"), pinned)
    assert _same_weights(AlignZegSegmenter.from_pretrained(REPO), main)


def test_unknown_revision_repo_and_file(hub, cache, tmp_path):
    with pytest.raises(WeightsError, match="repository 'org/tiny' has no revision 'v9'"):
        AlignZegSegmenter.from_pretrained(REPO, revision="v9")
    with pytest.raises(WeightsError, match="no repository 'org/missing' on the Hub"):
        AlignZegSegmenter.from_pretrained("org/missing")
    hub.add_file("org/config-only", "main", "config.json", b"{}")
    with pytest.raises(WeightsError, match="repository 'org/config-only' has no file 'model.safetensors'"):
        AlignZegSegmenter.from_pretrained("org/config-only")


# Server faults ------------------------------------------------------------------------------------------
def test_http_500_on_metadata_is_reported(hub, cache, no_backoff):
    hub.fail_status = 500
    with pytest.raises(WeightsError, match=r"config.json of 'org/tiny' is not in the local Hugging Face cache and "
                                           rf"the Hub at {hub.url} answered HTTP 500 \(a server error"):
        AlignZegSegmenter.from_pretrained(REPO)
    assert not (cache / "models--org--tiny" / "snapshots").exists()


def test_http_500_on_download_is_reported(hub, cache):
    hub.fail_status, hub.fault_methods, hub.fault_paths = 500, ("GET",), {"model.safetensors"}
    with pytest.raises(WeightsError, match=r"downloading model.safetensors of 'org/tiny' failed: .*500"):
        AlignZegSegmenter.from_pretrained(REPO)
    blobs = cache / "models--org--tiny" / "blobs"
    assert not [p for p in blobs.iterdir() if p.stat().st_size > 100_000]  # no partial weights kept


def test_truncated_body_is_reported_and_not_cached(hub, cache):
    hub.truncate_fraction, hub.fault_paths = 0.5, {"model.safetensors"}
    with pytest.raises(WeightsError, match=r"downloading model.safetensors of 'org/tiny' failed \(connection "
                                           r"dropped, body truncated.*nothing was cached.*Consistency check failed"):
        AlignZegSegmenter.from_pretrained(REPO)
    assert not list((cache / "models--org--tiny").rglob("*model.safetensors*"))
    assert not list((cache / "models--org--tiny").rglob("*.incomplete"))
    hub.truncate_fraction = None  # the next attempt succeeds
    AlignZegSegmenter.from_pretrained(REPO)


def test_damaged_file_on_the_hub_is_reported_with_its_cache_path(hub, cache, tiny_checkpoint):
    data = (tiny_checkpoint / "model.safetensors").read_bytes()
    hub.add_file("org/damaged", "main", "config.json", (tiny_checkpoint / "config.json").read_bytes())
    hub.add_file("org/damaged", "main", "model.safetensors", data[: len(data) // 3])
    with pytest.raises(WeightsError, match=r"models--org--damaged.*is not a readable safetensors file "
                                           r"\(truncated or corrupt download\?\).*Delete it and download again"):
        AlignZegSegmenter.from_pretrained("org/damaged")


def test_unreachable_hub_without_cache_is_reported(hub, cache, no_backoff):
    hub.stop()
    port = hub.url.rsplit(":", 1)[1]
    with pytest.raises(WeightsError, match=rf"not in the local Hugging Face cache and the Hub at {hub.url} "
                                           rf"could not be reached: connection failed \(127.0.0.1 port {port}: "
                                           r"Connection refused\)"):
        AlignZegSegmenter.from_pretrained(REPO)


def test_refused_connection_fails_within_seconds_without_retries(hub, cache):
    # No no_backoff here: huggingface_hub would sleep 1 + 2 + 4 + 8 + 8 s between retries of a refused
    # connection; a closed port does not open by waiting, so alignzeg does not retry it. Generous bound:
    # a behaviour check, not a benchmark.
    hub.stop()
    start = time.perf_counter()
    with pytest.raises(WeightsError, match="could not be reached: connection failed"):
        AlignZegSegmenter.from_pretrained(REPO)
    assert time.perf_counter() - start < 10.0
    assert hub.requests == []


def test_endpoint_that_is_not_a_hub_is_reported(hub, cache, no_backoff):
    from hub_server import Response

    hub.add_route("HEAD|GET", r"^/org/tiny/resolve/", lambda *args: Response(200, {}, b"hello"))
    with pytest.raises(WeightsError, match=r"did not answer like a Hugging Face Hub \(check HF_ENDPOINT\)"):
        AlignZegSegmenter.from_pretrained(REPO)


# Offline mode -------------------------------------------------------------------------------------------
def test_offline_with_a_cached_copy_makes_no_request(hub, cache, monkeypatch, image):
    online = AlignZegSegmenter.from_pretrained(REPO)
    count = len(hub.requests)
    set_offline(monkeypatch, True)
    offline = AlignZegSegmenter.from_pretrained(REPO)
    assert len(hub.requests) == count
    assert _same_weights(online, offline)


def test_offline_without_a_cached_copy_fails_fast_and_says_how_to_fix_it(hub, cache, monkeypatch):
    set_offline(monkeypatch, True)
    start = time.perf_counter()
    with pytest.raises(WeightsError) as info:
        AlignZegSegmenter.from_pretrained(REPO)
    elapsed = time.perf_counter() - start
    message = str(info.value)
    assert "config.json of 'org/tiny' is not in the local Hugging Face cache and HF_HUB_OFFLINE=1 is set" in message
    assert "`hf download org/tiny`" in message and "pass a local folder" in message
    assert elapsed < 2.0, f"offline failure took {elapsed:.2f} s"
    assert hub.requests == []


def test_local_files_only_without_a_cached_copy(hub, cache):
    with pytest.raises(WeightsError, match="is not in the local Hugging Face cache and local_files_only=True was given"):
        AlignZegSegmenter.from_pretrained(REPO, local_files_only=True)
    assert hub.requests == []


def test_offline_revision_not_cached(hub, cache, monkeypatch):
    AlignZegSegmenter.from_pretrained(REPO)
    set_offline(monkeypatch, True)
    with pytest.raises(WeightsError, match=r"\(revision 'v1'\) is not in the local Hugging Face cache"):
        AlignZegSegmenter.from_pretrained(REPO, revision="v1")


# The fake hub itself ------------------------------------------------------------------------------------
def test_fake_hub_root_dir_layout_and_model_info(tmp_path, tiny_checkpoint):
    import shutil

    shutil.copytree(tiny_checkpoint, tmp_path / "root" / "org" / "tree" / "main")
    with FakeHub(tmp_path / "root") as server:
        assert sorted(server.files("org/tree", "main")) == sorted(os.listdir(tiny_checkpoint))
        commit = server.commit("org/tree", "main")
        assert len(commit) == 40 and server.files("org/tree", commit) == server.files("org/tree", "main")
        import httpx2

        info = httpx2.get(f"{server.url}/api/models/org/tree").json()
        assert info["sha"] == commit
        assert {s["rfilename"] for s in info["siblings"]} == set(os.listdir(tiny_checkpoint))
        assert httpx2.get(f"{server.url}/api/models/org/nope").headers["X-Error-Code"] == "RepoNotFound"
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(f"{server.url}/api/models/org/tree", timeout=2)
