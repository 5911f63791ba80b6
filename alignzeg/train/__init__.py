"""alignzeg.train: training and evaluation of AlignZeg models (``pip install "alignzeg[train]"``).

The inference package (``alignzeg``) never imports this one. Entry points:

    from alignzeg.train import TrainConfig, Trainer, evaluate
    trainer = Trainer(TrainConfig(preset="tiny", iterations=100), None, dataset, out_dir="run")
    segmenter = trainer.train()              # a trained AlignZegSegmenter, also saved in run/
    print(evaluate(segmenter, val_dataset).table())

Subpackages, by what they hold: ``training`` (``Trainer``, losses, ``TrainConfig``, recipes and variants),
``evaluation`` (``evaluate``, calibration, diagnostics) and ``datasets`` (benchmark splits, loaders, augmentation);
the synthetic worlds are ``alignzeg.worlds``.

Command lines: ``alignzeg-train`` (``alignzeg.train.training.train_cli``) and ``alignzeg-eval``
(``alignzeg.train.evaluation.eval_cli``; ``--calibrate`` chooses the bias-correction settings on a validation
split, ``alignzeg.train.evaluation.calibrate``). Diagnostics of a trained model:
``alignzeg.train.evaluation.diagnostics`` (class-indicator ROC AUC, background prototype usage).
See ``docs/training.md`` for the losses, the matching, the datasets and the evaluation protocol.
"""

try:  # the training-only dependency: Hungarian matching uses scipy's linear_sum_assignment
    import scipy.optimize  # noqa: F401
except ImportError as _err:  # pragma: no cover - exercised by a test that hides scipy
    raise ImportError(
        'alignzeg.train needs the training extras, which are not installed: pip install "alignzeg[train]"'
    ) from _err

from .training.config import TrainConfig  # noqa: E402
from .evaluation.evaluate import EvalResult, evaluate  # noqa: E402
from .training.trainer import Trainer  # noqa: E402

__all__ = ["TrainConfig", "Trainer", "evaluate", "EvalResult"]
