"""The synthetic zero-shot worlds, in one place: the attribute world the demo renders (``attributes``, numpy only),
the object world (``objects``, numpy only), the mini-CLIP pre-trained on a world's captions (``miniclip``, torch)
and a world as training data (``export``: a torch dataset and the folder-dataset export).

This package never imports ``alignzeg.train`` (the demo imports ``attributes``); the world experiments' training
recipe and the command that sets a world up for ``alignzeg-train`` are ``alignzeg.train.training.world_recipe``.
Nothing is imported here, so ``import alignzeg.worlds.attributes`` imports numpy only.
"""
