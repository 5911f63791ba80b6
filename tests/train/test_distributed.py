"""Two processes on CPU (gloo) under torchrun: after a few DDP steps both ranks hold identical weights."""

import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from safetensors.torch import load_file

WORKER = textwrap.dedent("""
    import os, sys
    import torch
    from safetensors.torch import save_file
    sys.path.insert(0, {here!r})
    from shapes_data import ShapesDataset
    from alignzeg.train import TrainConfig, Trainer

    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    cfg = TrainConfig(preset="tiny", iterations=3, batch_size=4, lr=1e-2, progress=False, checkpoint_every=0,
                      device="cpu", seed=0)
    trainer = Trainer(cfg, None, ShapesDataset(num=8), out_dir=None)
    assert trainer.world_size == 2, trainer.world_size
    init = {{k: v.clone() for k, v in trainer.model.state_dict().items()}}
    trainer.train()
    state = {{k: v.contiguous() for k, v in trainer.model.state_dict().items()}}
    save_file(state, os.path.join({out!r}, f"rank{{rank}}.safetensors"))
    save_file(init, os.path.join({out!r}, f"init{{rank}}.safetensors"))
    torch.distributed.destroy_process_group()
""")


def test_two_ranks_end_with_identical_weights(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(here=str(Path(__file__).parent), out=str(tmp_path)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
           str(script)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=500, env={**__import__("os").environ,
                                                                                "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    init = load_file(str(tmp_path / "init0.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    changed = [k for k in a if not torch.equal(a[k], init[k])]
    assert any(k.startswith("extractor.") for k in changed) and "backbone.prompts.tokens" in changed
    assert not any(k.startswith("backbone.clip.") for k in changed)  # CLIP stays frozen; its deep prompts train
