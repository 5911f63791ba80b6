"""Ray Data scale-out on a local 2-CPU Ray: label maps equal to serial ``segment``."""

import numpy as np
import pytest
from PIL import Image

ray = pytest.importorskip("ray", reason='Ray is not installed (pip install "alignzeg[ray]"; the dev extra has it)')
pytest.importorskip("ray.data", reason="this Ray has no Ray Data (pip install 'ray[data]')")

from alignzeg.integrations.ray import SegmentBatch, segment_dataset  # noqa: E402

CLASSES = ["person", "chair", "wall"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def images(voc):
    rng = np.random.default_rng(3)
    return [voc["rgb"][:150, :220].copy(), rng.integers(0, 256, (60, 80, 3), dtype=np.uint8),
            rng.integers(0, 256, (33, 47, 3), dtype=np.uint8)]


def test_ray_pipeline_gives_the_label_maps_of_serial_segment(local_ray, images, tiny_checkpoint, tiny_segmenter):
    rows = [{"id": i, "image": image} for i, image in enumerate(images)]
    out = segment_dataset(local_ray.data.from_items(rows), str(tiny_checkpoint), CLASSES, num_actors=2,
                          batch_size=2).take_all()
    assert sorted(row["id"] for row in out) == [0, 1, 2]
    for row in out:
        assert sorted(row) == ["id", "label_map"]  # an image column of arrays is dropped by default
        want = tiny_segmenter.segment(images[row["id"]], CLASSES).label_map
        got = np.asarray(row["label_map"])
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, want)  # same weights, same segment_batch code path


def test_actor_class_reads_paths_and_keeps_them(images, tiny_checkpoint, tiny_segmenter, tmp_path):
    """What each actor runs, called in-process on a numpy batch as Ray Data hands it over."""
    paths = []
    for i, image in enumerate(images):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image).save(paths[-1])
    actor = SegmentBatch(str(tiny_checkpoint), CLASSES, column="path", unlabelled_threshold=0.5, bias_correction=False)
    out = actor({"path": np.array(paths, dtype=object), "id": np.arange(3)})
    assert list(out["path"]) == paths and list(out["id"]) == [0, 1, 2]
    for path, got in zip(paths, out["label_map"]):
        want = tiny_segmenter.segment(path, CLASSES, unlabelled_threshold=0.5).label_map
        np.testing.assert_array_equal(got, want)
    with pytest.raises(KeyError, match="column 'image' not in the dataset"):
        SegmentBatch(str(tiny_checkpoint), CLASSES)({"path": np.array(paths, dtype=object)})


def test_bad_arguments_are_refused_before_ray_runs(local_ray, tiny_checkpoint):
    ds = local_ray.data.from_items([{"path": "x.png"}])
    with pytest.raises(ValueError, match="num_actors must be a positive integer, got 0"):
        segment_dataset(ds, str(tiny_checkpoint), CLASSES, num_actors=0)
    with pytest.raises(TypeError, match="model must be a checkpoint folder, a Hub repo id or a callable, got int"):
        segment_dataset(ds, 3, CLASSES)
