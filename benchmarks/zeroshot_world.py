"""The AlignZeg ablation on the zero-shot worlds, calibrated as a user can, with confidence intervals.

For each world (``alignzeg.worlds.export`` / ``alignzeg.worlds.objects``): a mini-CLIP is pre-trained
contrastively on captions of ALL classes (``alignzeg.worlds.miniclip``), then every trained variant of
``alignzeg.train.training.registry`` is trained on the world's seen classes through ``alignzeg.train.Trainer`` with
that CLIP frozen (class names through templates -> tokenizer -> text tower) and evaluated on the same test
images (seen + unseen classes, every name typed as text).

    python benchmarks/zeroshot_world.py --worlds 0,1,2 --seeds 4 --workers 2 --diagnose \
        --json docs/zeroshot_world.json --md docs/zeroshot_world.md
    python benchmarks/zeroshot_world.py --quick          # the whole pipeline on a tiny budget (~2 min)

Post-processing (seen-score offset, PBC threshold or soft mode, the CLIP readout's ensemble weights) is
chosen for every row by the same protocol and on the same grid; three protocols are reported:

- **inductive** (the headline): per world and trained variant one *calibration model* is trained exactly like
  the row's models but with ``--validation-fraction`` of the seen classes held out (``TrainConfig.
  validation_classes``: their pixels ignored, like unseen classes); the settings with the best hIoU of the
  validation classes against the remaining seen classes on ``--val-images`` val images
  (``alignzeg.train.evaluation.calibrate.calibrate_inductive``'s view: every other class's pixels ignored, the
  vocabulary the 40 seen names) are applied to every seed's model trained on all seen classes. No label of
  a test-unseen class chooses anything. One calibration model per world and variant is shared by the seeds
  (training seed ``CALIBRATION_SEED``).
- **transductive**: chosen on the same val images with every class's labels, the test's unseen ones
  included (what the earlier tables did; an upper bound a user cannot reach).
- **fixed**: set in advance, nothing chosen: FC-CLIP's readout weights (0.4 seen / 0.8 unseen), PBC
  threshold 0.5 (the paper's), seen-score offset ``FIXED_OFFSET``.

Rows (``ROWS``): each is a trained variant read out with some parts of the post-processing. ``baseline`` and
``+MRPE`` get the seen-score offset (it needs no class indicator); ``baseline+readout`` / ``+MRPE+readout`` are
the same models with the CLIP region readout and its ensemble switched on at inference (it has no trained
weight); ``+GEPC`` is the full model with no bias correction at all (readout weights calibrated, no offset,
no flag: the one row without the offset), ``+GEPC+offset`` the full model with the offset (PBC threshold
1.0: no proposal flagged), ``full`` with PBC's flags too, ``full-void-fcclip`` the full model with FC-CLIP's
void handling in the ensemble. Effects are paired differences (same world, same seed). ``--diagnose`` adds,
for full runs, the class indicator's ROC AUC and that of its untrained reference, the ensemble margin the
offset thresholds, on test proposals matched to ground-truth regions, and the CLIP readout's top-1 there.
Runs go to ``--workers`` processes of ``--threads`` threads each.
"""

from __future__ import annotations

import argparse
import dataclasses
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

PROTOCOLS = ("inductive", "transductive", "fixed")
ROWS = {
    # row: (trained variant, CLIP readout at inference, PBC flags, bias correction (offset), ensemble void)
    "baseline": ("baseline", False, False, True, "joint"),
    "baseline+readout": ("baseline", True, False, True, "joint"),
    "+MRPE": ("+MRPE", False, False, True, "joint"),
    "+MRPE+readout": ("+MRPE", True, False, True, "joint"),
    "+GEPC": ("full", True, False, False, "joint"),
    "+GEPC+offset": ("full", True, False, True, "joint"),
    "full": ("full", True, True, True, "joint"),
    "full-void-fcclip": ("full", True, True, True, "fcclip"),
    "no-prompts": ("no-prompts", True, True, True, "joint"),
    "no-grounding": ("no-grounding", False, True, True, "joint"),
    "no-learnable-encoder": ("no-learnable-encoder", True, True, True, "joint"),
    "full-vir-extra": ("full-vir-extra", True, True, True, "joint"),
}
"""Every row the benchmark can report and how it is read out of its trained variant."""
KEYS = ("hIoU", "mIoU_S", "mIoU_U", "misaligned")
DIFFS = (("+MRPE", "baseline"), ("baseline+readout", "baseline"), ("+MRPE+readout", "baseline+readout"),
         ("+GEPC+offset", "+MRPE+readout"), ("full", "+GEPC+offset"), ("full", "+GEPC"),
         ("full", "baseline"), ("full", "baseline+readout"), ("full-void-fcclip", "full"),
         ("full", "no-prompts"), ("full", "no-grounding"), ("full", "no-learnable-encoder"),
         ("full-vir-extra", "full"))
CALIBRATION_SEED = 100
"""Training seed of the calibration models (apart from the table's seeds 0, 1, ...)."""
FIXED_OFFSET = 1.0
"""The fixed protocol's seen-score offset (logits: a seen class's odds divided by e), set in advance."""
FIXED_THRESHOLD = 0.5
"""The fixed protocol's PBC threshold (the paper's default)."""
FIXED_READOUT = (0.4, 0.8)
"""The fixed protocol's readout weights (FC-CLIP's)."""
CLIP_STEPS = {"attribute": 600, "objects": 1500}
"""Default mini-CLIP pre-training steps of each family (the object world's needs more: docs/zeroshot_objects.md)."""
CLOSEUP_PROB = {"attribute": 0.0, "objects": 0.5}
"""Default share of close-ups in each family's mini-CLIP pre-training (``MiniClipConfig.closeup_prob``): the
attribute world's images are close-ups already; the object world's mini-CLIP needs them (docs/zeroshot_objects.md)."""
QUICK = dict(seeds="0,1", iterations=6, train_images=32, val_images=4, test_images=4, clip_steps=15, clip_batch=32)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worlds", default="0,1", help="world ids, comma-separated")
    p.add_argument("--family", default="attribute", choices=("attribute", "objects"),
                   help="world family: attribute textures (alignzeg.worlds.attributes) or objects on a background that is no "
                   "class (alignzeg.worlds.objects)")
    p.add_argument("--seeds", default="4", help="N (seeds 0..N-1) or a comma-separated list of training seeds "
                   "('3,' is seed 3 alone)")
    p.add_argument("--rows", default="baseline,baseline+readout,+MRPE,+MRPE+readout,+GEPC,+GEPC+offset,full,"
                   "full-void-fcclip", help=f"rows to report, comma-separated, from {list(ROWS)}")
    p.add_argument("--iterations", type=int, default=1500, help="optimizer steps per run (same for every row)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-images", type=int, default=4000)
    p.add_argument("--val-images", type=int, default=500,
                   help="world 'val' images (drawn like test) on which the post-processing is chosen")
    p.add_argument("--test-images", type=int, default=200)
    p.add_argument("--protocols", default=",".join(PROTOCOLS),
                   help="protocols to report, the first the headline (without 'inductive' no calibration model is "
                   "trained)")
    p.add_argument("--validation-fraction", type=float, default=0.2,
                   help="share of the seen classes each calibration model holds out (inductive protocol)")
    p.add_argument("--clip-steps", default=None,
                   help="mini-CLIP pre-training steps: N for every world, or WORLD=N items ('0=1500,1=2000'; a world "
                   f"not named gets the family's default, {CLIP_STEPS})")
    p.add_argument("--clip-batch", type=int, default=96, help="mini-CLIP pre-training batch")
    p.add_argument("--clip-multi-prob", type=float, default=0.3,
                   help="share of the mini-CLIP's pre-training images that are captioned multi-class scenes "
                   "(0: single-class images only, the control)")
    p.add_argument("--clip-closeup-prob", type=float, default=None,
                   help="share of the mini-CLIP's pre-training images that are close-ups of one class filling the frame "
                   f"(default: the family's, {CLOSEUP_PROB})")
    p.add_argument("--clip-dir", type=Path, default=Path("benchmarks/results/world_clip"),
                   help="where the worlds' mini-CLIP files are kept (re-used when present)")
    p.add_argument("--model-set", action="append", default=[], metavar="FIELD=VALUE",
                   help="a model config field set in every trained model after its variant (a JSON value: "
                   "refinement_gates=true); repeatable, recorded in the JSON")
    p.add_argument("--train-set", action="append", default=[], metavar="FIELD=VALUE",
                   help="a TrainConfig field set in every training run after its variant (a JSON value: "
                   "'lr_multipliers={\"extractor.side\": 0.1}'); repeatable, recorded in the JSON")
    p.add_argument("--save-models", type=Path, default=None, metavar="DIR",
                   help="save every table model (not the calibration models) as DIR/<family>-world<w>-seed<s>-<variant>")
    p.add_argument("--workers", type=int, default=2, help="parallel processes")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--diagnose", action="store_true",
                   help="class indicator and ensemble-margin ROC AUC on test proposals (full runs) in the JSON")
    p.add_argument("--quick", action="store_true", help=f"tiny budget to check the pipeline: {QUICK}")
    p.add_argument("--json", type=Path, default=None, help="write the results JSON here")
    p.add_argument("--resume", action="store_true", help="keep the jobs already in --json (calibration models and "
                   "runs of the same world, seed and variant are not run again)")
    p.add_argument("--md", type=Path, default=None,
                   help="put the markdown tables between the table markers of this file")
    return p


def json_settings(items: list[str], flag: str = "--model-set") -> dict[str, Any]:
    """``["refinement_gates=true", ...]`` -> ``{"refinement_gates": True}`` (values are JSON): what ``flag``
    (``--model-set`` or ``--train-set``) was given.

    Raises:
        ValueError: an item without ``=`` or whose value is not JSON, naming the flag and the item.
    """
    out = {}
    for item in items:
        name, sep, value = (part.strip() for part in item.partition("="))
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            sep = ""  # not a JSON value: refused below like a missing "="
        if not sep or not name:
            raise ValueError(f"{flag} takes FIELD=VALUE with a JSON value (refinement_gates=true), got {item!r}")
    return out


def world_recipe() -> dict[str, Any]:
    """``world_train_config``'s fields for every world (``WORLD_RECIPE``) as JSON values (lists for tuples)."""
    from alignzeg.train.training.world_recipe import WORLD_RECIPE

    return WORLD_RECIPE.to_dict()


def clip_steps_per_world(text: str | None, worlds: list[int], family: str) -> dict[int, int]:
    """``--clip-steps`` -> {world: steps}: None is the family's default for every world, "N" is N for every
    world, "0=1500,1=2000" sets those worlds (the others get the family's default).

    Raises:
        ValueError: a step count that is not a positive integer or a world that is not in ``worlds``, naming it.
    """
    steps = {w: CLIP_STEPS[family] for w in worlds}
    if text is None:
        return steps
    usage = "--clip-steps takes N or WORLD=N items with N >= 1 ('0=1500,1=2000'), got"
    items = [item.strip() for item in str(text).split(",") if item.strip()]
    if not items:
        raise ValueError(f"{usage} {text!r}")
    for item in items:
        world, sep, value = item.rpartition("=")
        try:
            count, targets = int(value), ([int(world)] if sep else list(worlds))
        except ValueError:
            count, targets = 0, []
        if count < 1:
            raise ValueError(f"{usage} {item!r}")
        if sep and targets[0] not in steps:
            raise ValueError(f"--clip-steps names world {targets[0]}, which is not in --worlds {worlds}")
        steps.update({w: count for w in targets})
    return steps


def _ints(text: str, count_ok: bool = False) -> list[int]:
    """"0,1" -> [0, 1]; with ``count_ok`` a bare "N" means 0 .. N-1 ("3," is the list [3])."""
    values = [int(v) for v in str(text).split(",") if v.strip()]
    if count_ok and len(values) == 1 and "," not in str(text):
        values = list(range(values[0]))
    if not values or min(values) < 0:
        raise ValueError(f"expected a count >= 1 or a comma-separated list of non-negative integers, got {text!r}")
    return values


# Worker side ---------------------------------------------------------------------------------------------
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
    from alignzeg.worlds.miniclip import MiniClipConfig

    made = json.loads(record.read_text())
    made.setdefault("mini_clip", {}).setdefault("closeup_prob", MiniClipConfig().closeup_prob)  # older records
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
    from alignzeg.worlds.miniclip import MiniClipConfig, pretrain_clip, save_clip, zero_shot_accuracy
    from alignzeg.worlds.objects import make_world

    world = make_world(job.get("family", "attribute"), job["world"])
    config = MiniClipConfig(steps=job["clip_steps"], batch_size=job["clip_batch"], seed=job["world"],
                            multi_prob=job.get("multi_prob", 0.3), closeup_prob=job.get("closeup_prob", 0.0))
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
    return {"world": job["world"], "path": job["path"], "pretrain_s": seconds, "steps": config.steps,
            "multi_prob": config.multi_prob,
            "closeup_prob": config.closeup_prob, "zero_shot_top1": {k: round(100 * v, 2) for k, v in accuracy.items()}}


def _train(job: dict, validation_classes: tuple[str, ...] = ()) -> tuple[Any, Any, float]:
    """Train ``job``'s variant on its world (holding ``validation_classes`` out): (world, segmenter, seconds)."""
    import torch

    torch.set_num_threads(job["threads"])
    from alignzeg.train import Trainer
    from alignzeg.worlds.objects import make_world
    from alignzeg.train.training.registry import apply_variant
    from alignzeg.train.training.world_recipe import world_train_config
    from alignzeg.worlds.export import WorldDataset

    world = make_world(job["family"], job["world"])
    cfg = apply_variant(world_train_config(world, job["clip"], iterations=job["iterations"],
                                           batch_size=job["batch_size"], lr=job["lr"], seed=job["seed"],
                                           validation_classes=validation_classes, progress=False), job["variant"])
    if job.get("model_set"):
        cfg = cfg.replace(model_overrides={**cfg.model_overrides, **job["model_set"]})
    if job.get("train_set"):
        cfg = cfg.replace(**job["train_set"])
    start = time.time()
    segmenter = Trainer(cfg, None, WorldDataset(world, "train", job["train_images"])).train()
    return world, segmenter, time.time() - start


def _readout_on(segmenter: Any) -> Any:
    """The model's config, and the segmenter switched to cache the CLIP readout too (it has no trained weight,
    so a model trained without it can be read out with it; with readout weights (0, 0) it changes nothing)."""
    config = segmenter.model.config
    segmenter.model.config = config.replace(clip_readout=True)
    return config


def _grid(row: str) -> dict[str, Any]:
    """``calibration_grid.search``'s axes for ``row``: every part of the post-processing that the row has."""
    from alignzeg.train.evaluation.calibration_grid import WORLD_CALIB_OFFSETS, WORLD_CALIB_PBC, WORLD_CALIB_READOUT

    _, readout, pbc, bias, _ = ROWS[row]
    return {"pbc": WORLD_CALIB_PBC if pbc else (1.0,), "offsets": WORLD_CALIB_OFFSETS if bias else (0.0,),
            "readout_weights": WORLD_CALIB_READOUT if readout else ((0.0, 0.0),), "bias_correction": bias}


def _row_config(config: Any, row: str) -> Any:
    """The model config a row is read out with (readout on, the row's ensemble void)."""
    return config.replace(clip_readout=True, ensemble_void=ROWS[row][4])


def choose(cached: Any, config: Any, rows: list[str]) -> dict[str, dict]:
    """The best grid point of each row on cached validation outputs: row -> settings + ``val_hIoU`` (%)."""
    from alignzeg.train.evaluation.calibration_grid import SETTINGS, search

    chosen = {}
    for row in rows:
        best, _ = search(cached, _row_config(config, row), **_grid(row))
        chosen[row] = dict({k: best[k] for k in SETTINGS}, val_hIoU=round(100 * best["hIoU"], 2))
    return chosen


def fixed_settings(row: str) -> dict[str, Any]:
    """The fixed protocol's settings of ``row`` (set in advance: ``FIXED_*``)."""
    _, readout, pbc, bias, _ = ROWS[row]
    seen, unseen = FIXED_READOUT if readout else (0.0, 0.0)
    return {"pbc_threshold": FIXED_THRESHOLD if pbc else 1.0, "pbc_soft": False,
            "seen_score_offset": FIXED_OFFSET if bias else 0.0, "readout_weight_seen": seen,
            "readout_weight_unseen": unseen}


def _rows_of(job: dict) -> list[str]:
    return [r for r in job["rows"] if ROWS[r][0] == job["variant"]]


def calibration_job(job: dict) -> dict:
    """Train world ``job["world"]``'s calibration model of one variant (validation classes held out) and choose
    each of the variant's rows' settings on its validation classes: the inductive protocol."""
    from alignzeg.train.evaluation.calibrate import CalibrationView, pick_validation_classes
    from alignzeg.train.evaluation.calibration_grid import cache_outputs
    from alignzeg.worlds.objects import make_world
    from alignzeg.worlds.export import WorldDataset

    seen = make_world(job["family"], job["world"]).seen_classes
    held_out = pick_validation_classes(seen, max(1, round(job["validation_fraction"] * len(seen))), job["world"])
    world, segmenter, train_s = _train(job, held_out)
    config = _readout_on(segmenter)
    view = CalibrationView(WorldDataset(world, "val", job["val_images"]), seen, config.seen_classes)
    chosen = choose(cache_outputs(segmenter, view), config, _rows_of(job))
    return {"kind": "calibration", "world": job["world"], "variant": job["variant"], "seed": job["seed"],
            "validation_classes": list(held_out), "calibration_classes": list(view.class_names),
            "settings": chosen, "train_s": round(train_s, 1)}


def _metrics(result) -> dict[str, float]:
    """EvalResult -> percentages, plus the share of unseen pixels predicted as a seen class."""
    conf, seen = result.confusion, result.seen
    k = len(seen)
    unseen_rows = conf[~seen]
    misaligned = unseen_rows[:, :k][:, seen].sum() / max(1, unseen_rows.sum())
    return {"mIoU_S": 100 * result.miou_seen, "mIoU_U": 100 * result.miou_unseen, "hIoU": 100 * result.hiou,
            "misaligned": 100 * float(misaligned)}


def _settings_only(point: dict) -> dict:
    from alignzeg.train.evaluation.calibration_grid import SETTINGS

    return {k: point[k] for k in SETTINGS}


def run_job(job: dict) -> dict:
    """Train one variant with one seed on one world; evaluate its rows under the three protocols."""
    from alignzeg.train.evaluation.calibration_grid import cache_outputs, evaluate_cached
    from alignzeg.worlds.export import WorldDataset

    world, segmenter, train_s = _train(job)
    if job.get("save_models"):
        segmenter.save_pretrained(Path(job["save_models"]) / f"{job['family']}-world{job['world']}-seed{job['seed']}-"
                                                             f"{job['variant']}")
    start = time.time()
    config = _readout_on(segmenter)
    test = cache_outputs(segmenter, WorldDataset(world, "test", job["test_images"]))
    rows = _rows_of(job)
    settings = {"fixed": {row: fixed_settings(row) for row in rows}}
    if "transductive" in job["protocols"]:  # FC-CLIP's void is compared inductively only (its grid is the cost)
        settings["transductive"] = choose(cache_outputs(segmenter, WorldDataset(world, "val", job["val_images"])),
                                          config, [r for r in rows if ROWS[r][4] == "joint"])
    if "inductive" in job["protocols"]:
        settings["inductive"] = job["inductive"]
    protocols = {}
    for protocol, chosen in settings.items():
        protocols[protocol] = {row: _metrics(evaluate_cached(test, _row_config(config, row).replace(
            **_settings_only(point)), ROWS[row][3])) for row, point in chosen.items()}
    classes = {"inductive": job.get("calibration_classes"), "transductive": list(test.class_names), "fixed": []}
    result = {"kind": "run", "world": job["world"], "seed": job["seed"], "variant": job["variant"],
              "protocols": protocols, "settings": settings, "threads": job["threads"], "train_s": round(train_s, 1),
              "calibration_classes": {p: classes[p] for p in settings}}
    if job.get("diagnose") and "full" in rows:
        from alignzeg.train.evaluation.diagnostics import indicator_auc

        headline = settings[job["protocols"][0]]["full"]  # the readout weights of the headline protocol
        segmenter.model.config = _row_config(config, "full").replace(**_settings_only(headline))
        diag = indicator_auc(segmenter, WorldDataset(world, "test", job["test_images"]))
        result["indicator_auc"], result["margin_auc"] = diag.auc, diag.margin_auc
        result["diagnostics"] = diag.to_dict()
    result["eval_s"] = round(time.time() - start, 1)
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


def flatten(results: list[dict], protocol: str) -> list[dict]:
    """One record per (world, seed, row) of the run jobs under ``protocol``: metrics, the settings that were
    applied and the names of the classes whose labels chose them."""
    records = []
    for res in results:
        if res.get("kind") != "run":
            continue
        for row, metrics in res["protocols"].get(protocol, {}).items():
            records.append(dict({"world": res["world"], "seed": res["seed"], "variant": res["variant"], "row": row},
                                **metrics, settings=_settings_only(res["settings"][protocol][row]),
                                calibration_classes=res["calibration_classes"][protocol]))
    return sorted(records, key=lambda r: (r["world"], r["seed"], list(ROWS).index(r["row"])))


def _per_run(records: list[dict], row: str, key: str) -> dict[tuple[int, int], float]:
    return {(r["world"], r["seed"]): r[key] for r in records if r["row"] == row}


def paired(values_a: dict, values_b: dict) -> dict:
    """Mean, 95 % interval and values of the differences a - b over the (world, seed) pairs both have."""
    pairs = sorted(set(values_a) & set(values_b))
    values = np.array([values_a[p] - values_b[p] for p in pairs])
    return {"mean": round(float(values.mean()), 2), "ci95": _interval(values),
            "values": [round(float(v), 2) for v in values]}


def aggregate(records: list[dict]) -> tuple[dict, dict]:
    """Rows (mean, 95 % interval, per-run values of every key) and paired differences, as JSON-ready dicts."""
    rows, diffs = {}, {}
    for name in ROWS:
        runs = _per_run(records, name, "hIoU")
        if not runs:
            continue
        row = {"runs": [{"world": w, "seed": s} for w, s in sorted(runs)]}
        for key in KEYS:
            values = np.array([v for _, v in sorted(_per_run(records, name, key).items())])
            row[key] = round(float(values.mean()), 2)
            row[f"{key}_ci95"] = _interval(values)
            row[f"{key}_values"] = [round(float(v), 2) for v in values]
        rows[name] = row
    for a, b in DIFFS:
        if a in rows and b in rows:
            diffs[f"{a} - {b}"] = {key: paired(_per_run(records, a, key), _per_run(records, b, key)) for key in KEYS}
    return rows, diffs


def auc_pairs(results: list[dict]) -> dict[str, Any]:
    """The class indicator's and the ensemble margin's ROC AUC per full run, and their paired difference."""
    full = [r for r in results if r.get("kind") == "run" and "indicator_auc" in r]
    full.sort(key=lambda r: (r["world"], r["seed"]))
    ind = {(r["world"], r["seed"]): r["indicator_auc"] for r in full}
    mar = {(r["world"], r["seed"]): r["margin_auc"] for r in full}
    out: dict[str, Any] = {"indicator_auc_full": [round(v, 4) for v in ind.values()],
                           "margin_auc_full": [round(v, 4) for v in mar.values()]}
    if len(full) >= 1:
        out["indicator_auc_mean"] = {"mean": round(float(np.mean(list(ind.values()))), 4),
                                     "ci95": _interval4(np.array(list(ind.values())))}
        out["margin_auc_mean"] = {"mean": round(float(np.mean(list(mar.values()))), 4),
                                  "ci95": _interval4(np.array(list(mar.values())))}
        diff = np.array([ind[k] - mar[k] for k in ind])
        out["indicator_minus_margin_auc"] = {"mean": round(float(diff.mean()), 4), "ci95": _interval4(diff),
                                             "values": [round(float(v), 4) for v in diff]}
    return out


def _interval4(values: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else round(v, 4) for v in t_interval(values)]


def unseen_leak(records: list[dict], unseen: dict[int, list[str]]) -> bool:
    """Whether any run's calibration classes include one of its world's unseen (test) classes."""
    return any(set(r["calibration_classes"]) & set(unseen[r["world"]]) for r in records)


def targets(rows: dict, diffs: dict, aucs: dict, readout_unseen: float | None = None,
            leak: bool | None = None) -> list[dict]:
    """The targets with pass/fail as measured (``None``: not measured in this run)."""
    def get(name):
        return (diffs.get(name) or {}).get("hIoU")

    def above(d, least):
        return None if d is None else bool(d["mean"] >= least and (d["ci95"][0] is not None and d["ci95"][0] > 0))

    out = [{"target": "calibration classes disjoint from the world's unseen classes in every run",
            "measured": None if leak is None else not leak, "pass": None if leak is None else not leak}]
    for name, least in (("full - baseline", 5.0), ("full - baseline+readout", 3.0), ("full - +GEPC+offset", 1.0)):
        d = get(name)
        out.append({"target": f"{name} >= {least:+g} hIoU, interval above 0", "measured": d, "pass": above(d, least)})
    d = get("+MRPE - baseline")
    out.append({"target": "+MRPE - baseline hIoU interval's lower end >= -1", "measured": d,
                "pass": None if d is None or d["ci95"][0] is None else d["ci95"][0] >= -1})
    gap = aucs.get("indicator_minus_margin_auc")
    out.append({"target": "mean indicator_auc_full - mean margin_auc_full >= +0.03", "measured": gap,
                "pass": None if gap is None else gap["mean"] >= 0.03})
    out.append({"target": "CLIP readout top-1 on matched unseen regions >= 40 %", "measured": readout_unseen,
                "pass": None if readout_unseen is None else readout_unseen >= 40})
    return out


# Report --------------------------------------------------------------------------------------------------
def _fmt(row: dict, key: str) -> str:
    lo, hi = row[f"{key}_ci95"]
    return f"{row[key]:.1f} [{lo:.1f}, {hi:.1f}]" if lo is not None else f"{row[key]:.1f}"


def _fmt_diff(d: dict, digits: int = 1) -> str:
    lo, hi = d["ci95"]
    f = f"{{:+.{digits}f}}"
    return (f"{f.format(d['mean'])} [{f.format(lo)}, {f.format(hi)}]" if lo is not None
            else f.format(d["mean"]))


def _fmt_mean(d: dict) -> str:
    """``0.905 [0.891, 0.919]``: a mean AUC and its interval."""
    lo, hi = d["ci95"]
    return f"{d['mean']:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None else f"{d['mean']:.3f}"


def _table(rows: dict, diffs: dict) -> list[str]:
    lines = ["| row | runs | hIoU | mIoU(S) | mIoU(U) | unseen px -> seen class |", "|---|---|---|---|---|---|"]
    lines += [f"| {name} | {len(row['hIoU_values'])} | " + " | ".join(_fmt(row, k) for k in KEYS) + " |"
              for name, row in rows.items()]
    lines += ["", "| paired difference | pairs | hIoU | mIoU(S) | mIoU(U) | unseen px -> seen class |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {name} | {len(diff['hIoU']['values'])} | " + " | ".join(_fmt_diff(diff[k]) for k in KEYS) + " |"
              for name, diff in diffs.items()]
    return lines


TITLES = {"inductive": "**Inductive protocol** (settings chosen on validation classes of a calibration model; no "
                        "label of a test-unseen class read):",
          "transductive": "**Transductive protocol** (settings chosen with the labels of every class of the val "
                          "images, the test's unseen classes included; not reachable by a user):",
          "fixed": f"**Fixed protocol** (nothing chosen: readout weights {FIXED_READOUT[0]} / {FIXED_READOUT[1]}, "
                   f"PBC threshold {FIXED_THRESHOLD}, seen-score offset {FIXED_OFFSET:g}):"}


def markdown(tables: dict[str, tuple[dict, dict]], goals: list[dict], aucs: dict, n_runs: int,
             protocols: tuple[str, ...] = PROTOCOLS) -> str:
    """The headline protocol's tables (the first of ``protocols``), the targets, the AUCs, then the others."""
    rows, diffs = tables[protocols[0]]
    lines = [TITLES[protocols[0]], ""] + _table(rows, diffs)
    lines += ["", f"Mean [95 % t-interval] over the runs (world x training seed; {n_runs} pairs in all), in %.", ""]
    if aucs.get("indicator_auc_mean"):
        lines += [f"Matched test proposals of the full runs, ROC AUC: class indicator "
                  f"{_fmt_mean(aucs['indicator_auc_mean'])}, ensemble margin (its untrained reference) "
                  f"{_fmt_mean(aucs['margin_auc_mean'])}, paired difference "
                  f"{_fmt_diff(aucs['indicator_minus_margin_auc'], 3)}.", ""]
    lines += ["| target | measured | pass |", "|---|---|---|"]
    for g in goals:
        m = g["measured"]
        text = (_fmt_diff(m, 3 if "auc" in g["target"] else 1) if isinstance(m, dict) else "not run" if m is None
                else str(m) if isinstance(m, bool) else f"{m:.3g}")
        lines.append(f"| {g['target']} | {text} | {'-' if g['pass'] is None else 'yes' if g['pass'] else '**no**'} |")
    for protocol in protocols[1:]:
        if tables.get(protocol) and tables[protocol][0]:
            lines += ["", TITLES[protocol], ""] + _table(*tables[protocol])
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
def plan(args: argparse.Namespace, clips: dict[int, str]) -> tuple[list[dict], list[dict]]:
    """The calibration jobs (one per world and trained variant) and the run jobs (one per world, seed and
    trained variant), runs ordered seed by seed so that a stopped benchmark still has paired rows."""
    wanted = [r for r in args.rows.split(",") if r]
    unknown = [r for r in wanted if r not in ROWS]
    if unknown:
        raise ValueError(f"unknown rows {unknown}; rows are {list(ROWS)}")
    variants = list(dict.fromkeys(ROWS[r][0] for r in wanted))
    common = {k: getattr(args, k) for k in ("iterations", "batch_size", "lr", "train_images", "val_images",
                                            "test_images", "threads", "diagnose", "family", "validation_fraction")}
    common["rows"] = wanted
    common["model_set"] = json_settings(args.model_set)
    common["train_set"] = json_settings(args.train_set, "--train-set")
    from alignzeg.config import unknown_fields
    from alignzeg.train import TrainConfig

    unknown = unknown_fields(TrainConfig, common["train_set"], "--train-set")
    if unknown:
        fields = sorted(f.name for f in dataclasses.fields(TrainConfig))
        raise ValueError(f"--train-set names {unknown}, which are not TrainConfig fields; fields are {fields}")
    common["save_models"] = str(args.save_models) if args.save_models else None
    common["protocols"] = [p for p in args.protocols.split(",") if p]
    unknown = [p for p in common["protocols"] if p not in PROTOCOLS]
    if unknown or not common["protocols"]:
        raise ValueError(f"unknown protocols {unknown}; protocols are {list(PROTOCOLS)}")
    calibrations = [dict(common, world=w, seed=CALIBRATION_SEED, variant=v, clip=clips[w])
                    for w in _ints(args.worlds) for v in variants] if "inductive" in common["protocols"] else []
    runs = [dict(common, world=w, seed=s, variant=v, clip=clips[w])
            for s in _ints(args.seeds, count_ok=True) for w in _ints(args.worlds) for v in variants]
    return calibrations, runs


def _summary(res: dict, start: float) -> str:
    head = f"[{time.time() - start:6.0f}s] world {res['world']} {res['variant']} seed {res['seed']}"
    if res["kind"] == "calibration":
        return (f"{head}: calibration model (validation classes {res['validation_classes']}): "
                + "; ".join(f"{row}: {s}" for row, s in res["settings"].items()) + f" (train {res['train_s']:.0f}s)")
    return (head + ": " + "; ".join(f"{n}: " + " ".join(f"{k}={v:.1f}" for k, v in m.items())
                                    for n, m in next(iter(res["protocols"].values())).items())
            + (f" AUC={res['indicator_auc']:.3f} margin={res['margin_auc']:.3f}" if "indicator_auc" in res else "")
            + f" (train {res['train_s']:.0f}s)")


def report(args: argparse.Namespace, command: str, clip_info: list[dict], results: list[dict], wall: float,
           jobs_planned: int) -> str:
    """Aggregate, and write the JSON/markdown (called after every job, so a stopped run keeps its results)."""
    from alignzeg.worlds.objects import make_world

    protocols = tuple(p for p in args.protocols.split(",") if p)
    tables = {p: aggregate(flatten(results, p)) for p in protocols}
    records = flatten(results, protocols[0])
    unseen = {w: list(make_world(args.family, w).unseen_classes) for w in {r["world"] for r in records}}
    aucs = auc_pairs(results)
    runs = [r for r in results if r.get("kind") == "run"]
    readout = [100 * r["diagnostics"]["readout_acc_unseen"] for r in runs
               if (r.get("diagnostics") or {}).get("readout_acc_unseen") is not None]
    readout_unseen = round(float(np.mean(readout)), 2) if readout else None
    leak = unseen_leak(records, unseen) if records and protocols[0] != "transductive" else None
    goals = targets(*tables[protocols[0]], aucs, readout_unseen, leak)
    table = markdown(tables, goals, aucs, len({(r["world"], r["seed"]) for r in records}), protocols)
    if args.json is not None:
        payload = {"protocol": protocols[0], "command": command, "family": args.family,
                   "worlds": sorted({r["world"] for r in runs}), "seeds": sorted({r["seed"] for r in runs}),
                   "complete": len(results) == jobs_planned, "jobs_done": len(results), "jobs_planned": jobs_planned,
                   "settings": {k: getattr(args, k) for k in ("iterations", "batch_size", "lr", "train_images",
                                                             "val_images", "test_images", "validation_fraction",
                                                             "clip_steps", "clip_batch", "clip_multi_prob",
                                                             "clip_closeup_prob",
                                                             "workers", "threads")},
                   "world_recipe": world_recipe(),
                   "model_set": json_settings(args.model_set),
                   "train_set": json_settings(args.train_set, "--train-set"),
                   "fixed_settings": {"readout_weights": list(FIXED_READOUT), "pbc_threshold": FIXED_THRESHOLD,
                                      "seen_score_offset": FIXED_OFFSET},
                   "mini_clip": clip_info, "unseen_classes": {str(w): u for w, u in sorted(unseen.items())},
                   "rows": tables[protocols[0]][0], "paired_differences": tables[protocols[0]][1], "targets": goals,
                   **aucs, "clip_readout_unseen_acc": readout_unseen, "clip_readout_unseen_acc_full": readout,
                   "protocols": {p: {"rows": tables[p][0], "paired_differences": tables[p][1]}
                                 for p in protocols[1:]},
                   "calibration_models": [r for r in results if r.get("kind") == "calibration"],
                   "runs": records, "jobs": results, "wall_time_s": round(wall)}
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    if args.md is not None and tables[protocols[0]][0]:
        write_markdown(args.md, table, command)
    return table


def previous_jobs(args: argparse.Namespace, clips: dict[int, str] | None = None) -> list[dict]:
    """With ``--resume``, the jobs of the existing ``--json`` file (none without it).

    Raises:
        ValueError: the file was made with another world recipe (``WORLD_RECIPE``), other ``--model-set`` or
            ``--train-set`` settings, or with another mini-CLIP file for a
            world both runs have (``clips``: world -> this run's file).
    """
    if not args.resume or args.json is None or not args.json.is_file():
        return []
    data = json.loads(args.json.read_text(encoding="utf-8"))
    made, now_recipe = data.get("world_recipe"), world_recipe()
    if made != now_recipe:  # runs of another recipe do not pair with this one's
        changed = ("it records none (made before the recipe was recorded)" if made is None else
                   ", ".join(f"{k}: file {made.get(k)!r}, now {v!r}" for k, v in now_recipe.items() if made.get(k) != v))
        raise ValueError(f"{args.json} was made with another world recipe ({changed}): its runs would not pair "
                         "with new ones; write another --json")
    for key, flag, items in (("model_set", "--model-set", args.model_set), ("train_set", "--train-set", args.train_set)):
        now = json_settings(items, flag)
        if data.get(key, {}) != now:
            raise ValueError(f"{args.json} was made with {flag} {data.get(key, {})}, not {now}: resume with the "
                             "same settings or write another --json")
    for made in data.get("mini_clip", []):
        now = (clips or {}).get(made.get("world"))
        if now is not None and Path(made.get("path", "")).name != Path(now).name:
            raise ValueError(f"{args.json} was made with world {made['world']}'s mini-CLIP {made.get('path')}, not "
                             f"{now}: resume with the same --clip-steps / --clip-* settings or write another --json")
    jobs = data.get("jobs", [])
    print(f"resuming: {len(jobs)} jobs kept from {args.json}", flush=True)
    return jobs


def _key(job: dict) -> tuple:
    return ("calibration" if job.get("kind") == "calibration" or job["seed"] == CALIBRATION_SEED else "run",
            job["world"], job["seed"], job["variant"])


def _schedule(pool: Any, args: argparse.Namespace, calibrations: list[dict], runs: list[dict],
              results: list[dict], on_result: Any) -> None:
    """Run the jobs on ``pool`` with at most ``--workers`` in flight: calibration models first, then each run
    once its world and variant's calibration model has chosen the inductive settings."""
    from concurrent.futures import FIRST_COMPLETED, wait

    chosen = {(r["world"], r["variant"]): r for r in results if r.get("kind") == "calibration"}
    todo = list(calibrations) + list(runs)
    flying: dict[Any, dict] = {}
    while todo or flying:
        ready = [j for j in todo if j["seed"] == CALIBRATION_SEED or (j["world"], j["variant"]) in chosen
                 or "inductive" not in j["protocols"]]
        for job in ready[:max(0, args.workers - len(flying))]:
            todo.remove(job)
            if job["seed"] != CALIBRATION_SEED and "inductive" in job["protocols"]:
                calib = chosen[(job["world"], job["variant"])]
                job = dict(job, inductive=calib["settings"], calibration_classes=calib["calibration_classes"])
            flying[pool.submit(calibration_job if job["seed"] == CALIBRATION_SEED else run_job, job)] = job
        if not flying:
            raise RuntimeError("no job can start: a calibration model is missing")
        done, _ = wait(flying, return_when=FIRST_COMPLETED)
        for future in done:
            flying.pop(future)
            res = future.result()
            if res["kind"] == "calibration":
                chosen[(res["world"], res["variant"])] = res
            on_result(res)


def main(argv: list[str] | None = None) -> int:
    from concurrent.futures import ProcessPoolExecutor

    args = _parser().parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
    logging.basicConfig(level=logging.WARNING)
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0])] + (argv or sys.argv[1:]))
    start = time.time()
    args.clip_dir.mkdir(parents=True, exist_ok=True)
    prefix = "" if args.family == "attribute" else f"{args.family}-"  # attribute files keep their names
    steps = clip_steps_per_world(args.clip_steps, _ints(args.worlds), args.family)
    args.clip_steps = {str(w): n for w, n in steps.items()}  # recorded per world in the JSON's settings
    if args.clip_closeup_prob is None:
        args.clip_closeup_prob = CLOSEUP_PROB[args.family]
    suffix = "" if args.clip_multi_prob == 0.3 else f"_multi{args.clip_multi_prob:g}"
    suffix += f"_closeup{args.clip_closeup_prob:g}" if args.clip_closeup_prob else ""
    clip_jobs = [{"world": w, "clip_steps": steps[w], "clip_batch": args.clip_batch, "threads": args.threads,
                  "family": args.family, "multi_prob": args.clip_multi_prob, "closeup_prob": args.clip_closeup_prob,
                  "path": str(args.clip_dir / f"{prefix}world{w}_steps{steps[w]}_batch{args.clip_batch}"
                                              f"{suffix}.safetensors")}
                 for w in _ints(args.worlds)]
    with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as pool:
        clip_info = list(pool.map(pretrain_job, clip_jobs))
        for c in clip_info:
            made = "file re-used" if c["pretrain_s"] is None else f"pre-trained in {c['pretrain_s']} s"
            print(f"[{time.time() - start:6.0f}s] world {c['world']} mini-CLIP ({made}): zero-shot top-1 "
                  f"{c['zero_shot_top1']}", flush=True)
        calibrations, runs = plan(args, {c["world"]: c["path"] for c in clip_info})
        results = previous_jobs(args, {c["world"]: c["path"] for c in clip_info})
        done = {_key(r) for r in results}
        calibrations = [j for j in calibrations if _key(j) not in done]
        runs = [j for j in runs if _key(j) not in done]
        total = len(calibrations) + len(runs) + len(results)
        table = report(args, command, clip_info, results, time.time() - start, total) if results else ""

        def on_result(res: dict) -> None:
            nonlocal table
            print(_summary(res, start), flush=True)
            results.append(res)
            table = report(args, command, clip_info, results, time.time() - start, total)

        _schedule(pool, args, calibrations, runs, results, on_result)
    print(table)
    print(f"total wall time {time.time() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
