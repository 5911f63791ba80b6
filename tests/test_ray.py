"""Ray Data scale-out on a local 2-CPU Ray: label maps equal to serial ``segment``."""

import numpy as np
import pytest
from PIL import Image

ray = pytest.importorskip("ray", reason='Ray is not installed (pip install "alignzeg[ray]"; the dev extra has it)')
pytest.importorskip("ray.data", reason="this Ray has no Ray Data (pip install 'ray[data]')")

from alignzeg.integrations.ray import SegmentBatch, check_cluster_fits, segment_dataset  # noqa: E402

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
    # Two actors on the 2-CPU cluster: half a CPU each leaves one for Ray Data's tasks.
    out = _rows_within(segment_dataset(local_ray.data.from_items(rows), str(tiny_checkpoint), CLASSES, num_actors=2,
                                       num_cpus=0.5, batch_size=2), 240)
    assert sorted(row["id"] for row in out) == [0, 1, 2]
    for row in out:
        assert sorted(row) == ["id", "label_map"]  # an image column of arrays is dropped by default
        want = tiny_segmenter.segment(images[row["id"]], CLASSES).label_map
        got = np.asarray(row["label_map"])
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, want)  # same weights, same segment_batch code path


def test_ray_pipeline_runs_an_onnx_file(local_ray, images, tiny_onnx, tiny_segmenter):
    """``segment_dataset`` given an ``.onnx`` path: each actor loads it with ONNX Runtime (``load_segmenter``);
    the label maps are the serial ONNX back-end's, and the PyTorch model's but where onnxruntime's kernels move a
    near tie (under 0.5 % of the pixels, as tests/test_backend_contract.py states)."""
    from alignzeg.onnx.runtime import OnnxSegmenter

    rows = [{"id": i, "image": image} for i, image in enumerate(images)]
    out = _rows_within(segment_dataset(local_ray.data.from_items(rows), str(tiny_onnx), CLASSES, num_actors=1,
                                       num_cpus=0.5, batch_size=2, bias_correction=False), 240)
    assert sorted(row["id"] for row in out) == [0, 1, 2]
    serial = OnnxSegmenter.load(tiny_onnx)
    for row in out:
        got = np.asarray(row["label_map"])
        image = images[row["id"]]
        np.testing.assert_array_equal(got, serial.segment(image, CLASSES, bias_correction=False).label_map)
        want = tiny_segmenter.segment(image, CLASSES, bias_correction=False).label_map
        assert got.shape == want.shape == image.shape[:2] and (got == want).mean() > 0.995


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
    with pytest.raises(TypeError, match="model must be a checkpoint folder, a Hub repo id, an .onnx file or a callable, got int"):
        segment_dataset(ds, 3, CLASSES)


def _rows_within(ds, seconds):
    """``ds.take_all()`` on a thread, failing the test (not hanging it) when it takes longer than ``seconds``."""
    import threading

    rows = []
    worker = threading.Thread(target=lambda: rows.extend(ds.take_all()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"no result within {seconds} s: the job waits on resources"
    return rows


def test_actors_taking_every_cpu_stop_at_once_naming_the_resources(local_ray, images, tiny_checkpoint):
    """On a 2-CPU cluster two 1-CPU actors left no CPU for the read tasks: no row in 10 minutes, no CPU used.
    (The time limit makes a regression a failure, not a hang; two actors that fit run in the test above.)"""
    ds = local_ray.data.from_items([{"image": image} for image in images])
    with pytest.raises(ValueError) as info:
        _rows_within(segment_dataset(ds, str(tiny_checkpoint), CLASSES, num_actors=2), 240)
    assert str(info.value) == ("num_actors=2 x num_cpus=1 takes 2 of the Ray cluster's 2 CPUs; Ray Data needs "
                               "1 CPU left for its read tasks, or the job waits for ever: use num_actors=1 or "
                               "fewer, or num_cpus=0.5 per actor")
    with pytest.raises(ValueError, match=r"num_actors=1 x num_gpus=1 needs 1 GPUs; the Ray cluster has 0, so the "
                                         r"actors would wait for ever"):
        segment_dataset(ds, str(tiny_checkpoint), CLASSES, num_gpus=1)


def test_cluster_fit_by_the_numbers():
    """The rule without a cluster: the actors leave one CPU for Ray Data's tasks, and their GPUs exist."""
    check_cluster_fits({"CPU": 2.0}, 1, 1, 0)
    check_cluster_fits({"CPU": 2.0}, 2, 0.5, 0)
    check_cluster_fits({"CPU": 16.0, "GPU": 2.0}, 2, 1, 1)
    with pytest.raises(ValueError) as info:
        check_cluster_fits({"CPU": 2.0}, 2, 1, 0)
    assert str(info.value) == ("num_actors=2 x num_cpus=1 takes 2 of the Ray cluster's 2 CPUs; Ray Data needs "
                               "1 CPU left for its read tasks, or the job waits for ever: use num_actors=1 or "
                               "fewer, or num_cpus=0.5 per actor")
    with pytest.raises(ValueError, match=r"takes 1 of the Ray cluster's 1 CPUs; .*: use a cluster with more CPUs$"):
        check_cluster_fits({"CPU": 1.0}, 1, 1, 0)
    with pytest.raises(ValueError, match=r"^num_actors=2 x num_gpus=1 needs 2 GPUs; the Ray cluster has 1, so"):
        check_cluster_fits({"CPU": 16.0, "GPU": 1.0}, 2, 1, 1)
