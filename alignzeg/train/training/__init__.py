"""Training: ``Trainer`` and its loop (``trainer``), the losses (``losses``: matching in ``matching``, GEPC's
feature mixing in ``gepc``), the optimiser's parameter groups (``optim``), ``TrainConfig`` (``config``), the named
recipes and ablation variants (``registry``), the world experiments' recipe and export command (``world_recipe``)
and the ``alignzeg-train`` command line (``train_cli``)."""
