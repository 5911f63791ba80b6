"""One segmenter, many threads: the same results as serial use (to float tolerance: concurrent calls share
the intra-op thread pool, which may split reductions differently); one code path is bit-reproducible."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from alignzeg import AlignZegSegmenter
from compare import assert_same_segmentation

THREADS = 8
VOCABULARIES = [
    ("person", "sofa", "tvmonitor"),
    ("cat", "dog"),
    ("tree", "road", "sky", "car", "building"),
    ("chair",),
    ("sofa", "person", "tvmonitor"),  # same names as the first, another order
    ("wall", "floor", "ceiling", "window"),
]


@pytest.fixture(scope="module")
def jobs(voc):
    """16 (image, vocabulary) pairs: three image sizes (two needing several sliding windows), six vocabularies."""
    rgb = voc["rgb"]
    images = [rgb[::6, ::6].copy(), rgb[::3, ::5].copy(), np.ascontiguousarray(rgb[:40, ::-1])]
    return [(images[i % len(images)], VOCABULARIES[i % len(VOCABULARIES)]) for i in range(2 * THREADS)]


def _outputs(segmenter, image, vocabulary):
    result = segmenter.segment(image, list(vocabulary))
    return result.label_map, result.class_probs, result.scores


def _result(segmenter, image, vocabulary):
    return segmenter.segment(image, list(vocabulary))


def _assert_identical(got, expected):
    for a, b in zip(got, expected):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def _run_threaded(segmenter, jobs):
    """Run ``jobs`` from THREADS threads released together by a barrier; results in job order."""
    barrier = threading.Barrier(THREADS)
    results: list = [None] * len(jobs)

    def worker(slot: int) -> None:
        barrier.wait()
        for index in range(slot, len(jobs), THREADS):
            results[index] = _result(segmenter, *jobs[index])

    with ThreadPoolExecutor(THREADS) as pool:
        for future in [pool.submit(worker, slot) for slot in range(THREADS)]:
            future.result()
    return results


def test_eight_threads_match_serial_use(jobs):
    # A fresh segmenter with a cache smaller than the number of vocabularies, so threads also race on
    # encoding and eviction, not only on lookups.
    segmenter = AlignZegSegmenter.from_preset("tiny", seed=0, device="cpu")
    segmenter.vocabulary.max_cache = 2
    serial = [_result(segmenter, *job) for job in jobs]
    segmenter.vocabulary.cache_clear()
    threaded = _run_threaded(segmenter, jobs)
    for got, expected in zip(threaded, serial):
        assert got.label_map.dtype == expected.label_map.dtype and got.class_probs.dtype == expected.class_probs.dtype
        assert_same_segmentation(got, expected)
    assert segmenter.vocabulary.cache_size() <= 2


def test_threads_share_one_cached_embedding_per_vocabulary():
    segmenter = AlignZegSegmenter.from_preset("tiny", seed=0, device="cpu")
    barrier = threading.Barrier(THREADS)

    def encode(_):
        barrier.wait()
        return segmenter.encode_vocabulary(["kettle", "teapot", "mug"])

    calls = []
    encode_once = segmenter.vocabulary._encode
    segmenter.vocabulary._encode = lambda *args: calls.append(args) or encode_once(*args)
    with ThreadPoolExecutor(THREADS) as pool:
        embeddings = list(pool.map(encode, range(THREADS)))
    assert len(calls) == 1  # encoded once, under the cache lock
    assert all(torch.equal(e, embeddings[0]) for e in embeddings)
    assert len({e.data_ptr() for e in embeddings}) == THREADS  # each caller got its own copy
    assert segmenter.vocabulary.cache_size() == 1


def test_same_input_gives_bit_identical_output_across_calls(tiny_segmenter, jobs):
    image, vocabulary = jobs[1]
    first = _outputs(tiny_segmenter, image, vocabulary)
    for _ in range(2):
        _assert_identical(_outputs(tiny_segmenter, image, vocabulary), first)
    tiny_segmenter.vocabulary.cache_clear()  # recomputing the text embeddings changes nothing either
    _assert_identical(_outputs(tiny_segmenter, image, vocabulary), first)


def test_batch_and_single_calls_agree(tiny_segmenter, jobs):
    image, vocabulary = jobs[0]
    single = tiny_segmenter.segment(image, list(vocabulary))
    batch = tiny_segmenter.segment_batch([image, jobs[3][0], image], list(vocabulary))
    assert_same_segmentation(batch[0], single)  # batched vs single forward passes
    assert_same_segmentation(batch[2], batch[0])  # another position in the batch


def test_inputs_are_not_modified(tiny_segmenter, jobs):
    image, vocabulary = jobs[2]
    before = image.copy()
    tensor = torch.from_numpy(image).permute(2, 0, 1).float().div(255)
    tensor_before = tensor.clone()
    tiny_segmenter.segment(image, list(vocabulary))
    tiny_segmenter.segment(tensor, list(vocabulary))
    np.testing.assert_array_equal(image, before)
    assert torch.equal(tensor, tensor_before)


def test_seeded_construction_is_reproducible_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = AlignZegSegmenter.from_preset("tiny", seed=7, device="cpu")
    b = AlignZegSegmenter.from_preset("tiny", seed=7, device="cpu")
    assert torch.equal(torch.rand(3), expected_next)  # building did not consume or reseed the global RNG
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    c = AlignZegSegmenter.from_preset("tiny", seed=8, device="cpu")
    assert not torch.equal(c.model.state_dict()["classifier.bg_prototypes"], sa["classifier.bg_prototypes"])


class _Squares:
    """Training data in alignzeg.train's dataset protocol: grey images with one coloured square each."""

    class_names = ("red", "green", "blue")
    seen_classes = ("red", "green")

    def __init__(self, num: int = 2, size: int = 64) -> None:
        rng = np.random.default_rng(0)
        colours = np.array([[220, 40, 40], [40, 200, 60], [50, 60, 230]], dtype=np.uint8)
        self.items = []
        for i in range(num):
            image = np.full((size, size, 3), 128, dtype=np.uint8)
            label = np.full((size, size), 255, dtype=np.int64)
            y, x = rng.integers(0, size // 2, size=2)
            image[y:y + 24, x:x + 24] = colours[i % 2]
            label[y:y + 24, x:x + 24] = i % 2
            self.items.append({"image": image, "label": label})
        self.class_embeddings = torch.nn.functional.normalize(
            torch.randn(3, 64, generator=torch.Generator().manual_seed(0)), dim=-1)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]


def test_seeded_training_smoke_run_is_reproducible():
    train = pytest.importorskip("alignzeg.train")
    runs = []
    for _ in range(2):
        config = train.TrainConfig(preset="tiny", lr=1e-3, progress=False, checkpoint_every=0, seed=0,
                                   device="cpu", iterations=2, batch_size=1)
        trainer = train.Trainer(config, None, _Squares(), out_dir=None)
        segmenter = trainer.train()
        runs.append(([r["loss"] for r in trainer.history], segmenter.model.state_dict()))
    (losses_a, state_a), (losses_b, state_b) = runs
    assert len(losses_a) == 2 and losses_a == losses_b
    assert state_a.keys() == state_b.keys() and all(torch.equal(state_a[k], state_b[k]) for k in state_a)
