"""``benchmarks/bench_cost_curve.py``: the cost curve's JSON rendered as docs/performance.md's table."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
curve = pytest.importorskip("bench_cost_curve")


def _point(sweep, size, classes, cached, batch, backend, seconds, peak, windows=None):
    point = {"sweep": sweep, "size": list(size), "classes": classes, "cached": cached, "batch": batch,
             "backend": backend, "s_per_image": seconds, "peak_mb": peak, "times_s_per_image": [seconds]}
    if windows is not None:
        point["windows"] = windows
    return point


def test_render_table_has_one_row_per_point_and_one_column_per_back_end():
    data = {"points": [
        _point("image size", (3000, 4000), 20, True, 8, "torch", 2.5, 1771.4, windows=2),
        _point("image size", (3000, 4000), 20, True, 8, "onnx int8", 0.91234, 640.6, windows=2),
        _point("vocabulary", (512, 512), 2000, False, 8, "torch", 123.0, 2100.0),
    ]}
    assert curve.render_table(data).splitlines() == [
        "| sweep | image HxW | windows | classes | text embeddings | batch | torch (s per image / peak) "
        "| onnx int8 (s per image / peak) |",
        "|---|---|---|---|---|---|---|---|",
        "| image size | 3000x4000 | 2 | 20 | cached | 8 | 2.5 s / 1771 MB | 0.912 s / 641 MB |",
        "| vocabulary | 512x512 |  | 2000 | uncached | 8 | 123 s / 2100 MB | - |",
    ]


def test_class_names_are_distinct_and_extend_coco_stuff():
    names = curve.class_names(2000)
    assert len(names) == len(set(names)) == 2000
    assert names[:171] == list(curve.c.coco_stuff_names()) and names[171] == "object 172" and names[-1] == "object 2000"
    assert curve.class_names(5) == list(curve.c.coco_stuff_names()[:5])


def test_an_unknown_back_end_is_refused_naming_it():
    with pytest.raises(SystemExit, match=r"--backends: unknown \['tensorrt'\]; expected some of"):
        curve.main(["--backends", "torch,tensorrt", "--no-save"])
