"""The AlignZeg ablation on the synthetic zero-shot world (issue 4): baseline, +MRPE, +GEPC, full (+PBC).

Every row trains the same model size for the same number of steps, batch and learning rate on the same
seen-class train images, through ``alignzeg.train.Trainer``, and is evaluated on the same test images
(seen + unseen classes) through ``alignzeg.train.evaluate`` (i.e. ``AlignZegSegmenter.segment`` with the
world's class embeddings as the vocabulary). "full" is the "+GEPC" model evaluated with PBC on: PBC is
inference-only, so the two rows share their trained weights.

    python benchmarks/zeroshot_world.py --seed 0 --split-seed 0 --seeds 3 \
        --json docs/zeroshot_world.json --md docs/zeroshot_world.md

``--seed`` and ``--split-seed`` pick the world (appearances + embeddings, and the seen/unseen split);
the training seeds are 0 .. ``--seeds`` - 1 (model initialisation, data order, synthetic features).
Rows x seeds run in ``--workers`` processes of one thread each.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROWS = ("baseline", "+MRPE", "+GEPC", "full")
KEYS = ("mIoU_S", "mIoU_U", "hIoU", "misaligned")

# Training-time switches of each trained variant ("full" reuses "+GEPC" with PBC at inference).
VARIANTS = {
    "baseline": dict(model=dict(mutual_refinement=False, num_bg_prototypes=1),
                     train=dict(synthetic_features=False, negative_proposals=False, class_indicator=False, reg=False)),
    "+MRPE": dict(model=dict(mutual_refinement=True, num_bg_prototypes=1),
                  train=dict(synthetic_features=False, negative_proposals=False, class_indicator=False, reg=False)),
    "+GEPC": dict(model=dict(mutual_refinement=True, num_bg_prototypes=10),
                  train=dict(synthetic_features=True, negative_proposals=True, class_indicator=True, reg=True)),
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=0, help="world seed (class appearances, embeddings, images)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the seen/unseen class split")
    p.add_argument("--seeds", type=int, default=3, help="training seeds 0 .. N-1 per row")
    p.add_argument("--iterations", type=int, default=400, help="optimizer steps per row (same for every row)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-images", type=int, default=4000)
    p.add_argument("--test-images", type=int, default=200)
    p.add_argument("--no-side-encoder", action="store_true",
                   help="train on the frozen random CLIP features alone (every row)")
    p.add_argument("--workers", type=int, default=2, help="parallel training processes (one thread each)")
    p.add_argument("--json", type=Path, default=None, help="write the results JSON here")
    p.add_argument("--md", type=Path, default=None,
                   help="put the markdown table between the table markers of this file (created if missing)")
    return p


def _metrics(result) -> dict[str, float]:
    """EvalResult -> percentages, plus the share of unseen pixels predicted as a seen class."""
    conf, seen = result.confusion, result.seen
    k = len(seen)
    unseen_rows = conf[~seen]
    misaligned = unseen_rows[:, :k][:, seen].sum() / max(1, unseen_rows.sum())
    return {"mIoU_S": 100 * result.miou_seen, "mIoU_U": 100 * result.miou_unseen, "hIoU": 100 * result.hiou,
            "misaligned": 100 * float(misaligned)}


def run_job(job: dict) -> dict:
    """Train one variant with one seed and evaluate it. Runs in a worker process."""
    import torch

    torch.set_num_threads(1)
    from alignzeg.train import TrainConfig, Trainer, evaluate
    from alignzeg.train.synthetic import WorldConfig, ZeroShotWorld

    args = job["args"]
    world = ZeroShotWorld(WorldConfig(seed=args["seed"], split_seed=args["split_seed"]))
    variant = VARIANTS[job["variant"]]
    model_overrides = dict(variant["model"], side_encoder=not args["no_side_encoder"])
    cfg = TrainConfig(preset="tiny", model_overrides=model_overrides, iterations=args["iterations"],
                      batch_size=args["batch_size"], lr=args["lr"], crop_scale=(1.0, 1.0), flip=False,
                      progress=False, checkpoint_every=0, seed=job["train_seed"], **variant["train"])
    start = time.time()
    segmenter = Trainer(cfg, None, world.dataset("train", args["train_images"])).train()
    train_s = time.time() - start
    test = world.dataset("test", args["test_images"])
    rows = {job["variant"]: _metrics(evaluate(segmenter, test, bias_correction=False))}
    if job["variant"] == "+GEPC":
        rows["full"] = _metrics(evaluate(segmenter, test, bias_correction=True))
    return {"train_seed": job["train_seed"], "rows": rows, "train_s": train_s, "total_s": time.time() - start}


def aggregate(results: list[dict]) -> list[dict]:
    """Mean and sample std (ddof=1; 0 for one seed) over seeds of every row, in ``ROWS`` order."""
    rows = []
    for name in ROWS:
        values = {k: np.array([r["rows"][name][k] for r in results if name in r["rows"]]) for k in KEYS}
        row = {"name": name, **{k: round(float(v.mean()), 2) for k, v in values.items()}}
        row["std"] = {k: round(float(v.std(ddof=1)) if len(v) > 1 else 0.0, 2) for k, v in values.items()}
        rows.append(row)
    return rows


def markdown_table(rows: list[dict], num_seeds: int) -> str:
    head = ("| row | mIoU(S) | mIoU(U) | hIoU | unseen px -> seen class |\n"
            "|---|---|---|---|---|\n")
    body = "".join(f"| {r['name']} | " + " | ".join(f"{r[k]:.1f} ± {r['std'][k]:.1f}" for k in KEYS) + " |\n"
                   for r in rows)
    return head + body + f"\nValues in %, mean ± sample std over {num_seeds} training seeds.\n"


def write_markdown(path: Path, table: str, command: str) -> None:
    start, end = "<!-- table:start -->", "<!-- table:end -->"
    block = f"{start}\n```\n{command}\n```\n\n{table}{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else f"# Zero-shot world\n\n{start}\n{end}\n"
    if start not in text or end not in text:
        text = text.rstrip("\n") + f"\n\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    path.write_text(head + block + tail, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0])] + (argv or sys.argv[1:]))
    jobs = [{"args": vars(args) | {"json": None, "md": None}, "variant": v, "train_seed": s}
            for s in range(args.seeds) for v in VARIANTS]
    start = time.time()
    with mp.get_context("spawn").Pool(args.workers) as pool:
        results = []
        for res in pool.imap_unordered(run_job, jobs):
            print(f"[{time.time() - start:6.0f}s] seed {res['train_seed']}: "
                  + "; ".join(f"{n}: " + " ".join(f"{k}={v:.1f}" for k, v in m.items())
                              for n, m in res["rows"].items())
                  + f" (train {res['train_s']:.0f}s)", flush=True)
            results.append(res)
    rows = aggregate(results)
    table = markdown_table(rows, args.seeds)
    print(table)
    print(f"total wall time {time.time() - start:.0f}s")
    if args.json is not None:
        payload = {"command": command, "seeds": list(range(args.seeds)), "world_seed": args.seed,
                   "split_seed": args.split_seed, "rows": rows, "wall_time_s": round(time.time() - start)}
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    if args.md is not None:
        write_markdown(args.md, table, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
