"""Does anything a class indicator could read know more than the score margin? Conditional information, measured.

The seen-score offset thresholds one statistic per proposal: the ensemble margin (best non-seen class's
log-score minus the best seen class's; ``alignzeg.train.evaluation.diagnostics.ensemble_margin``). A class indicator
pays only with information the margin lacks. This script measures that information directly, before any
indicator is trained: on proposals matched to ground-truth regions of a trained model, it fits logistic
models on ``[margin]`` and on ``[margin, inputs]`` for each group of candidate inputs, and a small MLP ensemble on
the margin and every group but the embedding (``fit_mlp``: is a non-linear combination worth more?), on the
``val`` split, and reports their ROC AUC (unseen region = positive) on the ``test`` split:

- ``profile``: the class indicator's six inputs (``class_indicator.profile_features``: best cosine to a seen
  and to a non-seen name, and their difference, for the decoder's embedding and for the CLIP readout);
- ``novelty``: distance of the proposal embedding to the training classes' feature statistics, as
  out-of-distribution detectors use (one minus the best cosine to a seen class's mean embedding; the log
  of the smallest Mahalanobis distance to a class mean under the shared covariance), from matched
  proposals of ``--train-images`` training images;
- ``disagreement``: decoder vs readout (top-1 classes differ; each one's top-1 probability; the decoder's
  background probability; KL(decoder || readout) over the classes);
- ``mask``: the proposal's area (sigmoid > 0.5) and mean confidence inside it;
- ``embedding``: the E-dim proposal embedding itself (what the paper's indicator reads).

The fit reads the labels of the val images' unseen classes, so this is an upper bound on what an indicator
trained without them could reach (a diagnostic, not a method): if even this fit barely beats the margin,
no indicator on these inputs will pay. The interval of each AUC difference to ``[margin]`` is a paired
bootstrap over test images (1,000 resamples).

    python benchmarks/indicator_information.py --model alignzeg/demo/assets/model --family attribute --world 0 \\
        --json benchmarks/results/indicator_information.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

GROUPS = ("profile", "novelty", "disagreement", "mask", "embedding")
"""Candidate input groups, each added to the margin on its own; ``all`` adds every group."""
MLP_GROUPS = ("profile", "novelty", "disagreement", "mask")
"""The groups a small MLP reads besides the margin (``fit_mlp``; the embedding's 64+ dimensions left out:
too many for a few hundred positives): whether a non-linear combination knows more than a linear one."""
MLP_ROW = "margin+all-but-embedding (MLP)"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a trained model folder (with the CLIP readout it is read out with "
                   "FC-CLIP's fixed weights 0.4 / 0.8)")
    p.add_argument("--family", default="attribute", choices=("attribute", "objects"))
    p.add_argument("--world", type=int, default=0)
    p.add_argument("--train-images", type=int, default=300, help="training images for the class feature statistics")
    p.add_argument("--val-images", type=int, default=300, help="val images the logistic models are fitted on")
    p.add_argument("--test-images", type=int, default=200, help="test images the AUCs are measured on")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None, help="append this model's result to this JSON file's list")
    p.add_argument("--note", default=None, help="a line recorded with the result (what the model is)")
    return p


def matched_proposals(segmenter: Any, dataset: Any) -> list[dict[str, Any]]:
    """Per proposal matched to a ground-truth region (Hungarian, mask cost): its image index, whether its
    region is of a non-seen class, the margin and every candidate input (float lists)."""
    from alignzeg.modeling.class_indicator import profile_features
    from alignzeg.train.evaluation.diagnostics import ensemble_margin, matched_regions, per_image_outputs

    rows = []
    for image, (out, label, seen, vocabulary) in enumerate(per_image_outputs(segmenter, dataset, None, False)):
        matched = matched_regions(out, label)
        if matched is None:
            continue
        props, classes = matched
        margin = ensemble_margin(out, seen, segmenter.model.config)
        readout = out.readout_logits[0].float()
        readout_cos = readout / segmenter.model.backbone.clip_logit_scale.float()
        profile = profile_features(out.embeddings[0] @ vocabulary.t(), readout_cos, torch.from_numpy(seen))
        decoder_p = F.softmax(out.class_logits[0].float(), -1)
        readout_p = F.softmax(readout, -1)
        classes_p = decoder_p[:, :-1] / decoder_p[:, :-1].sum(-1, keepdim=True)
        kl = (classes_p * (classes_p.clamp(min=1e-9).log() - readout_p.clamp(min=1e-9).log())).sum(-1)
        masks = out.mask_logits[0].sigmoid()
        inside = masks > 0.5
        area = inside.float().mean((-1, -2))
        confidence = (masks * inside).sum((-1, -2)) / inside.sum((-1, -2)).clamp(min=1)
        for n, cls in zip(props.tolist(), classes.tolist()):
            rows.append({"image": image, "unseen": not seen[cls], "cls": cls, "margin": float(margin[n]),
                         "profile": profile[n].tolist(), "embedding": out.embeddings[0, n].float().tolist(),
                         "disagreement": [float(classes_p[n].argmax() != readout_p[n].argmax()),
                                          float(classes_p[n].max()), float(readout_p[n].max()),
                                          float(decoder_p[n, -1]), float(kl[n])],
                         "mask": [float(area[n]), float(confidence[n])]})
    return rows


class FeatureStatistics:
    """Class means and the shared covariance of seen-class proposal embeddings (Lee et al.'s Mahalanobis
    detector), from matched proposals of training images."""

    def __init__(self, rows: list[dict[str, Any]], ridge: float = 1e-3) -> None:
        embeddings = np.array([r["embedding"] for r in rows])
        classes = np.array([r["cls"] for r in rows])
        ids = np.unique(classes)
        self.means = np.stack([embeddings[classes == c].mean(0) for c in ids])
        centred = embeddings - self.means[np.searchsorted(ids, classes)]
        self.precision = np.linalg.inv(np.cov(centred.T) + ridge * np.eye(embeddings.shape[1]))
        self.directions = self.means / np.linalg.norm(self.means, axis=1, keepdims=True)

    def novelty(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """(P, 2): one minus the best cosine to a class mean, log of the smallest Mahalanobis distance."""
        x = np.array([r["embedding"] for r in rows])
        diff = x[:, None, :] - self.means[None]
        mahalanobis = np.einsum("nkd,de,nke->nk", diff, self.precision, diff).min(1)
        return np.stack([1.0 - (x @ self.directions.T).max(1), np.log(np.maximum(mahalanobis, 1e-12))], 1)


def features(rows: list[dict[str, Any]], groups: tuple[str, ...], stats: FeatureStatistics) -> np.ndarray:
    """(P, 1 + ...) float64: the margin, then the columns of each group in ``groups``."""
    columns = [np.array([[r["margin"]] for r in rows])]
    for group in groups:
        columns.append(stats.novelty(rows) if group == "novelty" else np.array([r[group] for r in rows]))
    return np.concatenate(columns, 1).astype(np.float64)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float) -> Any:
    """An L2-regularised logistic model on standardised columns (LBFGS): returns ``x -> (P,) logits``."""
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.float64))
    mu, sd = xt.mean(0), xt.std(0).clamp(min=1e-6)
    z = (xt - mu) / sd
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(z @ w + b, yt) + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lambda new: (((torch.from_numpy(new) - mu) / sd) @ w + b).detach().numpy()


def fit_mlp(x: np.ndarray, y: np.ndarray, hidden: int = 32, members: int = 5, epochs: int = 400,
            weight_decay: float = 1e-2, seed: int = 0) -> Any:
    """An ensemble of ``members`` two-hidden-layer MLPs (ReLU, ``hidden`` units) on standardised columns, each
    trained full-batch with AdamW (lr 1e-2, ``weight_decay``) for ``epochs`` on the BCE; returns
    ``x -> (P,) mean logits``. Seeded: the same inputs give the same model.

    Args:
        x: (P, D) float64 inputs; y: (P,) labels in {0, 1}.
    """
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y.astype(np.float32))
    mu, sd = xt.mean(0), xt.std(0).clamp(min=1e-6)
    z = (xt - mu) / sd
    nets = []
    for member in range(members):
        torch.manual_seed(seed + member)
        net = torch.nn.Sequential(torch.nn.Linear(z.shape[1], hidden), torch.nn.ReLU(),
                                  torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
        opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=weight_decay)
        for _ in range(epochs):
            opt.zero_grad()
            F.binary_cross_entropy_with_logits(net(z)[:, 0], yt).backward()
            opt.step()
        nets.append(net.eval())

    def score(new: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            zn = (torch.from_numpy(new).float() - mu) / sd
            return torch.stack([net(zn)[:, 0] for net in nets]).mean(0).double().numpy()

    return score


def paired_bootstrap(scores_a: np.ndarray, scores_b: np.ndarray, labels: np.ndarray, images: np.ndarray,
                     resamples: int = 1000, seed: int = 0) -> list[float]:
    """95 % interval of AUC(a) - AUC(b), resampling test images (all their proposals) with replacement."""
    from alignzeg.train.evaluation.diagnostics import roc_auc

    rng = np.random.default_rng(seed)
    ids = np.unique(images)
    members = {i: np.flatnonzero(images == i) for i in ids}
    diffs = []
    for _ in range(resamples):
        pick = np.concatenate([members[i] for i in rng.choice(ids, len(ids))])
        if labels[pick].all() or not labels[pick].any():
            continue
        diffs.append(roc_auc(scores_a[pick], labels[pick]) - roc_auc(scores_b[pick], labels[pick]))
    return [round(float(np.percentile(diffs, 2.5)), 4), round(float(np.percentile(diffs, 97.5)), 4)]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from alignzeg import AlignZegSegmenter
    from alignzeg.train.evaluation.diagnostics import roc_auc
    from alignzeg.worlds.objects import make_world
    from alignzeg.worlds.export import WorldDataset

    torch.set_num_threads(args.threads)
    start = time.time()
    world = make_world(args.family, args.world)
    segmenter = AlignZegSegmenter.from_pretrained(args.model, device="cpu")
    segmenter.model.config = segmenter.model.config.replace(clip_readout=True, readout_weight_seen=0.4,
                                                            readout_weight_unseen=0.8)
    stats = FeatureStatistics(matched_proposals(segmenter, WorldDataset(world, "train", args.train_images)))
    val = matched_proposals(segmenter, WorldDataset(world, "val", args.val_images))
    test = matched_proposals(segmenter, WorldDataset(world, "test", args.test_images))
    y_val = np.array([r["unseen"] for r in val])
    y_test = np.array([r["unseen"] for r in test])
    images = np.array([r["image"] for r in test])
    scores = {}
    for name, groups in [("margin", ())] + [(f"margin+{g}", (g,)) for g in GROUPS] + [("margin+all", GROUPS)]:
        l2 = 0.1 if "embedding" in groups else 0.01
        model = fit_logistic(features(val, groups, stats), y_val, l2)
        scores[name] = model(features(test, groups, stats))
    scores[MLP_ROW] = fit_mlp(features(val, MLP_GROUPS, stats), y_val)(features(test, MLP_GROUPS, stats))
    result = {"model": str(args.model), "family": args.family, "world": args.world,
              "proposals": {"val": [int(y_val.sum()), int((~y_val).sum())],
                            "test": [int(y_test.sum()), int((~y_test).sum())]},
              "auc": {name: round(roc_auc(s, y_test), 4) for name, s in scores.items()},
              "difference_to_margin": {name: {"auc": round(roc_auc(s, y_test) - roc_auc(scores["margin"], y_test), 4),
                                              "interval95": paired_bootstrap(s, scores["margin"], y_test, images)}
                                       for name, s in scores.items() if name != "margin"},
              "images": {"train": args.train_images, "val": args.val_images, "test": args.test_images},
              "seconds": round(time.time() - start, 1)}
    return result


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    result = measure(args)
    if args.note:
        result["model_note"] = args.note
    print(json.dumps(result, indent=1))
    if args.json is not None:
        previous = json.loads(args.json.read_text(encoding="utf-8")) if args.json.is_file() else []
        kept = [r for r in previous if (r["model"], r["family"], r["world"]) != (result["model"], args.family, args.world)]
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(kept + [result], indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
