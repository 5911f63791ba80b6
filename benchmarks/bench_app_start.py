"""How long ``alignzeg app`` takes to serve its page, and its first ``/segment`` call through gradio_client.

Each round starts ``alignzeg app --port P`` (the shipped world model) in a fresh process on a free loopback
port, times the first HTTP 200 on the page and then one ``/segment`` call (a world test image with
"red striped, blue dotted"), and stops the server. Medians over the rounds.

    python benchmarks/bench_app_start.py --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def _world_png(folder: str) -> str:
    from alignzeg.worlds.attributes import AttributeWorld, world_config

    image, _ = AttributeWorld(world_config(0)).sample("test", 13)
    path = os.path.join(folder, "world_13.png")
    Image.fromarray(np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)).save(path)
    return path


def one_round(image: str, timeout: float, cache: str) -> tuple[float, float]:
    """(seconds until the page answers 200, seconds of the first /segment call)."""
    from gradio_client import Client, handle_file

    from alignzeg.app import app_process

    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT),
               XDG_CACHE_HOME=cache)
    start = time.perf_counter()
    with app_process(["--device", "cpu"], env=env, timeout=timeout) as url:
        served = time.perf_counter() - start
        t0 = time.perf_counter()
        Client(url, verbose=False).predict(handle_file(image), "red striped, blue dotted", api_name="/segment")
        return served, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600.0, help="give up on a round after this many seconds")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as folder:
        image = _world_png(folder)
        rows = [one_round(image, args.timeout, folder) for _ in range(args.rounds)]
    for i, (served, call) in enumerate(rows):
        print(f"round {i}: page served after {served:6.1f} s, first /segment call {call:5.2f} s")
    print(f"median over {len(rows)}: served after {statistics.median(r[0] for r in rows):.1f} s, "
          f"first /segment call {statistics.median(r[1] for r in rows):.2f} s ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
