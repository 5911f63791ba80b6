"""``Trainer``: trains an AlignZeg model on a seen-class dataset and saves an inference-ready folder.

    from alignzeg.train import Trainer, TrainConfig
    cfg = TrainConfig(preset="tiny", iterations=200, batch_size=8, lr=1e-3)
    trainer = Trainer(cfg, None, dataset, out_dir="runs/tiny")   # or an AlignZegModel / AlignZegSegmenter
    segmenter = trainer.train()        # AlignZegSegmenter; runs/tiny/ loads with from_pretrained
    trainer.history                    # [{"step": 0, "lr": ..., "loss": ..., "ce": ..., ...}, ...]

The dataset follows the protocol of ``alignzeg.train.datasets``: ``class_names``, ``seen_classes`` and items
``{"image", "label"}``; when it has ``class_embeddings`` (a fixed (K, E) tensor) those are the prototypes
and CLIP's text tower is never used. Training uses the seen classes only (inductive): labels of other
classes become 255.

What the trainer does: AdamW over ``model.trainable_parameters()`` (the frozen CLIP is excluded; the count
is logged) in two parameter groups (no weight decay on norms, biases, embeddings, prompts, prototypes and
the logit scale: ``optim.parameter_groups``), linear warm-up then a poly/cosine/constant learning-rate
schedule computed from the step (so the schedule state is the step), global gradient-norm clipping,
gradient accumulation, AMP on CUDA, tqdm progress, loss logging every ``log_every`` steps.
Checkpoints ``out_dir/checkpoints/step_XXXXXX/`` hold ``config.json`` + ``model.safetensors`` (the full
model) and ``trainer_state.pt`` (optimizer, gradient scaler and step, read back with
``torch.load(weights_only=True)``; the learning rate and the randomness of a step are functions of the
step and ``seed``, so nothing else is needed to resume bit-exactly); ``resume="auto"`` picks the latest.

A run is identified by ``run.json`` (``run_record``): its settings (every ``TrainConfig`` field except the
ones that change no number: ``progress``, ``log_every``, ``checkpoint_every``, ``num_workers``, ``device``),
a description of its data (class names, training classes, image count, and a hash of the image file names
or of the first item) and a SHA-256 fingerprint of both. It is written to ``out_dir`` and every checkpoint;
resuming from a checkpoint of a different run is refused with the differences named. A fresh run refuses a
non-empty ``out_dir`` unless ``overwrite=True`` (which deletes the old run's checkpoints, so that a later
``resume="auto"`` cannot pick them up). The
model config gets ``seen_classes`` (without ``validation_classes``, which go to ``extra["validation_classes"]``:
a calibration model) and ``indicator_trained`` (True exactly when this run trains the class
indicator: ``class_indicator`` and ``lambda_bc > 0``), and at the end ``out_dir`` receives
``save_pretrained``'s files plus ``train_config.json``.

Distributed: launched under ``torchrun`` (``WORLD_SIZE`` > 1), the trainer joins the env:// process group
(NCCL on CUDA, gloo on CPU), shards data with ``DistributedSampler`` and wraps the model in DDP;
``batch_size`` is the global batch (``world_size * grad_accum`` micro-batches). Only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from ...checkpoint import build_model, clip_fingerprint, save_checkpoint
from ...clip_weights import normalize_clip_pretrained
from ...config import write_json
from ...device import autocast_dtype
from ...progress import advance, progress_bar
from ...hub import WEIGHTS_NAME
from ...state_dicts import load_state_dict_strict
from ...modeling.model import AlignZegModel
from ...modeling.text_encoder import VocabularyEncoder
from ...segmenter import AlignZegSegmenter
from .config import TrainConfig
from ..datasets.augmentation import (IGNORE_INDEX, AugmentedView, PhotoMetricDistortion, RandomResizeCrop,
                                     ResumableBatchSampler, collate)
from .losses import AlignZegCriterion
from .optim import parameter_groups

logger = logging.getLogger(__name__)

__all__ = ["Trainer", "lr_factor", "run_record", "run_differences", "untrained_model"]

STATE_NAME = "trainer_state.pt"
RUN_NAME = "run.json"
_NOT_IN_RUN = ("progress", "log_every", "checkpoint_every", "num_workers", "device")
"""``TrainConfig`` fields that change no number of a run (left out of its fingerprint)."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _data_record(config: TrainConfig, dataset: Any) -> dict[str, Any]:
    names = [str(n) for n in (getattr(dataset, "class_names", ()) or ())]
    seen = config.seen_classes if config.seen_classes is not None else getattr(dataset, "seen_classes", None)
    record: dict[str, Any] = {"class_names": names, "seen_classes": list(seen or names),
                              "num_images": len(dataset)}
    files = getattr(dataset, "images", None)
    if files is not None and len(files):
        root = os.path.commonpath([os.path.abspath(p) for p in files])
        root = root if os.path.isdir(root) and len(files) > 1 else os.path.dirname(root)
        record["files_sha256"] = _sha256("\n".join(os.path.relpath(os.path.abspath(p), root)
                                                   for p in files).encode())
    elif len(dataset):
        item = dataset[0]
        record["first_item_sha256"] = _sha256(b"".join(
            np.ascontiguousarray(np.asarray(item[k])).tobytes() for k in ("image", "label")))
    embeddings = getattr(dataset, "class_embeddings", None)
    if embeddings is not None:
        record["class_embeddings_sha256"] = _sha256(np.ascontiguousarray(
            torch.as_tensor(embeddings).float().cpu().numpy()).tobytes())
    return record


def run_record(config: TrainConfig, dataset: Any) -> dict[str, Any]:
    """What identifies a training run: ``{"config": ..., "data": ..., "fingerprint": sha256 hex}``.

    ``config`` is ``config.to_dict()`` without the fields that change no number (``progress``, ``log_every``,
    ``checkpoint_every``, ``num_workers``, ``device``); ``data`` holds the class names, the training classes,
    the image count and a SHA-256 of the image file names relative to their common folder (or, for a
    dataset without files, of its first item's image and label), plus one of ``class_embeddings`` if any.
    """
    settings = {k: v for k, v in config.to_dict().items() if k not in _NOT_IN_RUN}
    record: dict[str, Any] = {"config": settings, "data": _data_record(config, dataset)}
    record["fingerprint"] = _sha256(json.dumps(record, sort_keys=True, default=str).encode())
    return record


def run_differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``"config.lr: 0.001 (checkpoint) != 0.002 (this run)"`` for every setting or data entry that differs."""
    out = []
    for part in ("config", "data"):
        if part not in stored:  # a checkpoint from before run.json records its settings only
            continue
        a, b = stored[part], current.get(part, {})
        for key in sorted(set(a) | set(b)):
            if _canonical(a.get(key)) != _canonical(b.get(key)):
                out.append(f"{part}.{key}: {_short(a.get(key, '<absent>'))} (checkpoint) != "
                           f"{_short(b.get(key, '<absent>'))} (this run)")
    return out


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _is_finished(out_dir: Path) -> bool:
    """Whether the run in ``out_dir`` ended: its model was saved after its ``run.json`` (written at every start)."""
    model, run = out_dir / WEIGHTS_NAME, out_dir / RUN_NAME
    return model.is_file() and run.is_file() and model.stat().st_mtime_ns >= run.stat().st_mtime_ns


def lr_factor(config: TrainConfig, step: int) -> float:
    """Multiplier of ``config.lr`` at optimizer step ``step`` (0-based): linear warm-up, then the schedule."""
    if step < config.warmup_iters:
        return (step + 1) / config.warmup_iters
    total = max(1, config.iterations - config.warmup_iters)
    progress = min(1.0, (step - config.warmup_iters) / total)
    if config.schedule == "poly":
        return (1.0 - progress) ** config.poly_power
    if config.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def untrained_model(config: TrainConfig) -> AlignZegModel:
    """The model a run starts from: ``config.model_config`` built with ``config.seed`` (on the CPU), its
    frozen CLIP's weights from ``config.clip_pretrained`` (random with ``None``), recorded in the model's
    ``config.clip_pretrained``; what ``AlignZegSegmenter.from_preset`` gives for the same preset and overrides.
    """
    return build_model(config.model_config, config.seed,
                       clip_pretrained=normalize_clip_pretrained(config.clip_pretrained or None))


class Trainer:
    """Trains an AlignZeg model.

    Args:
        config: training settings.
        model: an ``AlignZegModel`` or ``AlignZegSegmenter`` to train, or ``None`` to build
            ``config.model_config`` (``untrained_model``: seeded with ``config.seed``, CLIP weights from
            ``config.clip_pretrained``).
        dataset: a training dataset (protocol in ``alignzeg.train.datasets``).
        out_dir: where checkpoints and the final model go; ``None`` writes nothing.
        resume: a checkpoint folder to continue from, ``"auto"`` (the latest in ``out_dir``, if any) or ``None``.
            The checkpoint must be of the same run (``run.json``), else ``ValueError`` names what differs.
        overwrite: let a fresh run (nothing resumed) write into a non-empty ``out_dir``; the old run's
            checkpoints there are deleted.

    Raises:
        ValueError: a fresh run into a non-empty ``out_dir`` without ``overwrite``, or a checkpoint of a
            different run (both before the model is built).
    """

    def __init__(self, config: TrainConfig, model: AlignZegModel | AlignZegSegmenter | None, dataset: Any,
                 out_dir: str | os.PathLike | None = None, resume: str | os.PathLike | None = None,
                 overwrite: bool = False) -> None:
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.config = config
        self.dataset = dataset
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.resume = resume
        self.overwrite = overwrite
        self.history: list[dict[str, float]] = []
        self._setup_distributed()
        self.run = run_record(config, dataset)
        self._resume_from = self._check_run()
        self.model = self._build_model(model).to(self.device)
        self.train_ids, self.class_names = self._training_classes()
        self.class_embeddings = self._class_embeddings()
        extra = dict(self.model.config.extra)
        if config.validation_classes:  # a calibration model: calibrate_inductive reads them
            extra["validation_classes"] = tuple(config.validation_classes)
        self.model.config = self.model.config.replace(
            seen_classes=self.class_names, indicator_trained=bool(config.class_indicator and config.lambda_bc > 0),
            extra=extra)
        self.criterion = AlignZegCriterion(config)

    # Setup -------------------------------------------------------------------------------------------

    def _setup_distributed(self) -> None:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1 and not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() and self.config.device != "cpu" else "gloo"
            dist.init_process_group(backend=backend, init_method="env://")
        self.rank, self.world_size = _rank_world()
        device = self.config.device
        if device is None:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available; set the config's device to "
                             "\"cpu\" (alignzeg-train --set 'device=\"cpu\"')")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)

    def _build_model(self, model: AlignZegModel | AlignZegSegmenter | None) -> AlignZegModel:
        if isinstance(model, AlignZegSegmenter):
            return model.model
        if isinstance(model, AlignZegModel):
            return model
        if model is not None:
            raise TypeError(f"model must be an AlignZegModel, an AlignZegSegmenter or None, got {type(model).__name__}")
        return untrained_model(self.config)

    def _training_classes(self) -> tuple[list[int], tuple[str, ...]]:
        names = tuple(getattr(self.dataset, "class_names", ()) or ())
        if not names:
            raise ValueError("the dataset has no class_names; see alignzeg.train.datasets for the dataset protocol")
        if len(names) > 255:
            raise ValueError(f"at most 255 classes are supported (255 is the ignore label), the dataset has {len(names)}")
        seen = self.config.seen_classes
        if seen is None:
            seen = tuple(getattr(self.dataset, "seen_classes", None) or names)
        unknown = [s for s in seen if s not in names]
        if unknown:
            raise ValueError(f"seen classes {unknown} are not among the dataset's classes {list(names)}")
        held_out = [c for c in self.config.validation_classes if c not in seen]
        if held_out:
            raise ValueError(f"validation classes {held_out} are not among the seen classes {list(seen)}")
        wanted = set(seen) - set(self.config.validation_classes)
        if not wanted:
            raise ValueError(f"validation classes {list(self.config.validation_classes)} leave no seen class to train")
        ids = [k for k, n in enumerate(names) if n in wanted]
        return ids, tuple(names[k] for k in ids)

    def _class_embeddings(self) -> torch.Tensor:
        fixed = getattr(self.dataset, "class_embeddings", None)
        dim = self.model.config.embed_dim
        if fixed is not None:
            fixed = torch.as_tensor(fixed).float()
            if fixed.dim() != 2 or fixed.shape != (len(self.dataset.class_names), dim):
                raise ValueError(f"dataset class_embeddings must be (K={len(self.dataset.class_names)}, {dim}), "
                                 f"got {tuple(fixed.shape)}")
            return torch.nn.functional.normalize(fixed[self.train_ids], dim=-1).to(self.device)
        encoder = VocabularyEncoder(self.model.backbone, self.model.config.templates)
        with torch.no_grad():
            return encoder(list(self.class_names)).float().to(self.device)

    def _label_lut(self) -> torch.Tensor:
        lut = torch.full((256,), IGNORE_INDEX, dtype=torch.long)
        lut[torch.tensor(self.train_ids)] = torch.arange(len(self.train_ids))
        return lut

    def _loader(self, start_micro: int, stop_micro: int) -> DataLoader:
        cfg = self.config
        micro = cfg.batch_size // (cfg.grad_accum * self.world_size)
        if micro < 1 or cfg.batch_size % (cfg.grad_accum * self.world_size):
            raise ValueError(f"batch_size {cfg.batch_size} must be divisible by grad_accum ({cfg.grad_accum}) x "
                             f"processes ({self.world_size})")
        view = AugmentedView(self.dataset, RandomResizeCrop(self.model.config.input_size, cfg.crop_scale, cfg.flip),
                             self._label_lut(), PhotoMetricDistortion() if cfg.photometric else None)
        sampler: DistributedSampler[int] = DistributedSampler(view, num_replicas=self.world_size, rank=self.rank,
                                                              shuffle=True, seed=cfg.seed, drop_last=True)
        batches = ResumableBatchSampler(sampler, micro, start_micro, stop_micro, cfg.seed)
        return DataLoader(view, batch_sampler=batches, num_workers=cfg.num_workers, collate_fn=collate,
                          pin_memory=self.device.type == "cuda")

    def _amp(self) -> tuple[contextlib.AbstractContextManager, torch.amp.GradScaler | None]:
        if self.device.type != "cuda" or not self.config.amp:
            return contextlib.nullcontext(), None
        dtype = autocast_dtype()
        return torch.autocast("cuda", dtype=dtype), (torch.amp.GradScaler("cuda") if dtype == torch.float16 else None)

    # Training ----------------------------------------------------------------------------------------
    def train(self) -> AlignZegSegmenter:
        """Run to ``config.iterations`` steps (from the resumed step, if any) and return the trained segmenter."""
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            return self._train()

    def _train(self) -> AlignZegSegmenter:
        cfg = self.config
        params = self.model.trainable_parameters()
        count = sum(p.numel() for p in params if p.requires_grad)
        logger.info("training %d trainable parameters (frozen: %d); %d seen classes; %d processes", count,
                    sum(p.numel() for p in self.model.parameters()) - count, len(self.class_names), self.world_size)
        logger.info("train config: %s", cfg.to_dict())
        optimizer = torch.optim.AdamW(parameter_groups(self.model, params, cfg.weight_decay, cfg.no_decay,
                                                       cfg.lr_multipliers), lr=cfg.lr, foreach=True)
        autocast, scaler = self._amp()
        start = self._restore(optimizer, scaler)
        if self.rank == 0 and self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            cfg.to_json(self.out_dir / "train_config.json")
            write_json(self.out_dir / RUN_NAME, self.run)
        self.model.train()
        net: torch.nn.Module = self.model
        if self.world_size > 1:
            net = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda"
                                          else None)
        batches = iter(self._loader(start * cfg.grad_accum, cfg.iterations * cfg.grad_accum))
        with progress_bar(cfg.iterations, initial=start, disable=not cfg.progress or self.rank != 0,
                          desc="alignzeg-train") as bar:
            for step in range(start, cfg.iterations):
                record = self._step(step, net, optimizer, scaler, autocast, batches)
                self.history.append(record)
                bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)  # drawn with the step's count
                if step % cfg.log_every == 0 or step == cfg.iterations - 1:
                    logger.info("step %d/%d %s", step + 1, cfg.iterations,
                                " ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "step"))
                if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.iterations:
                    self.save_checkpoint(step + 1, optimizer, scaler)
                advance(bar)
        return self._finish()

    def _step(self, step: int, net: torch.nn.Module, optimizer: torch.optim.Optimizer,
              scaler: torch.amp.GradScaler | None, autocast: contextlib.AbstractContextManager,
              batches: Any) -> dict[str, float]:
        cfg = self.config
        lr = cfg.lr * lr_factor(cfg, step)
        # The step's randomness (dropout, synthetic features) depends only on (seed, step, rank): exact resume.
        torch.manual_seed((cfg.seed * 1_000_003 + step * 7_919 + self.rank) % (2 ** 63 - 1))
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
        optimizer.zero_grad(set_to_none=True)
        trainable = [p for p in self.model.trainable_parameters() if p.requires_grad]
        sums: dict[str, float] = {}
        for micro in range(cfg.grad_accum):
            images, labels = next(batches)
            images, labels = images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
            sync: contextlib.AbstractContextManager = contextlib.nullcontext()
            if isinstance(net, DistributedDataParallel) and micro < cfg.grad_accum - 1:
                sync = net.no_sync()
            with sync:
                with autocast:
                    out = net(images, self.class_embeddings, deep_supervision=cfg.deep_supervision)
                loss, terms = self.criterion(self.model, out, labels, self.class_embeddings)
                if isinstance(net, DistributedDataParallel):
                    # Touch every trainable parameter so DDP always sees a gradient for it (adds exactly 0).
                    loss = loss + 0.0 * sum(p.sum() for p in trainable)
                scaled = loss / cfg.grad_accum
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
            if not isinstance(net, DistributedDataParallel):
                # What the touch gives in one process, without its graph: a zero gradient for every trainable
                # parameter the loss did not reach (so AdamW treats them the same way with or without DDP).
                for p in trainable:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
            for k, v in {"loss": float(loss.detach()), **terms}.items():
                sums[k] = sums.get(k, 0.0) + v / cfg.grad_accum
        if scaler is not None:
            scaler.unscale_(optimizer)
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.trainable_parameters(), cfg.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        return {"step": float(step), "lr": lr, **sums}

    # Checkpoints -------------------------------------------------------------------------------------
    def save_checkpoint(self, step: int, optimizer: torch.optim.Optimizer,
                        scaler: torch.amp.GradScaler | None) -> Path | None:
        """Write ``out_dir/checkpoints/step_XXXXXX`` (rank 0 only). Returns the folder, or None."""
        if self.rank != 0 or self.out_dir is None:
            return None
        folder = self.out_dir / "checkpoints" / f"step_{step:06d}"
        weights = self.model.state_dict()
        # Like save_pretrained, record the CLIP fingerprint, so a step folder loads with the same check.
        save_checkpoint(folder, self.model.config.replace(clip_fingerprint=clip_fingerprint(weights)), weights)
        state = {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else {},
        }
        torch.save(state, folder / STATE_NAME)
        self.config.to_json(folder / "train_config.json")
        write_json(folder / RUN_NAME, self.run)
        logger.info("saved checkpoint %s", folder)
        return folder

    def _resume_folder(self) -> Path | None:
        if self.resume is None:
            return None
        if str(self.resume) == "auto":
            root = self.out_dir / "checkpoints" if self.out_dir is not None else None
            found = sorted(root.glob("step_*")) if root is not None and root.is_dir() else []
            return found[-1] if found else None
        folder = Path(self.resume)
        if not (folder / STATE_NAME).is_file() or not (folder / WEIGHTS_NAME).is_file():
            raise FileNotFoundError(f"{folder} is not a training checkpoint (needs {WEIGHTS_NAME} and {STATE_NAME})")
        return folder

    def _check_run(self) -> Path | None:
        """The checkpoint to resume from, checked to be of this run; or a fresh run's ``out_dir`` checked."""
        folder = self._resume_folder()
        if folder is not None:
            stored = self._stored_run(folder)
            differences = run_differences(stored, self.run) if stored is not None else []
            if differences:
                raise ValueError(f"checkpoint {str(folder)!r} is of a different run; it differs in "
                                 + "; ".join(differences)
                                 + ". Resume with the same settings and data, or start a fresh run in a new --out")
        if str(self.resume) == "auto":
            self._check_auto_resume(folder)
        if folder is not None:
            return folder
        if self.out_dir is None or not self.out_dir.is_dir() or not any(self.out_dir.iterdir()):
            return None
        if not self.overwrite:
            held = sorted(p.name for p in self.out_dir.iterdir())
            raise ValueError(f"output folder {str(self.out_dir)!r} is not empty (it holds {', '.join(held[:5])}"
                             f"{', ...' if len(held) > 5 else ''}) and this is a fresh run; choose a new folder, "
                             "resume the run there (resume='auto', --resume auto) or allow overwriting "
                             "(overwrite=True, --overwrite)")
        old = self.out_dir / "checkpoints"
        for step in sorted(old.glob("step_*")) if old.is_dir() and self.rank == 0 else []:
            if (step / STATE_NAME).is_file():
                shutil.rmtree(step)
                logger.warning("overwrite: deleted the old checkpoint %s", step)
        return None

    def _check_auto_resume(self, folder: Path | None) -> None:
        """``resume="auto"`` into a non-empty ``out_dir``: refuse a run that is complete, or one with no checkpoint.

        Raises:
            ValueError: the run finished (its model was saved after its ``run.json`` was written), or
                ``out_dir`` holds files but no checkpoint; the message says what to do instead.
        """
        out = self.out_dir
        if out is None or not out.is_dir() or not any(out.iterdir()):
            return  # nothing there: a fresh run
        if _is_finished(out):
            raise ValueError(f"the run in {str(out)!r} is complete: its trained model {out / WEIGHTS_NAME} was saved "
                             "at its end, so there is nothing to resume; to train again, use overwrite=True "
                             "(--overwrite) without resume, or a new --out")
        if folder is None:
            raise ValueError(f"resume='auto' (--resume auto): {str(out)!r} holds no checkpoint to resume (no "
                             f"{out / 'checkpoints' / 'step_*'}: its config saves none, checkpoint_every=0, or the "
                             "run stopped before its first); start it again with overwrite=True (--overwrite) "
                             "without resume, or in a new --out")

    def _stored_run(self, folder: Path) -> dict[str, Any] | None:
        """A checkpoint's ``run.json``; for checkpoints written before it existed, its ``train_config.json``."""
        if (folder / RUN_NAME).is_file():
            return json.loads((folder / RUN_NAME).read_text(encoding="utf-8"))
        if (folder / "train_config.json").is_file():
            logger.warning("checkpoint %s has no %s: only its settings are compared, not its data", folder, RUN_NAME)
            stored = TrainConfig.from_json(folder / "train_config.json").to_dict()
            return {"config": {k: v for k, v in stored.items() if k not in _NOT_IN_RUN}}
        logger.warning("checkpoint %s records neither %s nor train_config.json: cannot check that it is of this "
                       "run", folder, RUN_NAME)
        return None

    def _restore(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> int:
        folder = self._resume_from
        if folder is None:
            return 0
        load_state_dict_strict(self.model, load_file(str(folder / WEIGHTS_NAME), device=str(self.device)))
        state = torch.load(folder / STATE_NAME, map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        logger.info("resumed from %s at step %d", folder, state["step"])
        return int(state["step"])

    def _finish(self) -> AlignZegSegmenter:
        segmenter = AlignZegSegmenter(self.model, device=self.device)
        if self.rank == 0 and self.out_dir is not None:
            segmenter.save_pretrained(self.out_dir)
            logger.info("saved the trained model to %s", self.out_dir)
        return segmenter
