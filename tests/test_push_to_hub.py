"""push_to_hub: what it asks huggingface_hub's HfApi to do, and the files and model card it uploads.

``huggingface_hub.HfApi`` is replaced by a recorder that keeps every call and a copy of the uploaded folder
(the real one is a temporary folder, deleted after the upload).
"""

import json
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from alignzeg import AlignZegSegmenter, __version__


class RecordingHfApi:
    """Stands in for ``huggingface_hub.HfApi``; records calls, copies the uploaded folder's files."""

    instances: list["RecordingHfApi"] = []

    def __init__(self, **kwargs):
        self.init = kwargs
        self.calls: list[tuple[str, dict]] = []
        self.uploaded: dict[str, bytes] = {}
        self.folder: Path | None = None
        RecordingHfApi.instances.append(self)

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return f"https://huggingface.co/{repo_id}"

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        self.folder = Path(kwargs["folder_path"])
        self.uploaded = {p.relative_to(self.folder).as_posix(): p.read_bytes()
                         for p in self.folder.rglob("*") if p.is_file()}
        return "commit-info"


@pytest.fixture
def api(monkeypatch):
    RecordingHfApi.instances = []
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingHfApi)
    return RecordingHfApi


def card_of(recorder) -> ModelCard:
    return ModelCard(recorder.uploaded["README.md"].decode())


def test_uploads_the_saved_folder_with_its_card(api, tiny_segmenter, tmp_path):
    info = tiny_segmenter.push_to_hub("me/alignzeg-tiny", private=True, token="hf_test",
                                      recipe="voc-vitb16", metrics={"hIoU": 45.5, "mIoU_unseen": 38})
    assert info == "commit-info"
    [recorder] = api.instances
    assert recorder.init == {"token": "hf_test", "library_name": "alignzeg", "library_version": __version__}
    assert [name for name, _ in recorder.calls] == ["create_repo", "upload_folder"]
    assert recorder.calls[0][1] == {"repo_id": "me/alignzeg-tiny", "private": True, "exist_ok": True,
                                    "repo_type": "model"}
    upload = recorder.calls[1][1]
    assert upload["repo_id"] == "me/alignzeg-tiny" and upload["revision"] is None
    assert upload["commit_message"] == "Upload AlignZeg model" and upload["repo_type"] == "model"
    assert sorted(recorder.uploaded) == ["README.md", "config.json", "model.safetensors"]
    assert not recorder.folder.exists()  # the temporary folder is cleaned up

    meta = card_of(recorder).data.to_dict()
    assert meta["library_name"] == "alignzeg" and meta["pipeline_tag"] == "image-segmentation"
    assert meta["training_classes"] == list(tiny_segmenter.config.seen_classes)
    assert meta["alignzeg"]["recipe"] == "voc-vitb16"
    assert meta["alignzeg"]["metrics"] == {"hIoU": 45.5, "mIoU_unseen": 38.0}
    assert meta["alignzeg"]["checkpoint"] == "full"
    assert "| hIoU | 45.5 |" in card_of(recorder).text

    config = json.loads(recorder.uploaded["config.json"])
    assert config["extra"]["recipe"] == "voc-vitb16" and config["extra"]["metrics"]["hIoU"] == 45.5
    local = tiny_segmenter.save_pretrained(tmp_path / "local")
    assert recorder.uploaded["model.safetensors"] == (Path(local) / "model.safetensors").read_bytes()


def test_revision_branch_and_slim(api, tmp_path):
    from test_clip_weights import write_clip

    clip = tmp_path / "clip.safetensors"
    write_clip(clip)
    seg = AlignZegSegmenter.from_preset("tiny", seen_classes=["cat", "dog"], seed=0, clip_pretrained=clip)
    seg.push_to_hub("org/tiny-slim", revision="v1", commit_message="first", include_clip=False, create_pr=True)
    [recorder] = api.instances
    assert [name for name, _ in recorder.calls] == ["create_repo", "create_branch", "upload_folder"]
    assert recorder.calls[0][1]["private"] is False
    assert recorder.calls[1][1] == {"repo_id": "org/tiny-slim", "branch": "v1", "exist_ok": True, "repo_type": "model"}
    upload = recorder.calls[2][1]
    assert (upload["revision"], upload["commit_message"], upload["create_pr"]) == ("v1", "first", True)
    tensors = tmp_path / "uploaded.safetensors"
    tensors.write_bytes(recorder.uploaded["model.safetensors"])
    assert not any(k.startswith("backbone.clip.") for k in load_file(tensors))
    meta = card_of(recorder).data.to_dict()
    assert meta["training_classes"] == ["cat", "dog"]
    assert meta["alignzeg"]["checkpoint"] == "slim"
    assert meta["alignzeg"]["clip_pretrained"] == str(clip.resolve())
    assert meta["alignzeg"]["clip_fingerprint"] == json.loads(recorder.uploaded["config.json"])["clip_fingerprint"]
    assert "recipe" not in meta["alignzeg"] and "metrics" not in meta["alignzeg"]


def test_recipe_and_metrics_from_config_extra(api):
    extra = {"recipe": {"name": "voc-vitb16", "iterations": 20000}, "metrics": {"hIoU": 80.1}}
    seg = AlignZegSegmenter.from_preset("tiny", seed=0, config_overrides={"extra": extra})
    seg.push_to_hub("me/x")
    meta = card_of(api.instances[0]).data.to_dict()
    assert meta["alignzeg"]["recipe"] == {"name": "voc-vitb16", "iterations": 20000}
    assert meta["alignzeg"]["metrics"] == {"hIoU": 80.1}
    assert meta["training_classes"] == []


def test_vitb16_card_names_its_clip_base_model():
    from alignzeg.checkpoint import card_metadata
    from alignzeg.presets import get_preset_config

    meta = card_metadata(get_preset_config("vitb16", clip_pretrained="openai"))
    assert meta["base_model"] == "timm/vit_base_patch16_clip_224.openai"
    assert "base_model" not in card_metadata(get_preset_config("tiny"))


@pytest.mark.parametrize("kwargs, error, message", [
    ({"repo_id": "no-namespace"}, ValueError, r"repo_id must look like 'user/name', got 'no-namespace'"),
    ({"repo_id": "me/x", "metrics": {"hIoU": "high"}}, ValueError, r"offending entries: \{'hIoU': 'high'\}"),
    ({"repo_id": "me/x", "metrics": [1.0]}, TypeError, r"metrics must map metric names to numbers, got list"),
    ({"repo_id": "me/x", "recipe": 3}, TypeError, r"recipe must be a recipe name or a mapping .* got int"),
])
def test_bad_arguments(api, tiny_segmenter, kwargs, error, message):
    with pytest.raises(error, match=message):
        tiny_segmenter.push_to_hub(**kwargs)
    assert all(not r.calls for r in api.instances)  # refused before any Hub call


def test_state_is_float32_by_default(api, tiny_segmenter, tmp_path):
    tiny_segmenter.push_to_hub("me/x")
    path = tmp_path / "m.safetensors"
    path.write_bytes(api.instances[0].uploaded["model.safetensors"])
    assert {v.dtype for v in load_file(path).values() if v.is_floating_point()} == {torch.float32}
