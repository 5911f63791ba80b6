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
    p.add_argument("--iterations", type=int, default=2000, help="optimizer steps per row (same for every row)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-images", type=int, default=4000)
    p.add_argument("--test-images", type=int, default=200)
    p.add_argument("--no-side-encoder", action="store_true",
                   help="train on the frozen random CLIP features alone (every row)")
    p.add_argument("--workers", type=int, default=2, help="parallel training processes (one thread each)")
    p.add_argument("--rows", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                   help="trained variants to run (default: all; +GEPC also gives the full row)")
    p.add_argument("--diagnose", action="store_true",
                   help="for +GEPC: the class indicator's ROC AUC on test proposals matched to unseen vs seen "
                        "regions, and a PBC threshold sweep (printed and stored in the JSON)")
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
    trainer = Trainer(cfg, None, world.dataset("train", args["train_images"]))
    segmenter = trainer.train()
    train_s = time.time() - start
    test = world.dataset("test", args["test_images"])
    rows = {job["variant"]: _metrics(evaluate(segmenter, test, bias_correction=False))}
    if job["variant"] == "+GEPC":
        rows["full"] = _metrics(evaluate(segmenter, test, bias_correction=True))
    result = {"train_seed": job["train_seed"], "rows": rows, "train_s": train_s}
    if args.get("diagnose"):
        result["final_terms"] = {k: round(v, 4) for k, v in _mean_terms(trainer.history[-20:]).items()}
        if job["variant"] == "+GEPC":
            result["diagnostics"] = diagnose_pbc(segmenter, world, test)
    result["total_s"] = time.time() - start
    return result


def _mean_terms(history: list[dict]) -> dict[str, float]:
    keys = [k for k in history[0] if k not in ("step", "lr")]
    return {k: float(np.mean([h[k] for h in history if k in h])) for k in keys}


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties counted half."""
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).mean()
    return float(greater + 0.5 * (pos[:, None] == neg[None, :]).mean())


def diagnose_pbc(segmenter, world, test, thresholds=(0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)) -> dict:
    """How well the class indicator tells unseen from seen regions on the test set, and a PBC threshold sweep.

    Each test image's proposals are matched one-to-one to its ground-truth class regions by mask cost only
    (BCE + dice, Hungarian; no class term, so the matching does not favour either split). A matched proposal
    is "unseen" when its region's class is unseen. Unmatched proposals are reported separately.
    """
    import torch

    from alignzeg.train import evaluate
    from alignzeg.train.matching import build_targets, hungarian_match, pairwise_mask_costs

    model = segmenter.model.eval()
    seen = torch.from_numpy(world.seen)
    scores, unseen, other = [], [], []
    with torch.no_grad():
        for i in range(len(test)):
            item = test[i]
            out = model(item["image"][None].to(model.device), test.class_embeddings.to(model.device),
                        deep_supervision=False)
            target = build_targets(item["label"][None], tuple(out.mask_logits.shape[-2:]))[0]
            bce, dice = pairwise_mask_costs(out.mask_logits[0].flatten(1).cpu(), target.masks, target.weight)
            src, tgt = hungarian_match(bce + dice)
            prob = out.unseen_logits[0].sigmoid().cpu()
            scores += prob[src].tolist()
            unseen += (~seen[target.classes[tgt]]).tolist()
            rest = torch.ones(prob.shape[0], dtype=torch.bool)
            rest[src] = False
            other += prob[rest].tolist()
    scores, unseen = np.array(scores), np.array(unseen, dtype=bool)
    result = {"indicator_auc": roc_auc(scores, unseen), "mean_score_unseen": float(scores[unseen].mean()),
              "mean_score_seen": float(scores[~unseen].mean()), "mean_score_unmatched": float(np.mean(other)),
              "flagged_at_0.5_unseen": float((scores[unseen] > 0.5).mean()),
              "flagged_at_0.5_seen": float((scores[~unseen] > 0.5).mean()),
              "matched_unseen": int(unseen.sum()), "matched_seen": int((~unseen).sum()), "sweep": {}}
    base = model.config
    try:
        for t in thresholds:
            model.config = base.replace(pbc_threshold=t)
            result["sweep"][str(t)] = _metrics(evaluate(segmenter, test, bias_correction=True))
    finally:
        model.config = base
    return result


def aggregate(results: list[dict]) -> list[dict]:
    """Mean and sample std (ddof=1; 0 for one seed) over seeds of every row, in ``ROWS`` order."""
    rows = []
    for name in ROWS:
        values = {k: np.array([r["rows"][name][k] for r in results if name in r["rows"]]) for k in KEYS}
        if not len(values["hIoU"]):
            continue  # a row left out with --rows
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
            for s in range(args.seeds) for v in VARIANTS if v in args.rows]
    start = time.time()
    with mp.get_context("spawn").Pool(args.workers) as pool:
        results = []
        for res in pool.imap_unordered(run_job, jobs):
            print(f"[{time.time() - start:6.0f}s] seed {res['train_seed']}: "
                  + "; ".join(f"{n}: " + " ".join(f"{k}={v:.1f}" for k, v in m.items())
                              for n, m in res["rows"].items())
                  + f" (train {res['train_s']:.0f}s)", flush=True)
            if "final_terms" in res:
                print(f"    final loss terms (mean of last 20 steps): {res['final_terms']}", flush=True)
            if "diagnostics" in res:
                d = res["diagnostics"]
                print("    indicator: " + " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                               for k, v in d.items() if k != "sweep"), flush=True)
                for t, m in d["sweep"].items():
                    print(f"    PBC threshold {t}: " + " ".join(f"{k}={v:.1f}" for k, v in m.items()), flush=True)
            results.append(res)
    rows = aggregate(results)
    table = markdown_table(rows, args.seeds)
    print(table)
    print(f"total wall time {time.time() - start:.0f}s")
    if args.json is not None:
        payload = {"command": command, "seeds": list(range(args.seeds)), "world_seed": args.seed,
                   "split_seed": args.split_seed, "rows": rows, "wall_time_s": round(time.time() - start)}
        if args.diagnose:
            payload["runs"] = sorted(results, key=lambda r: (r["train_seed"], list(r["rows"])))
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    if args.md is not None:
        write_markdown(args.md, table, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
