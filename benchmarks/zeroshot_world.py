"""The AlignZeg ablation on the attribute zero-shot world, with confidence intervals.

For each world (``alignzeg.train.world``): a mini-CLIP is pre-trained contrastively on captions of ALL 48
classes (``alignzeg.train.miniclip``), then every row (a variant of ``alignzeg.train.registry``) is trained on
the world's seen classes through ``alignzeg.train.Trainer`` with that CLIP frozen, the class names going
through templates -> tokenizer -> text tower, and evaluated on the same test images (seen + unseen
classes) through ``alignzeg.train.evaluate`` (``AlignZegSegmenter.segment`` with the class names typed
as text).

    python benchmarks/zeroshot_world.py --worlds 0,1 --seeds 5 --workers 2 --diagnose \
        --json docs/zeroshot_world.json --md docs/zeroshot_world.md
    python benchmarks/zeroshot_world.py --quick          # the whole pipeline on a tiny budget (~1 min)

Statistics: each row's mean over every (world, seed) run with a 95 % t-interval (scipy.stats.t, n - 1
degrees of freedom), the per-run values, and the effects as paired differences (same world, same seed)
with their own t-intervals. "+GEPC" is the "full" model evaluated without PBC when both rows run (the
class indicator trains on detached embeddings, so training it changes no other weight; ``--separate-gepc``
trains "+GEPC" on its own instead). Rows with PBC ("full" and the switch rows) have PBC's threshold (or
soft mode), seen-score offset and the CLIP readout's ensemble weights chosen on ``--val-images`` images of
the world's val split (never the test images; ``alignzeg.train.calibration_grid.choose_world_settings``);
rows with the readout but without PBC ("+GEPC") have the ensemble weights chosen there. "+GEPC+offset" is
the "full" model with the offset alone (threshold 1.0: no proposal flagged), so "full - +GEPC+offset" is
what the class indicator adds. ``--diagnose`` adds, for rows with PBC, the class indicator's ROC AUC and
the CLIP readout's top-1 accuracy on test proposals matched to ground-truth regions. Runs go to
``--workers`` processes of ``--threads`` threads each.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing as mp
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROWS = ("baseline", "+MRPE", "+GEPC", "+GEPC+offset", "full", "no-prompts", "no-grounding",
        "no-learnable-encoder", "full-vir-extra")
KEYS = ("hIoU", "mIoU_S", "mIoU_U", "misaligned")
DIFFS = (("+MRPE", "baseline"), ("+GEPC", "+MRPE"), ("full", "+GEPC"), ("full", "baseline"),
         ("+GEPC+offset", "+GEPC"), ("full", "+GEPC+offset"),
         ("full", "no-prompts"), ("full", "no-grounding"), ("full", "no-learnable-encoder"),
         ("full-vir-extra", "full"))
DERIVED = ("+GEPC", "+GEPC+offset")
"""Rows evaluated from the "full" model (no PBC; the seen-score offset alone) rather than trained."""
QUICK = dict(seeds="0,1", iterations=6, train_images=32, val_images=4, test_images=4, clip_steps=15, clip_batch=32)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worlds", default="0,1", help="world ids, comma-separated")
    p.add_argument("--family", default="attribute", choices=("attribute", "objects"),
                   help="world family: attribute textures (alignzeg.demo.world) or objects on a background that is no "
                   "class (alignzeg.train.object_world)")
    p.add_argument("--seeds", default="5", help="N (seeds 0..N-1) or a comma-separated list of training seeds "
                   "('3,' is seed 3 alone)")
    p.add_argument("--rows", default=",".join(ROWS), help="rows to run, comma-separated (default: all this "
                   "model version has)")
    p.add_argument("--iterations", type=int, default=1500, help="optimizer steps per run (same for every row)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-images", type=int, default=4000)
    p.add_argument("--val-images", type=int, default=500,
                   help="world 'val' images (drawn like test) on which PBC's threshold and offset are chosen")
    p.add_argument("--test-images", type=int, default=200)
    p.add_argument("--clip-steps", type=int, default=600, help="mini-CLIP pre-training steps per world")
    p.add_argument("--clip-batch", type=int, default=96, help="mini-CLIP pre-training batch")
    p.add_argument("--clip-dir", type=Path, default=Path("benchmarks/results/world_clip"),
                   help="where the worlds' mini-CLIP files are kept (re-used when present)")
    p.add_argument("--separate-gepc", action="store_true", help="train +GEPC on its own (not the full model "
                   "without PBC)")
    p.add_argument("--workers", type=int, default=2, help="parallel processes")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--thread-check", action="store_true",
                   help="repeat one run with one more thread and report how far its numbers move")
    p.add_argument("--diagnose", action="store_true",
                   help="class indicator ROC AUC on test proposals (full, +GEPC models) in the JSON")
    p.add_argument("--quick", action="store_true", help=f"tiny budget to check the pipeline: {QUICK}")
    p.add_argument("--json", type=Path, default=None, help="write the results JSON here")
    p.add_argument("--resume", action="store_true", help="keep the runs already in --json (same world, seed, "
                   "row and threads are not run again; rows with other settings are kept as they are)")
    p.add_argument("--md", type=Path, default=None,
                   help="put the markdown tables between the table markers of this file")
    return p


def _ints(text: str, count_ok: bool = False) -> list[int]:
    """"0,1" -> [0, 1]; with ``count_ok`` a bare "N" means 0 .. N-1 ("3," is the list [3])."""
    values = [int(v) for v in str(text).split(",") if v.strip()]
    if count_ok and len(values) == 1 and "," not in str(text):
        values = list(range(values[0]))
    if not values or min(values) < 0:
        raise ValueError(f"expected a count >= 1 or a comma-separated list of non-negative integers, got {text!r}")
    return values


# Worker side ---------------------------------------------------------------------------------------------
def _metrics(result) -> dict[str, float]:
    """EvalResult -> percentages, plus the share of unseen pixels predicted as a seen class."""
    conf, seen = result.confusion, result.seen
    k = len(seen)
    unseen_rows = conf[~seen]
    misaligned = unseen_rows[:, :k][:, seen].sum() / max(1, unseen_rows.sum())
    return {"mIoU_S": 100 * result.miou_seen, "mIoU_U": 100 * result.miou_unseen, "hIoU": 100 * result.hiou,
            "misaligned": 100 * float(misaligned)}


def clip_settings(family: str, world_config: Any, clip_config: Any) -> dict:
    """What makes a mini-CLIP file: the world family, all world settings and all pre-training settings."""
    from alignzeg.config import fields_to_dict

    return {"family": family, "world": fields_to_dict(world_config), "mini_clip": fields_to_dict(clip_config)}


def check_clip_file(path: str, settings: dict) -> None:
    """Refuse to re-use the mini-CLIP file ``path`` unless its record (``path + ".json"``) equals ``settings``.

    Raises:
        ValueError: naming the settings that differ, or saying the file records none.
    """
    record = Path(path + ".json")
    if not record.is_file():
        raise ValueError(f"mini-CLIP file {path} records no settings ({record.name} is missing), so it may come "
                         "from other world or pre-training settings; delete it to pre-train it again")
    made = json.loads(record.read_text())
    diffs = [f"{part}.{key}: file {made.get(part, {}).get(key)!r}, now {value!r}"
             for part in ("world", "mini_clip") for key, value in settings[part].items()
             if made.get(part, {}).get(key) != value]
    if made.get("family") != settings["family"]:
        diffs.insert(0, f"family: file {made.get('family')!r}, now {settings['family']!r}")
    if diffs:
        raise ValueError(f"mini-CLIP file {path} was made with other settings ({'; '.join(diffs)}); delete it "
                         "to pre-train it again")


def pretrain_job(job: dict) -> dict:
    """Pre-train (or load) world ``job["world"]``'s mini-CLIP and measure its zero-shot accuracy."""
    import torch

    torch.set_num_threads(job["threads"])
    from alignzeg.train.miniclip import MiniClipConfig, pretrain_clip, save_clip, zero_shot_accuracy
    from alignzeg.train.object_world import make_world

    world = make_world(job.get("family", "attribute"), job["world"])
    config = MiniClipConfig(steps=job["clip_steps"], batch_size=job["clip_batch"], seed=job["world"])
    settings = clip_settings(job.get("family", "attribute"), world.config, config)
    start, seconds = time.time(), None
    if Path(job["path"]).is_file():
        check_clip_file(job["path"], settings)  # re-used only if made with these very settings
    else:
        clip = pretrain_clip(world, config)
        seconds = round(time.time() - start, 1)
        save_clip(clip, job["path"])
        Path(job["path"] + ".json").write_text(json.dumps(settings, indent=2) + "\n")
    # What the segmenter sees: the fp16 file's values.
    from alignzeg.segmenter import AlignZegSegmenter

    saved = AlignZegSegmenter.from_preset("tiny", clip_pretrained=job["path"]).model.backbone.clip
    accuracy = zero_shot_accuracy(saved, world, 960)
    return {"world": job["world"], "path": job["path"], "pretrain_s": seconds,
            "zero_shot_top1": {k: round(100 * v, 2) for k, v in accuracy.items()}}


def run_job(job: dict) -> dict:
    """Train one variant with one seed on one world and evaluate it (and +GEPC from full, when asked)."""
    import torch

    torch.set_num_threads(job["threads"])
    from alignzeg.train import Trainer, evaluate
    from alignzeg.train.registry import apply_variant, variant_uses_pbc
    from alignzeg.train.world import world_train_config
    from alignzeg.train.object_world import make_world
    from alignzeg.train.world import WorldDataset

    world = make_world(job.get("family", "attribute"), job["world"])
    cfg = apply_variant(world_train_config(world, job["clip"], iterations=job["iterations"],
                                           batch_size=job["batch_size"], lr=job["lr"], seed=job["seed"],
                                           progress=False), job["variant"])
    start = time.time()
    trainer = Trainer(cfg, None, WorldDataset(world, "train", job["train_images"]))
    segmenter = trainer.train()
    train_s = time.time() - start
    config = segmenter.model.config
    test = WorldDataset(world, "test", job["test_images"])
    rows, calibration = {}, None
    if variant_uses_pbc(job["variant"]) or config.clip_readout:
        from alignzeg.train.calibration_grid import choose_world_settings

        calibration = choose_world_settings(segmenter, WorldDataset(world, "val", job["val_images"]),
                                            variant_uses_pbc(job["variant"]))
    if variant_uses_pbc(job["variant"]):
        if job.get("also_gepc"):
            segmenter.model.config = config.replace(**calibration["offset_only"])
            rows["+GEPC+offset"] = _metrics(evaluate(segmenter, test, bias_correction=True))
        segmenter.model.config = config.replace(**calibration["best"])
        rows[job["variant"]] = _metrics(evaluate(segmenter, test, bias_correction=True))
    else:
        if calibration is not None:
            segmenter.model.config = config.replace(**calibration["no_pbc"])
        rows[job["variant"]] = _metrics(evaluate(segmenter, test, bias_correction=False))
    if job.get("also_gepc"):
        segmenter.model.config = config.replace(**calibration["no_pbc"])
        rows["+GEPC"] = _metrics(evaluate(segmenter, test, bias_correction=False))
    result = {"world": job["world"], "seed": job["seed"], "variant": job["variant"], "rows": rows,
              "threads": job["threads"], "thread_check": bool(job.get("thread_check")), "train_s": round(train_s, 1)}
    if calibration is not None:
        result["calibration"] = calibration
    if job.get("diagnose") and variant_uses_pbc(job["variant"]):
        from alignzeg.train.diagnostics import indicator_auc

        segmenter.model.config = config.replace(**calibration["best"])
        diag = indicator_auc(segmenter, test)
        result["indicator_auc"] = diag.auc
        result["diagnostics"] = diag.to_dict()
    result["total_s"] = round(time.time() - start, 1)
    return result


# Statistics ----------------------------------------------------------------------------------------------
def t_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided t confidence interval of the mean (NaN for fewer than two values)."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


def _interval(values: np.ndarray) -> list[float | None]:
    """The rounded 95 % interval as JSON numbers (``None`` for fewer than two values)."""
    return [None if math.isnan(v) else round(v, 2) for v in t_interval(values)]


def _per_run(results: list[dict], row: str, key: str) -> dict[tuple[int, int], float]:
    return {(r["world"], r["seed"]): r["rows"][row][key] for r in results if row in r["rows"]}


def aggregate(results: list[dict]) -> tuple[dict, dict]:
    """Rows (mean, 95 % interval, per-run values of every key) and paired differences, as JSON-ready dicts."""
    rows, diffs = {}, {}
    for name in ROWS:
        runs = _per_run(results, name, "hIoU")
        if not runs:
            continue
        row = {"runs": [{"world": w, "seed": s} for w, s in sorted(runs)]}
        for key in KEYS:
            values = np.array([v for _, v in sorted(_per_run(results, name, key).items())])
            row[key] = round(float(values.mean()), 2)
            row[f"{key}_ci95"] = _interval(values)
            row[f"{key}_values"] = [round(float(v), 2) for v in values]
        rows[name] = row
    for a, b in DIFFS:
        if a not in rows or b not in rows:
            continue
        diff = {}
        for key in KEYS:
            va, vb = _per_run(results, a, key), _per_run(results, b, key)
            pairs = sorted(set(va) & set(vb))
            values = np.array([va[p] - vb[p] for p in pairs])
            diff[key] = {"mean": round(float(values.mean()), 2), "ci95": _interval(values),
                         "values": [round(float(v), 2) for v in values]}
        diffs[f"{a} - {b}"] = diff
    return rows, diffs


def targets(rows: dict, diffs: dict, auc: list[float], readout_unseen: float | None = None) -> list[dict]:
    """The targets with pass/fail as measured (``None``: not measured in this run)."""
    def get(d, *keys):
        for k in keys:
            if d is None or k not in d:
                return None
            d = d[k]
        return d

    def above(d, least):
        return None if d is None else bool(d["mean"] >= least and (d["ci95"][0] or 0) > 0)

    out = []
    mean_auc = round(float(np.nanmean(auc)), 3) if auc else None
    out.append({"target": "class indicator ROC AUC >= 0.80 on matched test proposals (mean)", "measured": mean_auc,
                "pass": None if mean_auc is None else mean_auc >= 0.8})
    d = get(diffs, "full - +GEPC+offset", "hIoU")
    out.append({"target": "full - +GEPC+offset >= +1.5 hIoU, interval above 0", "measured": d, "pass": above(d, 1.5)})
    out.append({"target": "CLIP readout top-1 on matched unseen regions >= 40 %", "measured": readout_unseen,
                "pass": None if readout_unseen is None else readout_unseen >= 40})
    d = get(diffs, "full - no-grounding", "mIoU_U")
    out.append({"target": "full - no-grounding mIoU(U), interval above 0", "measured": d, "pass": above(d, -1e9)})
    d = get(diffs, "full - baseline", "hIoU")
    out.append({"target": "full - baseline >= +10 hIoU, interval above 0", "measured": d, "pass": above(d, 10)})
    d = get(diffs, "+MRPE - baseline", "hIoU")
    out.append({"target": "+MRPE - baseline hIoU, interval above 0", "measured": d, "pass": above(d, -1e9)})
    return out


# Report --------------------------------------------------------------------------------------------------
def _fmt(row: dict, key: str) -> str:
    lo, hi = row[f"{key}_ci95"]
    return f"{row[key]:.1f} [{lo:.1f}, {hi:.1f}]" if lo is not None else f"{row[key]:.1f}"


def _fmt_diff(d: dict) -> str:
    lo, hi = d["ci95"]
    return f"{d['mean']:+.1f} [{lo:+.1f}, {hi:+.1f}]" if lo is not None else f"{d['mean']:+.1f}"


def markdown(rows: dict, diffs: dict, goals: list[dict], n_runs: int) -> str:
    lines = ["| row | runs | hIoU | mIoU(S) | mIoU(U) | unseen px -> seen class |", "|---|---|---|---|---|---|"]
    lines += [f"| {name} | {len(row['hIoU_values'])} | " + " | ".join(_fmt(row, k) for k in KEYS) + " |"
              for name, row in rows.items()]
    lines += ["", f"Mean [95 % t-interval] over the runs (world x training seed; {n_runs} pairs in all), in %.", "",
              "| paired difference | pairs | hIoU | mIoU(S) | mIoU(U) | unseen px -> seen class |",
              "|---|---|---|---|---|---|"]
    for name, diff in diffs.items():
        lines.append(f"| {name} | {len(diff['hIoU']['values'])} | " + " | ".join(_fmt_diff(diff[k]) for k in KEYS) + " |")
    lines += ["", "| target | measured | pass |", "|---|---|---|"]
    for g in goals:
        m = g["measured"]
        text = _fmt_diff(m) if isinstance(m, dict) else "not run" if m is None else f"{m:.3g}"
        lines.append(f"| {g['target']} | {text} | {'-' if g['pass'] is None else 'yes' if g['pass'] else '**no**'} |")
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, table: str, command: str) -> None:
    start, end = "<!-- table:start -->", "<!-- table:end -->"
    block = f"{start}\n```\n{command}\n```\n\n{table}{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else f"# Zero-shot world\n\n{start}\n{end}\n"
    if start not in text or end not in text:
        text = text.rstrip("\n") + f"\n\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    path.write_text(head + block + rest.split(end, 1)[1], encoding="utf-8")


# Driver --------------------------------------------------------------------------------------------------
def plan(args: argparse.Namespace, clips: dict[int, str]) -> list[dict]:
    """One job per (world, seed, trained variant); +GEPC rides on full unless --separate-gepc.

    Jobs are ordered so that a run stopped early still has paired rows: first the paper's rows (baseline,
    +MRPE, +GEPC, full) seed by seed, world by world, then the switch rows in the same order; with
    ``--thread-check`` one more run repeats the first "full" run (or the first run) with ``--threads + 1``
    threads.
    """
    from alignzeg.train.registry import list_variants

    wanted = [r for r in args.rows.split(",") if r]
    unknown = [r for r in wanted if r not in ROWS]
    if unknown:
        raise ValueError(f"unknown rows {unknown}; rows are {ROWS}")
    rows = [r for r in wanted if r in list_variants()]
    reuse = "+GEPC" in rows and "full" in rows and not args.separate_gepc  # +GEPC+offset needs it too
    trained = [r for r in rows if not (reuse and r == "+GEPC")]
    common = {k: getattr(args, k) for k in ("iterations", "batch_size", "lr", "train_images", "val_images",
                                            "test_images", "threads", "diagnose")}
    common["family"] = getattr(args, "family", "attribute")
    core = [r for r in trained if r in ("baseline", "+MRPE", "+GEPC", "full")]
    jobs = [dict(common, world=w, seed=s, variant=v, clip=clips[w], also_gepc=reuse and v == "full")
            for group in (core, [r for r in trained if r not in core])
            for s in _ints(args.seeds, count_ok=True) for w in _ints(args.worlds) for v in group]
    if args.thread_check and jobs:
        first = next((j for j in jobs if j["variant"] == "full"), jobs[0])
        jobs.insert(1, dict(first, threads=args.threads + 1, thread_check=True))
    return jobs


def _summary(res: dict, start: float) -> str:
    return (f"[{time.time() - start:6.0f}s] world {res['world']} seed {res['seed']}"
            + (f" ({res['threads']} threads)" if res.get("thread_check") else "") + ": "
            + "; ".join(f"{n}: " + " ".join(f"{k}={v:.1f}" for k, v in m.items()) for n, m in res["rows"].items())
            + (f" AUC={res['indicator_auc']:.3f}" if "indicator_auc" in res else "") + f" (train {res['train_s']:.0f}s)")


def thread_check(results: list[dict]) -> dict | None:
    """How far the same run moves with another thread count: the differences of every metric."""
    extra = [r for r in results if r.get("thread_check")]
    if not extra:
        return None
    other = extra[0]
    base = next((r for r in results if not r.get("thread_check") and (r["world"], r["seed"], r["variant"])
                 == (other["world"], other["seed"], other["variant"])), None)
    if base is None:
        return None
    return {"world": other["world"], "seed": other["seed"], "variant": other["variant"],
            "threads": [base["threads"], other["threads"]],
            "difference": {row: {k: round(other["rows"][row][k] - base["rows"][row][k], 2) for k in KEYS}
                           for row in base["rows"]}}


def report(args: argparse.Namespace, command: str, clip_info: list[dict], results: list[dict], wall: float,
           jobs_planned: int) -> str:
    """Aggregate, and write the JSON/markdown (called after every run, so a stopped run keeps its results)."""
    main_runs = [r for r in results if not r.get("thread_check")]
    rows, diffs = aggregate(main_runs)
    auc = [r["indicator_auc"] for r in main_runs if "indicator_auc" in r and r["variant"] == "full"]
    readout = [100 * r["diagnostics"]["readout_acc_unseen"] for r in main_runs if r["variant"] == "full"
               and (r.get("diagnostics") or {}).get("readout_acc_unseen") is not None]
    readout_unseen = round(float(np.mean(readout)), 2) if readout else None
    goals = targets(rows, diffs, auc, readout_unseen)
    table = markdown(rows, diffs, goals, len({(r["world"], r["seed"]) for r in main_runs}))
    if args.json is not None:
        payload = {"command": command, "worlds": sorted({r["world"] for r in main_runs}),
                   "seeds": sorted({r["seed"] for r in main_runs}),
                   "complete": len(results) == jobs_planned, "runs_done": len(results), "runs_planned": jobs_planned,
                   "family": getattr(args, "family", "attribute"),
                   "settings": {k: getattr(args, k) for k in ("iterations", "batch_size", "lr", "train_images",
                                                             "val_images", "test_images", "clip_steps", "clip_batch", "workers",
                                                             "threads", "separate_gepc")},
                   "mini_clip": clip_info, "rows": rows, "paired_differences": diffs, "targets": goals,
                   "indicator_auc_full": auc, "clip_readout_unseen_acc": readout_unseen,
                   "clip_readout_unseen_acc_full": readout, "thread_check": thread_check(results),
                   "runs": sorted(results, key=lambda r: (r["world"], r["seed"], r["variant"], r["threads"])),
                   "wall_time_s": round(wall)}
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    if args.md is not None and rows:
        write_markdown(args.md, table, command)
    return table


def previous_runs(args: argparse.Namespace) -> list[dict]:
    """With ``--resume``, the runs of the existing ``--json`` file (none without it)."""
    if not args.resume or args.json is None or not args.json.is_file():
        return []
    runs = json.loads(args.json.read_text(encoding="utf-8"))["runs"]
    print(f"resuming: {len(runs)} runs kept from {args.json}", flush=True)
    return runs


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
    logging.basicConfig(level=logging.WARNING)
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0])] + (argv or sys.argv[1:]))
    start = time.time()
    args.clip_dir.mkdir(parents=True, exist_ok=True)
    prefix = "" if args.family == "attribute" else f"{args.family}-"  # attribute files keep their names
    clip_jobs = [{"world": w, "clip_steps": args.clip_steps, "clip_batch": args.clip_batch, "threads": args.threads,
                  "family": args.family, "path": str(args.clip_dir / f"{prefix}world{w}_steps{args.clip_steps}"
                                                                      f"_batch{args.clip_batch}.safetensors")}
                 for w in _ints(args.worlds)]
    with mp.get_context("spawn").Pool(args.workers) as pool:
        clip_info = pool.map(pretrain_job, clip_jobs)
        for c in clip_info:
            made = "file re-used" if c["pretrain_s"] is None else f"pre-trained in {c['pretrain_s']} s"
            print(f"[{time.time() - start:6.0f}s] world {c['world']} mini-CLIP ({made}): zero-shot top-1 "
                  f"{c['zero_shot_top1']}", flush=True)
        jobs = plan(args, {c["world"]: c["path"] for c in clip_info})
        results = previous_runs(args)
        done = {(r["world"], r["seed"], r["variant"], r["threads"]) for r in results}
        jobs = [j for j in jobs if (j["world"], j["seed"], j["variant"], j["threads"]) not in done]
        jobs_total = len(jobs) + len(results)
        table = report(args, command, clip_info, results, time.time() - start, jobs_total) if results else ""
        for res in pool.imap_unordered(run_job, jobs):
            print(_summary(res, start), flush=True)
            results.append(res)
            table = report(args, command, clip_info, results, time.time() - start, jobs_total)
    print(table)
    if thread_check(results):
        print("thread check:", json.dumps(thread_check(results)))
    print(f"total wall time {time.time() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
