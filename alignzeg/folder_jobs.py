"""Segment many images into a folder: input discovery, sharding, crash-safe outputs, resume.

The engine of ``alignzeg segment INPUT... --out-dir DIR`` (the CLI parses arguments and calls
``collect_inputs`` then ``run_batch``). Layout of ``DIR``::

    labels/<name>.png      label map, 16-bit PNG, value = class index + 1 (0 = unlabelled)
    overlays/<name>.png    colour overlay (with --overlay)
    results.jsonl          one JSON line per segmented image
    errors.jsonl           one JSON line per image that could not be read or decoded (this run)
    run.json               classes, model and options of the run (--resume refuses other settings)
    run.lock               held while a run writes DIR: its pid, host and start time (see ``output_lock``)

``<name>`` is the input's path relative to the common root of the input arguments, with the image
suffix replaced by ``.png`` (``photos/a/cat.jpg`` -> ``labels/a/cat.png``). With ``--shard I/N`` the log
and lock files get the suffix ``-I-of-N`` (``results-2-of-3.jsonl``) so N processes can share one ``DIR``.

A run writes a new or empty ``DIR`` (its shard's files aside), continues the run there (``--resume``), or
removes it first (``--overwrite``): no file of an earlier run is left among its outputs (``check_fresh_output``).

One writer at a time: a run holds ``run.lock`` (an OS file lock, released by the kernel when the process
dies), so a second run into the same ``DIR`` (or the same shard of it) is refused with the first one's pid
and host; a lock file left by a killed run is taken over, with a warning that names the dead run.

Crash safety: every file is written under a temporary name in its folder and moved into place with
``os.replace`` (atomic on POSIX and Windows), and an image's ``results.jsonl`` line is appended only after
its files are in place. A killed run therefore leaves complete files or none, and at most a partial last
line, which ``--resume`` cuts off before it appends.

This module imports only the standard library at import time (the CLI's ``--help`` stays fast).
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import json
import logging
import os
import re
import socket
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from .config import file_mode
from .progress import advance, progress_bar

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_SUFFIXES", "InputImage", "BatchSummary", "collect_inputs", "parse_shard", "select_shard",
    "check_output_file", "check_output_dir", "check_fresh_output", "output_lock", "run_batch",
]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                            ".ppm", ".pgm", ".pbm", ".pnm"})
"""Suffixes (any case) picked up when walking folders and expanding globs. Files named explicitly are
taken whatever their suffix."""

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class InputImage:
    """One input image.

    Attributes:
        path: absolute path of the file.
        name: its path relative to the common root of the input arguments, POSIX separators
            (``"a/cat.jpg"``); names the outputs and identifies the image in ``results.jsonl``.
    """

    path: str
    name: str

    @property
    def stem(self) -> str:
        """``name`` without its suffix (``"a/cat"``); outputs are ``<stem>.png``."""
        return str(Path(self.name).with_suffix("").as_posix())


@dataclass
class BatchSummary:
    """What ``run_batch`` did: images segmented, skipped (complete from an earlier run), failed."""

    done: int = 0
    skipped: int = 0
    failed: int = 0


# Inputs ------------------------------------------------------------------------------------------------
def collect_inputs(arguments: Sequence[str], manifests: Sequence[str] = (),
                   exclude: str | os.PathLike | None = None) -> list[InputImage]:
    """Expand files, folders, globs and manifests into a sorted list of unique images.

    Args:
        arguments: image files (any suffix), folders (walked recursively for ``IMAGE_SUFFIXES``) and
            glob patterns (``"data/**/*.jpg"``, recursive ``**`` allowed; matched folders are walked).
        manifests: text files listing one input per line (files, folders or globs as above); blank lines
            and lines starting with ``#`` are skipped; relative entries are relative to the manifest's folder.
            An entry naming a file that does not exist is kept as an input: ``run_batch`` records it in
            ``errors.jsonl`` and segments the others (one vanished file does not stop a long list).
        exclude: a folder whose files are never inputs (the output folder, when it lies inside an input).

    Returns:
        ``InputImage`` list sorted by ``name``; names are relative to the deepest folder that contains every
        argument's root (a folder argument's root is itself, a file's its folder, a glob's the folder before
        its first wildcard), so two ``cat.jpg`` in different folders get different names.

    Raises:
        FileNotFoundError: an argument or manifest that does not exist, or a glob that matches nothing.
        ValueError: no image at all, or inputs on different drives (no common root).
    """
    skip = os.path.abspath(exclude) if exclude is not None else None
    groups: list[tuple[str, list[str]]] = []  # (root folder, absolute files)
    for argument in arguments:
        groups.append(_expand(argument, os.getcwd(), skip))
    for manifest in manifests:
        for entry in _read_manifest(manifest):
            groups.append(_expand(entry, os.path.dirname(os.path.abspath(manifest)), skip, missing_ok=True))
    files = {path: None for _, paths in groups for path in paths}  # unique, order kept
    if not files:
        raise ValueError(f"no image found in {list(arguments) + [f'--manifest {m}' for m in manifests]} "
                         f"(folders are searched for {', '.join(sorted(IMAGE_SUFFIXES))})")
    try:
        root = os.path.commonpath([root for root, paths in groups if paths])
    except ValueError as err:
        raise ValueError(f"inputs have no common folder (different drives?): {err}") from err
    images = [InputImage(path, Path(os.path.relpath(path, root)).as_posix()) for path in files]
    return sorted(images, key=lambda image: image.name)


def _expand(argument: str, base: str, skip: str | None, missing_ok: bool = False) -> tuple[str, list[str]]:
    """One argument -> (its root folder, the absolute image paths it names).

    With ``missing_ok`` a path without wildcards that does not exist is returned as a file (its reading
    fails later, as one image's error); otherwise it raises ``FileNotFoundError``.
    """
    path = os.path.normpath(os.path.join(base, os.path.expanduser(argument)))
    if os.path.isdir(path):
        return path, _walk(path, skip)
    if os.path.isfile(path):
        return os.path.dirname(path), [path]
    if _GLOB_CHARS & set(argument):
        matches = sorted(glob.glob(path, recursive=True))
        files = [m for m in matches if os.path.isfile(m)]
        for folder in (m for m in matches if os.path.isdir(m)):
            files += _walk(folder, skip)
        if not files:
            raise FileNotFoundError(f"the pattern {argument!r} matches no file")
        return _glob_root(path), [os.path.abspath(f) for f in files if not _inside(f, skip)]
    if missing_ok:
        return os.path.dirname(path), [path]
    raise FileNotFoundError(f"input not found: {argument!r} (not a file, a folder or a glob pattern)")


def _walk(folder: str, skip: str | None) -> list[str]:
    found = []
    for parent, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not _inside(os.path.join(parent, d), skip))
        found += [os.path.join(parent, n) for n in sorted(names) if os.path.splitext(n)[1].lower() in IMAGE_SUFFIXES]
    return found


def _inside(path: str, folder: str | None) -> bool:
    if folder is None:
        return False
    path = os.path.abspath(path)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _glob_root(pattern: str) -> str:
    """The folder before the first path component holding a wildcard."""
    fixed = list(itertools.takewhile(lambda part: not (_GLOB_CHARS & set(part)), Path(pattern).parts))
    return str(Path(*fixed)) if fixed else os.getcwd()


def _read_manifest(manifest: str) -> list[str]:
    try:
        with open(manifest, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
    except FileNotFoundError as err:
        raise FileNotFoundError(f"manifest not found: {manifest!r}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read manifest {manifest!r}: {err}") from err
    return [line for line in lines if line and not line.startswith("#")]


def check_unique_outputs(images: Sequence[InputImage]) -> None:
    """Refuse two inputs that would write the same output (``a/cat.jpg`` and ``a/cat.png``)."""
    seen: dict[str, str] = {}
    for image in images:
        other = seen.setdefault(image.stem, image.name)
        if other != image.name:
            raise ValueError(f"inputs {other!r} and {image.name!r} would both write {image.stem + '.png'!r}; "
                             "rename one or segment them in separate runs")


# Shards ------------------------------------------------------------------------------------------------
def parse_shard(text: str) -> tuple[int, int]:
    """``"2/3"`` -> ``(2, 3)``: shard 2 of 3 (1-based)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like I/N (e.g. 2/3), got {text!r}") from None
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"--shard I/N needs 1 <= I <= N, got {text!r}")
    return index, count


def select_shard(images: Sequence[InputImage], index: int, count: int) -> list[InputImage]:
    """The images of shard ``index`` (1-based) of ``count``: those whose CRC-32 of ``name`` is
    ``index - 1`` modulo ``count``. Every image lands in exactly one shard, and an image's shard does not
    depend on the other inputs, so adding images to a folder never moves the ones already done."""
    return [image for image in images if zlib.crc32(image.name.encode("utf-8")) % count == index - 1]


# Output paths ------------------------------------------------------------------------------------------
def check_output_file(path: str, option: str, formats: Sequence[str] | None = None) -> None:
    """Check, before any inference, that an image can be written at ``path`` (creating its folder).

    Args:
        path: the output file.
        option: the option's name for messages (``"--out"``).
        formats: PIL format names allowed (``("PNG", "TIFF")`` for 16-bit label maps); ``None``: any PIL
            can write.

    Raises:
        ValueError: an extension PIL cannot write (or not one of ``formats``), a folder in its place, a
            parent that cannot be created or written to; the message names the path.
    """
    from PIL import Image

    Image.init()
    suffix = os.path.splitext(path)[1].lower()
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None or fmt not in Image.SAVE or (formats is not None and fmt not in formats):
        allowed = (" or ".join(f for f in formats) if formats else "an image format PIL can write (.png, .jpg...)")
        raise ValueError(f"{option} {path!r}: cannot write {suffix or 'files without an extension'!r} "
                         f"here; use {allowed}")
    if os.path.isdir(path):
        raise ValueError(f"{option} {path!r} is a folder, not a file name")
    _check_writable_dir(os.path.dirname(os.path.abspath(path)), f"{option} {path!r}: its folder")


def check_output_dir(path: str, option: str = "--out-dir") -> None:
    """Create ``path`` if needed and check that files can be written in it.

    Raises:
        ValueError: it is a file, or cannot be created or written to; the message names the path.
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{option} {path!r} exists and is not a folder")
    _check_writable_dir(os.path.abspath(path), f"{option} {path!r}")


def _check_writable_dir(folder: str, what: str) -> None:
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ValueError(f"{what} cannot be created or written to: {err.strerror or err}") from None


def write_atomic(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp)`` on a temporary name in ``path``'s folder, then ``os.replace`` it onto ``path``."""
    folder, name = os.path.split(path)
    os.makedirs(folder or ".", exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder or ".")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())  # mkstemp's 0600 -> what open() would give (0644 under the usual umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _save_png(image: Any, path: str) -> None:
    write_atomic(path, lambda tmp: image.save(tmp, format="PNG"))


# The log files -----------------------------------------------------------------------------------------
def read_log(path: str) -> list[dict[str, Any]]:
    """Records of a JSON-lines file, cutting off (in the file too) a partial or damaged tail left by a kill.

    Returns:
        The records before the first line that is incomplete (no newline) or not a JSON object.
    """
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        data = f.read()
    records, good = [], 0
    for line in data.splitlines(keepends=True):
        try:
            record = json.loads(line) if line.endswith(b"\n") else None
        except ValueError:
            record = None
        if not isinstance(record, dict):
            break
        records.append(record)
        good += len(line)
    if good < len(data):
        logger.warning("%s: dropping a partial last line (%d bytes) left by an interrupted run", path, len(data) - good)
        with open(path, "r+b") as f:
            f.truncate(good)
    return records


def _write_lines(path: str, records: Iterable[dict[str, Any]]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(_json_line(r) for r in records)

    write_atomic(path, write)


def _json_line(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"


# The run -----------------------------------------------------------------------------------------------
def log_names(shard: tuple[int, int] | None) -> dict[str, str]:
    """File names of the logs: ``results.jsonl``... or ``results-2-of-3.jsonl``... for a shard."""
    tag = "" if shard is None else f"-{shard[0]}-of-{shard[1]}"
    return {"results": f"results{tag}.jsonl", "errors": f"errors{tag}.jsonl", "run": f"run{tag}.json",
            "lock": f"run{tag}.lock"}


# One writer per folder ---------------------------------------------------------------------------------
@contextlib.contextmanager
def output_lock(out_dir: str, shard: tuple[int, int] | None = None, option: str = "--out-dir") -> Iterator[str]:
    """Hold ``out_dir``'s lock (``run.lock``, or ``run-I-of-N.lock`` for a shard) for the ``with`` block
    (``out_dir`` is created if needed).

    The lock is an OS file lock (``flock``; ``msvcrt.locking`` on Windows) on a file that names the holder
    (pid, host, start time); the kernel releases it when the process dies, however it dies. A whole-folder
    run and a shard run conflict too; shards of one folder do not.

    Yields:
        The lock file's path (removed when the block ends).

    Raises:
        ValueError: another live run holds this lock or a conflicting one; the message names its pid, host,
            start time and lock file.
    """
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, log_names(shard)["lock"])
    fd = _acquire(path, option, out_dir)
    try:
        _check_conflicts(out_dir, shard, option)
        yield path
    finally:
        with contextlib.suppress(OSError):
            if _is_same_file(fd, path):
                os.unlink(path)  # while still holding it: a run that opened it meanwhile sees it replaced
        os.close(fd)


def _acquire(path: str, option: str, out_dir: str) -> int:
    """Open and lock ``path`` (retrying if a finishing holder removed it in between); write our name."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, file_mode())
        if not _try_lock(fd):
            holder = _read_holder(fd)
            os.close(fd)
            raise _held_error(option, out_dir, holder, path)
        if _is_same_file(fd, path):
            break
        os.close(fd)
    stale = _read_holder(fd)
    if stale:
        logger.warning("%s: taking over the lock left by a run that is no longer running (%s)", path, stale)
    holder = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(holder) + "\n").encode("utf-8"))
    return fd


def _check_conflicts(out_dir: str, shard: tuple[int, int] | None, option: str) -> None:
    """A whole-folder run conflicts with any shard's run, a shard's run with a whole-folder run."""
    others = (glob.glob(os.path.join(glob.escape(out_dir), "run-*-of-*.lock")) if shard is None
              else [os.path.join(out_dir, log_names(None)["lock"])])
    for other in others:
        try:
            fd = os.open(other, os.O_RDWR)
        except OSError:
            continue  # gone, or not ours to open
        try:
            if not _try_lock(fd):
                raise _held_error(option, out_dir, _read_holder(fd), other)
            _unlock(fd)
        finally:
            os.close(fd)


def _held_error(option: str, out_dir: str, holder: str, path: str) -> ValueError:
    return ValueError(f"{option} {out_dir!r} is being written by another run ({holder or 'holder unknown'}; "
                      f"lock file {path}); wait for it to end or use another {option}")


def _try_lock(fd: int) -> bool:
    """Take an exclusive lock on ``fd`` without waiting; False when another open file holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: lock one byte far past the holder's text, which stays readable
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # BlockingIOError (EWOULDBLOCK); EACCES on some file systems
        return False
    return True


_WINDOWS_LOCK_OFFSET = 1 << 20


def _unlock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_UN)


def _is_same_file(fd: int, path: str) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (not removed or replaced since it was opened)."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return False


def _read_holder(fd: int) -> str:
    """The holder written in a lock file, as ``"pid 123 on host h since 2024-..."``; ``""`` if none."""
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        holder = json.loads(os.read(fd, 4096).decode("utf-8"))
        return f"pid {holder['pid']} on host {holder['host']} since {holder['started']}"
    except (ValueError, KeyError, TypeError, OSError):
        return ""


def _outputs(image: InputImage, overlay: bool) -> dict[str, str]:
    out = {"labels": f"labels/{image.stem}.png"}
    if overlay:
        out["overlay"] = f"overlays/{image.stem}.png"
    return out


# A folder a run writes is new, empty, resumed or overwritten ----------------------------------------------
_SHARD_FILE = re.compile(r"(run|results|errors)-\d+-of-(\d+)\.(json|jsonl|lock)")
_OUTPUT_FOLDERS = ("labels", "overlays")


def check_fresh_output(out_dir: str, shard: tuple[int, int] | None = None, *, resume: bool = False,
                       overwrite: bool = False, inputs: Sequence[InputImage] = ()) -> None:
    """Make sure a run without ``resume`` writes into a folder that holds nothing of an earlier run, so that
    no file of that run (an overlay of an image no longer given, say) is left among the new outputs.

    A whole-folder run needs ``out_dir`` new or empty (its own lock file aside); a shard run ``I/N`` accepts
    the files of the other shards of ``N`` (and ``labels/``, ``overlays/``) but not an earlier run of its own
    shard. ``overwrite`` removes an earlier run first: for a whole-folder run every entry of ``out_dir``,
    for a shard run the files its earlier logs list and those logs; only a folder written by ``alignzeg
    segment`` (it holds a ``run.json`` / ``run-I-of-N.json``) is ever emptied, and never one that holds an
    input.

    Raises:
        ValueError: ``resume`` with ``overwrite``; a folder with an earlier run's files (without
            ``overwrite``), or with files of no run (the message names a few and what to do).
    """
    if resume and overwrite:
        raise ValueError("--resume continues the run in --out-dir and --overwrite removes it; give one")
    if resume or not os.path.isdir(out_dir):
        return
    blocking = _blocking_entries(out_dir, shard)
    if not blocking:
        return
    if not overwrite:
        raise ValueError(f"--out-dir {out_dir!r} is not empty (it holds {_some(blocking)}); use --resume to "
                         "continue the run written there, --overwrite to remove it first, or a new --out-dir")
    _remove_earlier_run(out_dir, shard, blocking, inputs)


def _blocking_entries(out_dir: str, shard: tuple[int, int] | None) -> list[str]:
    """The entries of ``out_dir`` that a fresh run (of ``shard``) must not find there, sorted."""
    own = set(log_names(shard).values())
    found = sorted(os.listdir(out_dir))
    if shard is None:
        return [name for name in found if name != log_names(None)["lock"]]
    count = str(shard[1])
    return [name for name in found if name in own - {log_names(shard)["lock"]} or not (
        name in _OUTPUT_FOLDERS or ((m := _SHARD_FILE.fullmatch(name)) is not None and m.group(2) == count))]


def _some(names: Sequence[str], limit: int = 5) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _remove_earlier_run(out_dir: str, shard: tuple[int, int] | None, blocking: Sequence[str],
                        inputs: Sequence[InputImage]) -> None:
    """``--overwrite``: remove the earlier run's files (see ``check_fresh_output``)."""
    import shutil

    names = log_names(shard)
    if not os.path.exists(os.path.join(out_dir, names["run"])) and not glob.glob(
            os.path.join(glob.escape(out_dir), "run-*-of-*.json")):
        raise ValueError(f"--overwrite: --out-dir {out_dir!r} holds {_some(blocking)} but no run of alignzeg "
                         f"segment ({names['run']}); it is not emptied: use a new or empty --out-dir")
    inside = [image.path for image in inputs if _inside(os.path.abspath(image.path), os.path.abspath(out_dir))]
    if inside:
        raise ValueError(f"--overwrite: --out-dir {out_dir!r} holds inputs of this run ({_some(inside)}); it is not "
                         "emptied: use another --out-dir")
    if shard is not None:
        foreign = [n for n in blocking if n not in names.values()]
        if foreign:
            raise ValueError(f"--overwrite --shard: --out-dir {out_dir!r} holds {_some(foreign)}, which no shard of "
                             f"{shard[1]} wrote; use a new or empty --out-dir")
        records = read_log(os.path.join(out_dir, names["results"]))
        blocking = [f for r in records for f in (r.get("labels"), r.get("overlay")) if isinstance(f, str)] + list(
            blocking)
    for name in blocking:
        path = os.path.join(out_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)
    logger.warning("--overwrite: removed the earlier run's files from %s", out_dir)


def prepare_run(out_dir: str, settings: dict[str, Any], resume: bool, overlay: bool,
                shard: tuple[int, int] | None = None, overwrite: bool = False) -> set[str]:
    """Set up ``out_dir``'s logs; return the names of the images already complete (with ``resume``).

    Without ``resume`` the folder must hold nothing of an earlier run (``check_fresh_output``; ``overwrite``
    removes it) and the logs start empty. With it, ``run.json`` must hold the same ``settings``; the results
    kept are those whose output files all exist (others are dropped from the log and redone).

    Raises:
        ValueError: ``resume`` with other settings than the run being resumed (the message lists them), or
            an earlier run's files without ``resume`` or ``overwrite``.
    """
    check_fresh_output(out_dir, shard, resume=resume, overwrite=overwrite)
    names = log_names(shard)
    results_path, run_path = (os.path.join(out_dir, names[k]) for k in ("results", "run"))
    done: set[str] = set()
    if resume and os.path.exists(run_path):
        with open(run_path, encoding="utf-8") as f:
            before = json.load(f)
        changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
        if changed:
            raise ValueError(f"--resume: {run_path} was written with other settings "
                             f"({', '.join(f'{k}: {before.get(k)!r} -> {settings.get(k)!r}' for k in changed)}); "
                             "use another --out-dir or drop --resume")
    if resume:
        records = read_log(results_path)
        kept = []
        for record in records:
            if record.get("input") not in done and _complete(out_dir, record, overlay):
                done.add(record["input"])
                kept.append(record)
        if len(kept) < len(records):
            _write_lines(results_path, kept)
    else:
        _write_lines(results_path, [])
    _write_lines(os.path.join(out_dir, names["errors"]), [])
    write_atomic(run_path, lambda tmp: Path(tmp).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8"))
    return done


def _complete(out_dir: str, record: dict[str, Any], overlay: bool) -> bool:
    files = [record.get("labels")] + ([record.get("overlay")] if overlay else [])
    return all(isinstance(f, str) and os.path.isfile(os.path.join(out_dir, f)) for f in files)


def run_batch(segmenter: Any, images: Sequence[InputImage], classes: Sequence[str], out_dir: str, *,
              settings: dict[str, Any], overlay: bool = False, resume: bool = False,
              shard: tuple[int, int] | None = None, progress: bool = True, prefetch: int = 4, workers: int = 2,
              lock: bool = True, overwrite: bool = False, **options: Any) -> BatchSummary:
    """Segment ``images`` into ``out_dir`` (layout in the module docstring), streaming with ``segment_iter``.

    Args:
        segmenter: an ``AlignZegSegmenter``.
        images: from ``collect_inputs`` (and ``select_shard``).
        classes: the vocabulary.
        out_dir: the output folder (checked with ``check_output_dir`` first).
        settings: what ``run.json`` records (classes, model, options); ``resume`` refuses other settings.
        overlay: also write colour overlays.
        resume: skip images whose outputs are complete, append to ``results.jsonl``.
        shard: ``(I, N)`` when this is one of N shards (names the log files).
        progress: show a tqdm bar (images, images/s).
        prefetch, workers: decoding look-ahead and threads (``segment_iter``).
        lock: hold ``output_lock(out_dir, shard)`` while writing (``False`` when the caller holds it).
        overwrite: without ``resume``, remove an earlier run's files from ``out_dir`` first
            (``check_fresh_output``); otherwise a folder holding them is refused.
        options: passed to ``segment_iter`` (``bias_correction``, ``unlabelled_threshold``).

    Returns:
        ``BatchSummary``. Images that cannot be read or decoded are listed in ``errors.jsonl`` and counted
        as failed; they do not stop the run.

    Raises:
        ValueError: another run is writing ``out_dir`` (``output_lock``), ``resume`` with other settings, or
            an earlier run's files in ``out_dir`` without ``resume`` or ``overwrite``.
    """
    from PIL import Image

    if lock:
        with output_lock(out_dir, shard):
            return run_batch(segmenter, images, classes, out_dir, settings=settings, overlay=overlay,
                             resume=resume, shard=shard, progress=progress, prefetch=prefetch, workers=workers,
                             lock=False, overwrite=overwrite, **options)
    from .pipeline.streaming import ImageError

    done = prepare_run(out_dir, settings, resume, overlay, shard, overwrite=overwrite)
    todo = [image for image in images if image.name not in done]
    summary = BatchSummary(skipped=len(images) - len(todo))
    names = log_names(shard)
    results_log = open(os.path.join(out_dir, names["results"]), "a", encoding="utf-8")
    errors_log = open(os.path.join(out_dir, names["errors"]), "a", encoding="utf-8")
    stream = segmenter.segment_iter((image.path for image in todo), classes, keep_image=overlay,
                                    prefetch=prefetch, workers=workers, on_error="return", **options)
    with results_log, errors_log, \
            progress_bar(len(todo), unit="img", desc="alignzeg", disable=not progress, dynamic_ncols=True) as bar:
        for image in todo:
            start = time.perf_counter()
            result = next(stream)
            seconds = time.perf_counter() - start
            if isinstance(result, ImageError):
                errors_log.write(_json_line({"input": image.name, "path": image.path, "error": result.message}))
                errors_log.flush()
                summary.failed += 1
                bar.set_postfix(failed=summary.failed)
            else:
                record = _write_outputs(result, image, out_dir, overlay, Image)
                record["seconds"] = round(seconds, 4)
                results_log.write(_json_line(record))
                results_log.flush()
                summary.done += 1
            advance(bar)  # the last step is drawn once, by close()
    return summary


def _write_outputs(result: Any, image: InputImage, out_dir: str, overlay: bool, Image: Any) -> dict[str, Any]:
    """Write one image's files (atomically) and return its ``results.jsonl`` record (without seconds)."""
    files = _outputs(image, overlay)
    _save_png(Image.fromarray((result.label_map + 1).astype("uint16")), os.path.join(out_dir, files["labels"]))
    if overlay:
        _save_png(result.overlay(), os.path.join(out_dir, files["overlay"]))
    height, width = result.size
    return {"input": image.name, "path": image.path, **files, "height": int(height), "width": int(width),
            "pixel_counts": result.pixel_counts(include_zero=True)}
