"""Evaluation and calibration: ``evaluate`` (mIoU / hIoU through ``segment``), the ``alignzeg-eval`` command
line (``eval_cli``), the choice of the post-processing settings (``calibrate``, on the cached network outputs of
``calibration_grid``) and the diagnostics of a trained model (``diagnostics``)."""
