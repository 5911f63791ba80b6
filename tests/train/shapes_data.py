"""Generated data for the training tests: a dataset of coloured shapes with fixed class embeddings, and
folder datasets written to disk. Imported by name (``from shapes_data import ...``), never through
``conftest``: tests/ and tests/train/ both have a conftest.py, and one shadows the other in a run of both."""

import numpy as np
import torch


class ShapesDataset:
    """Images of coloured rectangles on grey; class k is drawn in colour k. Follows the protocol of alignzeg.train.datasets."""

    colours = np.array([[220, 40, 40], [40, 200, 60], [50, 60, 230], [230, 220, 40]], dtype=np.uint8)

    def __init__(self, num=16, size=64, seed=0, names=("red", "green", "blue", "yellow"),
                 seen=("red", "green", "blue"), embed_dim=64, with_embeddings=True):
        rng = np.random.default_rng(seed)
        self.class_names = tuple(names)
        self.seen_classes = tuple(seen)
        self.items = []
        for _ in range(num):
            image = np.full((size, size, 3), 128, dtype=np.uint8)
            label = np.full((size, size), 255, dtype=np.int64)
            for k in rng.choice(len(names), size=2, replace=False):
                y, x = rng.integers(0, size // 2, size=2)
                h, w = rng.integers(size // 4, size // 2, size=2)
                image[y:y + h, x:x + w] = self.colours[k]
                label[y:y + h, x:x + w] = k
            self.items.append({"image": image, "label": label})
        if with_embeddings:
            gen = torch.Generator().manual_seed(seed)
            self.class_embeddings = torch.nn.functional.normalize(torch.randn(len(names), embed_dim, generator=gen), dim=-1)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def write_folder_dataset(root, classes, items):
    """A folder dataset (``alignzeg.train.datasets.loaders``' layout: ``images/``, ``labels/``, ``classes.txt``) at
    ``root``; ``items`` maps an image file name (its suffix picks the format) to (HxWx3 uint8 image, HxW uint8
    label). Returns ``root``."""
    from pathlib import Path

    from PIL import Image

    root = Path(root)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.txt").write_text("".join(f"{name}\n" for name in classes))
    for filename, (image, label) in items.items():
        Image.fromarray(image).save(root / "images" / filename)
        Image.fromarray(label).save(root / "labels" / (Path(filename).stem + ".png"))
    return root
