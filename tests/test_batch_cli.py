"""``alignzeg segment INPUT... --out-dir DIR``: discovery, names, errors, resume after SIGKILL, shards,
and output paths checked before any model is loaded."""

import ast
import json
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import alignzeg.cli
from alignzeg.folder_jobs import collect_inputs, parse_shard, read_log, select_shard
from alignzeg.cli import main

CLASSES = ["cat", "dog", "sky"]
TREE = ["a/cat.jpg", "b/cat.jpg", "b/c/dog.png", "b/c/d/cat.bmp", "top.png"]


def _make_tree(root: Path, names, seed=0, size=(40, 56)):
    rng = np.random.default_rng(seed)
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = _make_tree(tmp_path_factory.mktemp("tree") / "photos", TREE)
    (root / "notes.txt").write_text("not an image: skipped when walking folders")
    return root


def _run(args, model):
    # --no-bias-correction: the tiny model's indicator is untrained (PBC would be off, with a warning)
    return main(["segment", *map(str, args), "--classes", ",".join(CLASSES), "--model", str(model), "--no-progress",
                 "--no-bias-correction"])


def _records(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_folder_tree_with_nested_duplicates(tree, tiny_checkpoint, tiny_segmenter, tmp_path):
    out = tmp_path / "out"
    assert _run([tree, "--out-dir", out, "--overlay"], tiny_checkpoint) == 0
    labels = sorted(p.relative_to(out / "labels").as_posix() for p in (out / "labels").rglob("*.png"))
    assert labels == ["a/cat.png", "b/c/d/cat.png", "b/c/dog.png", "b/cat.png", "top.png"]
    assert sorted(p.relative_to(out / "overlays").as_posix() for p in (out / "overlays").rglob("*.png")) == labels
    records = _records(out / "results.jsonl")
    assert [r["input"] for r in records] == sorted(TREE)
    for record in records:
        want = tiny_segmenter.segment(tree / record["input"], CLASSES)
        png = np.asarray(Image.open(out / record["labels"]))
        assert png.dtype == np.uint16
        np.testing.assert_array_equal(png, want.label_map + 1)  # same code path: exact
        assert (record["height"], record["width"]) == (40, 56)
        assert record["pixel_counts"] == want.pixel_counts(include_zero=True)
        assert record["path"] == str(tree / record["input"]) and record["seconds"] > 0
        assert Image.open(out / record["overlay"]).size == (56, 40)
    assert (out / "errors.jsonl").read_text() == ""
    assert json.loads((out / "run.json").read_text())["classes"] == CLASSES


def test_glob_and_manifest_names(tree, tmp_path):
    found = collect_inputs([str(tree / "b" / "**" / "*.png")])
    assert [i.name for i in found] == ["c/dog.png"]  # relative to the folder before the first wildcard
    manifest = tree / "list.txt"
    manifest.write_text("# two files and a folder, relative to this file\na/cat.jpg\n\nb/cat.jpg\nb/c\n")
    found = collect_inputs([], [str(manifest)])
    assert [i.name for i in found] == ["a/cat.jpg", "b/c/d/cat.bmp", "b/c/dog.png", "b/cat.jpg"]
    assert found[0].path == str(tree / "a" / "cat.jpg")
    # Two folder arguments: names relative to their common parent, so the two cat.jpg stay apart.
    assert [i.name for i in collect_inputs([str(tree / "a"), str(tree / "b")])][-1] == "b/cat.jpg"
    assert [i.name for i in collect_inputs([str(tree / "a"), str(tree / "a" / "cat.jpg")])] == ["cat.jpg"]


def test_manifest_and_glob_through_the_cli(tree, tiny_checkpoint, tmp_path):
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"{tree / 'a' / 'cat.jpg'}\n{tree / 'b' / 'cat.jpg'}\n")
    out = tmp_path / "out"
    assert _run(["--manifest", manifest, str(tree / "*.png"), "--out-dir", out], tiny_checkpoint) == 0
    assert [r["input"] for r in _records(out / "results.jsonl")] == ["a/cat.jpg", "b/cat.jpg", "top.png"]
    assert (out / "labels" / "a" / "cat.png").is_file() and (out / "labels" / "top.png").is_file()


def test_the_output_folder_inside_an_input_folder_is_not_an_input(tree, tmp_path):
    root = _make_tree(tmp_path / "in", ["x.png"])
    _make_tree(root / "out" / "labels", ["x.png"])
    assert [i.name for i in collect_inputs([str(root)], exclude=root / "out")] == ["x.png"]


def test_inputs_that_would_write_the_same_file_are_refused(tiny_checkpoint, tmp_path, capsys):
    root = _make_tree(tmp_path / "in", ["cat.jpg", "cat.png"])
    assert _run([root, "--out-dir", tmp_path / "out"], tiny_checkpoint) == 2
    assert "'cat.jpg' and 'cat.png' would both write 'cat.png'" in capsys.readouterr().err


def test_missing_inputs_are_named(tiny_checkpoint, tmp_path, capsys):
    assert _run([tmp_path / "nope", "--out-dir", tmp_path / "out"], tiny_checkpoint) == 2
    assert f"input not found: '{tmp_path / 'nope'}'" in capsys.readouterr().err
    assert _run([tmp_path / "*.jpg", "--out-dir", tmp_path / "out"], tiny_checkpoint) == 2
    assert "matches no file" in capsys.readouterr().err
    assert _run(["--manifest", tmp_path / "l.txt", "--out-dir", tmp_path / "out"], tiny_checkpoint) == 2
    assert "manifest not found" in capsys.readouterr().err


def _png_header_only(width: int, height: int) -> bytes:
    """A 57-byte PNG that declares width x height RGB pixels and holds none (a decompression bomb's header)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))


def test_bad_images_are_recorded_and_the_rest_succeed(tiny_checkpoint, tmp_path, capsys):
    root = _make_tree(tmp_path / "in", ["a.png", "e.png"])
    (root / "b.jpg").write_bytes(b"\xff\xd8 not really a jpeg")  # unreadable
    (root / "c.png").write_bytes(_png_header_only(20_000, 20_000))  # too large: 400 Mpx declared
    nan = np.full((8, 8), np.nan, dtype=np.float32)
    Image.fromarray(nan, mode="F").save(root / "d.tif")  # a float image holding NaN: no usable pixels
    out = tmp_path / "out"
    assert _run([root, "--out-dir", out], tiny_checkpoint) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1] == f"alignzeg: 3 of 5 images failed; see {out / 'errors.jsonl'}"
    errors = {e["input"]: e["error"] for e in _records(out / "errors.jsonl")}
    assert sorted(errors) == ["b.jpg", "c.png", "d.tif"]
    assert "b.jpg" in errors["b.jpg"] and "NaN" in errors["d.tif"]
    assert "pixels" in errors["c.png"]  # the pixel count is refused before decoding
    assert [r["input"] for r in _records(out / "results.jsonl")] == ["a.png", "e.png"]
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["a.png", "e.png"]


def test_final_progress_line_once_and_outputs_readable(tiny_checkpoint, tmp_path, capsys):
    root = _make_tree(tmp_path / "in", ["a.png", "b.png"])
    out = tmp_path / "out"
    assert main(["segment", str(root), "--classes", ",".join(CLASSES), "--model", str(tiny_checkpoint),
                 "--out-dir", str(out), "--no-bias-correction"]) == 0
    err = capsys.readouterr().err  # not a terminal: every drawing of the bar stays in the text
    assert err.count("2/2 [") == 1, err
    umask = os.umask(0o022)
    os.umask(umask)
    for path in (out / "labels" / "a.png", out / "results.jsonl"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path  # not mkstemp's 0600


def _comparable(path: Path):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in _records(path)]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_outputs(tiny_checkpoint, tmp_path):
    names = [f"d{i % 3}/img{i:02d}.png" for i in range(24)]
    root = _make_tree(tmp_path / "in", names, size=(96, 128))
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    command = [sys.executable, "-m", "alignzeg.cli", "segment", str(root), "--classes", ",".join(CLASSES),
               "--model", str(tiny_checkpoint), "--no-progress", "--prefetch", "1", "--overlay", "--no-bias-correction"]
    env = {**os.environ, "PYTHONPATH": str(Path(alignzeg.cli.__file__).parents[1])}
    proc = subprocess.Popen(command + ["--out-dir", str(killed)], env=env, stderr=subprocess.PIPE)
    results = killed / "results.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if results.exists() and results.read_bytes().count(b"\n") >= 1:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stderr.close()
    lines_at_kill = results.read_bytes().count(b"\n")
    assert 1 <= lines_at_kill < len(names), "the kill must land part-way"
    with open(results, "ab") as f:  # a kill can also land in the middle of a line
        f.write(b'{"input": "d0/img2')
    assert main(command[3:] + ["--out-dir", str(killed), "--resume"]) == 0
    assert main(command[3:] + ["--out-dir", str(clean)]) == 0
    got, want = _comparable(killed / "results.jsonl"), _comparable(clean / "results.jsonl")
    assert len(got) == len(names) == len({r["input"] for r in got})  # no duplicated lines
    assert sorted(got, key=lambda r: r["input"]) == want
    files = sorted(p.relative_to(clean).as_posix() for p in clean.rglob("*.png"))
    assert files == sorted(p.relative_to(killed).as_posix() for p in killed.rglob("*.png"))
    assert len(files) == 2 * len(names)
    for name in files:
        assert (killed / name).read_bytes() == (clean / name).read_bytes(), name


def test_resume_skips_complete_images_and_redoes_missing_outputs(tree, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run([tree, "--out-dir", out], tiny_checkpoint) == 0
    first = (out / "results.jsonl").read_text().splitlines()
    (out / "labels" / "b" / "cat.png").unlink()  # an output lost after its line was written
    capsys.readouterr()
    assert _run([tree, "--out-dir", out, "--resume"], tiny_checkpoint) == 0
    assert "segmented 1 of 5 images, 4 already done (--resume)" in capsys.readouterr().err
    again = (out / "results.jsonl").read_text().splitlines()
    assert len(again) == 5 and again[:4] == [line for line in first if '"b/cat.jpg"' not in line]
    assert json.loads(again[4])["input"] == "b/cat.jpg" and (out / "labels" / "b" / "cat.png").is_file()


def test_resume_with_other_classes_is_refused(tree, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run([tree / "a", "--out-dir", out], tiny_checkpoint) == 0
    code = main(["segment", str(tree / "a"), "--classes", "cat,dog", "--model", str(tiny_checkpoint),
                 "--out-dir", str(out), "--resume", "--no-progress"])
    assert code == 2
    assert "classes: ['cat', 'dog', 'sky'] -> ['cat', 'dog']" in capsys.readouterr().err


def test_read_log_cuts_a_partial_last_line(tmp_path):
    log = tmp_path / "results.jsonl"
    log.write_bytes(b'{"input": "a"}\n{"input": "b"}\n{"input": "c", "pix')
    assert read_log(str(log)) == [{"input": "a"}, {"input": "b"}]
    assert log.read_bytes() == b'{"input": "a"}\n{"input": "b"}\n'


def test_shards_cover_every_input_exactly_once(tree, tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    for index in (1, 2, 3):
        assert _run([tree, "--out-dir", out, "--shard", f"{index}/3"], tiny_checkpoint) == 0
    per_shard = [[r["input"] for r in _records(out / f"results-{i}-of-3.jsonl")] for i in (1, 2, 3)]
    assert sorted(sum(per_shard, [])) == sorted(TREE)  # every input once, none twice
    assert len(list((out / "labels").rglob("*.png"))) == len(TREE)
    images = collect_inputs([str(tree)])
    many = [f"{i}.png" for i in range(300)]
    shards = [select_shard([type(images[0])(n, n) for n in many], i, 7) for i in range(1, 8)]
    assert sorted(i.name for s in shards for i in s) == sorted(many)
    assert min(len(s) for s in shards) > 20  # roughly balanced: 300 / 7 = 43 on average


@pytest.mark.parametrize("text", ["0/3", "4/3", "1/0", "2", "a/b"])
def test_bad_shards_are_refused(text):
    with pytest.raises(ValueError, match=f"got '{text}'"):
        parse_shard(text)


@pytest.mark.parametrize("args, message", [
    (["--out", "{tmp}/overlay.xyz"], "--out '{tmp}/overlay.xyz': cannot write '.xyz'"),
    (["--labels-out", "{tmp}/labels.jpg"], "--labels-out '{tmp}/labels.jpg': cannot write '.jpg' here; use PNG or TIFF"),
    (["--out", "{tmp}/file.txt/overlay.png"], "--out '{tmp}/file.txt/overlay.png': its folder cannot be created"),
    (["--out", "{tmp}"], "--out '{tmp}': cannot write 'files without an extension'"),
])
def test_bad_output_paths_fail_before_the_model_is_loaded(args, message, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("a file, not a folder")
    image = _make_tree(tmp_path, ["x.png"]) / "x.png"
    args = [a.format(tmp=tmp_path) for a in args]
    # The model does not exist: had it been loaded first, the error would be about the model.
    code = main(["segment", str(image), "--classes", "a,b", "--model", str(tmp_path / "no-model"), *args])
    assert code == 2
    err = capsys.readouterr().err
    assert message.format(tmp=tmp_path) in err and "config.json" not in err and "Traceback" not in err


def test_bad_out_dir_fails_before_the_model_is_loaded(tmp_path, capsys):
    (tmp_path / "file.txt").write_text("x")
    image = _make_tree(tmp_path, ["x.png"]) / "x.png"
    for out_dir, message in [(tmp_path / "file.txt", "exists and is not a folder"),
                             (tmp_path / "file.txt" / "sub", "cannot be created or written to")]:
        code = main(["segment", str(image), "--classes", "a", "--model", str(tmp_path / "none"),
                     "--out-dir", str(out_dir)])
        assert code == 2
        assert f"--out-dir '{out_dir}' {message}" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["{tree}"], "need --out-dir DIR"),
    (["{tree}/*.png"], "need --out-dir DIR"),
    (["{tmp}/missing.jpg"], "image file not found: '{tmp}/missing.jpg'"),
    (["{tree}/a/cat.jpg", "{tree}/top.png"], "need --out-dir DIR"),
    (["{tree}/a/cat.jpg", "--overlay"], "--overlay cannot be used without --out-dir"),
    (["{tree}", "--out-dir", "{tmp}/o", "--json"], "--json cannot be used with --out-dir"),
    ([], "segment needs at least one INPUT"),
])
def test_one_image_and_many_images_options_do_not_mix(args, message, tree, tmp_path, capsys):
    args = [a.format(tree=tree, tmp=tmp_path) for a in args]
    assert main(["segment", *args, "--classes", "a", "--model", str(tmp_path / "none")]) == 2
    assert message.format(tmp=tmp_path) in capsys.readouterr().err


def test_cli_module_imports_only_the_standard_library_at_top_level():
    tree = ast.parse(Path(alignzeg.cli.__file__).read_text())
    top = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            top.add("." if node.level else node.module.split(".")[0])
    assert top <= set(sys.stdlib_module_names), top - set(sys.stdlib_module_names)
    from alignzeg.loader import DEMO_MODEL

    assert alignzeg.cli.DEMO_MODEL == DEMO_MODEL  # the CLI's copy of the loader's name for the demo model


def test_a_missing_manifest_entry_is_an_error_of_its_own_and_the_rest_are_segmented(tree, tiny_checkpoint,
                                                                                      tmp_path, capsys):
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"{tree / 'a' / 'cat.jpg'}\n{tree / 'a' / 'gone.jpg'}\n{tree / 'top.png'}\n")
    out = tmp_path / "out"
    assert _run(["--manifest", manifest, "--out-dir", out], tiny_checkpoint) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"alignzeg: 1 of 3 images failed; see {out / 'errors.jsonl'}"
    assert [r["input"] for r in _records(out / "results.jsonl")] == ["a/cat.jpg", "top.png"]
    errors = _records(out / "errors.jsonl")
    assert errors == [{"input": "a/gone.jpg", "path": str(tree / "a" / "gone.jpg"),
                       "error": f"FileNotFoundError: image file not found: '{tree / 'a' / 'gone.jpg'}'"}]
    assert sorted(p.relative_to(out / "labels").as_posix() for p in (out / "labels").rglob("*.png")) == \
        ["a/cat.png", "top.png"]


_HOLD_LOCK = """
import sys
from alignzeg.folder_jobs import output_lock
with output_lock(sys.argv[1], None if sys.argv[2] == "-" else tuple(map(int, sys.argv[2].split("/")))):
    print("locked", flush=True)
    sys.stdin.read()
"""


def _hold_lock(out_dir: Path, shard: str = "-") -> subprocess.Popen:
    """Another process that holds ``out_dir``'s lock (for ``shard``) until killed; returns once it holds it."""
    env = {**os.environ, "PYTHONPATH": str(Path(alignzeg.cli.__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(out_dir), shard], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "locked\n"
    return proc


def test_a_second_run_into_one_out_dir_is_refused_naming_the_first_and_a_killed_runs_lock_is_taken_over(
        tree, tiny_checkpoint, tmp_path, capsys, caplog):
    out = tmp_path / "out"
    out.mkdir()
    first = _hold_lock(out)
    try:
        # The model does not exist: the refusal comes before it would load.
        code = main(["segment", str(tree / "a"), "--classes", "cat", "--model", str(tmp_path / "none"),
                     "--out-dir", str(out)])
        assert code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        assert err.startswith(f"alignzeg: error: --out-dir '{out}' is being written by another run "
                              f"(pid {first.pid} on host {socket.gethostname()} since "), err
        assert err.endswith(f"lock file {out / 'run.lock'}); wait for it to end or use another --out-dir"), err
        assert not (out / "results.jsonl").exists()  # nothing of the refused run was written
        # A shard run conflicts with a whole-folder run.
        assert _run([tree / "a", "--out-dir", out, "--shard", "1/2"], tiny_checkpoint) == 2
        assert f"pid {first.pid}" in capsys.readouterr().err
    finally:
        first.kill()
        first.wait(timeout=60)
    assert (out / "run.lock").exists()  # left behind by the killed run: stale
    with caplog.at_level("WARNING", logger="alignzeg.folder_jobs"):
        assert _run([tree / "a", "--out-dir", out], tiny_checkpoint) == 0
    assert f"taking over the lock left by a run that is no longer running (pid {first.pid} on host" in caplog.text
    assert [r["input"] for r in _records(out / "results.jsonl")] == ["cat.jpg"]
    assert not (out / "run.lock").exists()  # a finished run removes its lock


def test_shards_of_one_folder_run_at_once(tree, tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    other = _hold_lock(out, "2/2")
    try:
        assert _run([tree, "--out-dir", out, "--shard", "1/2"], tiny_checkpoint) == 0
    finally:
        other.kill()
        other.wait(timeout=60)


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_a_rerun_without_resume_is_refused_and_overwrite_leaves_exactly_the_new_run(tree, tiny_checkpoint,
                                                                                     tmp_path, capsys):
    """A re-run without --resume kept the earlier run's overlays among the new outputs."""
    out = tmp_path / "out"
    assert _run([tree, "--out-dir", out, "--overlay"], tiny_checkpoint) == 0
    before = {name: (out / name).read_bytes() for name in _files(out)}
    assert len([n for n in before if n.startswith("overlays/")]) == len(TREE)
    capsys.readouterr()
    assert _run([tree / "a", "--out-dir", out], tiny_checkpoint) == 2
    assert capsys.readouterr().err == (
        f"alignzeg: error: --out-dir '{out}' is not empty (it holds errors.jsonl, labels, overlays, results.jsonl, "
        "run.json); use --resume to continue the run written there, --overwrite to remove it first, or a new "
        "--out-dir\n")
    assert {name: (out / name).read_bytes() for name in _files(out)} == before  # untouched
    assert _run([tree / "a", "--out-dir", out, "--overwrite", "--resume"], tiny_checkpoint) == 2
    assert "--resume continues the run in --out-dir and --overwrite removes it; give one" in capsys.readouterr().err
    assert _run([tree / "a", "--out-dir", out, "--overwrite"], tiny_checkpoint) == 0
    assert _files(out) == ["errors.jsonl", "labels/cat.png", "results.jsonl", "run.json"]
    assert [r["input"] for r in _records(out / "results.jsonl")] == ["cat.jpg"]
    assert json.loads((out / "run.json").read_text())["overlay"] is False


def test_overwrite_never_empties_a_folder_that_no_run_wrote(tree, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert _run([tree / "a", "--out-dir", out], tiny_checkpoint) == 2
    assert "is not empty (it holds notes.txt)" in capsys.readouterr().err
    assert _run([tree / "a", "--out-dir", out, "--overwrite"], tiny_checkpoint) == 2
    assert (f"--overwrite: --out-dir '{out}' holds notes.txt but no run of alignzeg segment (run.json); it is not "
            "emptied: use a new or empty --out-dir") in capsys.readouterr().err
    assert _files(out) == ["notes.txt"]


def test_a_shard_rerun_is_refused_other_shards_are_not_and_overwrite_replaces_only_its_own_files(
        tree, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run([tree, "--out-dir", out, "--shard", "1/2", "--overlay"], tiny_checkpoint) == 0
    first = [r["input"] for r in _records(out / "results-1-of-2.jsonl")]
    assert _run([tree, "--out-dir", out, "--shard", "2/2"], tiny_checkpoint) == 0  # the other shard's files: fine
    second = _records(out / "results-2-of-2.jsonl")
    shard_two = {r["labels"]: (out / r["labels"]).read_bytes() for r in second}
    capsys.readouterr()
    assert _run([tree, "--out-dir", out, "--shard", "1/2"], tiny_checkpoint) == 2
    assert "is not empty (it holds errors-1-of-2.jsonl, results-1-of-2.jsonl, run-1-of-2.json)" in capsys.readouterr().err
    assert _run([tree, "--out-dir", out, "--shard", "1/3"], tiny_checkpoint) == 2  # another sharding's files
    assert _run([tree, "--out-dir", out, "--shard", "1/2", "--overwrite"], tiny_checkpoint) == 0  # no --overlay now
    assert [r["input"] for r in _records(out / "results-1-of-2.jsonl")] == first
    assert not (out / "overlays").exists() or not list((out / "overlays").rglob("*.png"))
    assert {r["labels"]: (out / r["labels"]).read_bytes() for r in second} == shard_two  # shard 2 untouched
    assert len(_files(out / "labels")) == len(TREE)
