"""Segment a folder of images on Ray Data: one segmenter per actor, label maps written as 16-bit PNGs.

    python examples/ray_batch.py PHOTOS --classes road,tree,car --model DIR_OR_REPO --out-dir labels
    python examples/ray_batch.py PHOTOS ... --actors 4 --gpus 1          # one actor per GPU

Runs on a laptop as is (``ray.init()`` starts a local Ray). On a cluster, run the same command on the head
node (or with ``RAY_ADDRESS`` set): ``ray.init()`` joins the running cluster, PHOTOS must be readable by
every node (a shared file system, ``s3://...`` or ``gs://...``), and the driver writes the PNGs. Each
actor takes ``--cpus`` CPUs: leave at least one CPU free for Ray's image-reading tasks (on a 2-CPU laptop,
one actor). Without --model an UNTRAINED tiny model is used (random weights: the masks are meaningless),
so the script runs anywhere.
"""

import argparse
import os
import tempfile

import numpy as np
import ray
from PIL import Image

from alignzeg import AlignZegSegmenter
from alignzeg.integrations.ray import segment_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="folder of images (local, shared, or s3://...)")
    parser.add_argument("--classes", default="person,chair,diningtable,bottle,wall")
    parser.add_argument("--model", default=None, help="checkpoint folder or Hub repo id")
    parser.add_argument("--out-dir", default="labels")
    parser.add_argument("--actors", type=int, default=1, help="segmenters running in parallel")
    parser.add_argument("--gpus", type=float, default=0, help="GPUs per actor")
    parser.add_argument("--cpus", type=float, default=1, help="CPUs per actor")
    args = parser.parse_args()

    ray.init()  # local Ray, or the cluster named by RAY_ADDRESS / the one this node belongs to
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model
        if model is None:
            print("no --model: using an UNTRAINED tiny model (random weights)")
            model = AlignZegSegmenter.from_preset("tiny", seed=0).save_pretrained(os.path.join(scratch, "tiny"))
        images = ray.data.read_images(args.folder, include_paths=True, mode="RGB")
        labelled = segment_dataset(images, model, args.classes.split(","), num_actors=args.actors,
                                   num_gpus=args.gpus, num_cpus=args.cpus)
        count = 0
        for row in labelled.iter_rows():  # streamed to the driver, which writes the files
            name = os.path.splitext(os.path.relpath(row["path"], args.folder.split("://")[-1]))[0] + ".png"
            target = os.path.join(args.out_dir, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            Image.fromarray((np.asarray(row["label_map"]) + 1).astype(np.uint16)).save(target)
            count += 1
    print(f"wrote {count} label maps (16-bit PNG, class index + 1) to {args.out_dir}")
    ray.shutdown()


if __name__ == "__main__":
    main()
