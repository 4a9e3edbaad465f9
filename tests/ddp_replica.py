"""`musicface train` as one torchrun process that also saves its own replica (a test helper).

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_replica.py \\
        --shards S --config-json J --out OUT --no-progress

Runs ``musicface.train.main`` unchanged, recording the generator and discriminator the training
code builds; when training returns, every process writes ``OUT/replica-<RANK>.pt`` =
``{"generator": state_dict, "disc": state_dict}`` of the weights it holds, so that a test can
compare the replicas of all processes (process 0 alone writes model.pt).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from musicface import train as T

built: dict[str, torch.nn.Module] = {}


class RecordedMusicFace(T.MusicFace):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        built["generator"] = self


class RecordedDiscriminator(T.Discriminator):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        built["disc"] = self


if __name__ == "__main__":
    T.MusicFace, T.Discriminator = RecordedMusicFace, RecordedDiscriminator
    argv = sys.argv[1:]
    rc = T.main(argv)
    out = Path(argv[argv.index("--out") + 1])
    weights = {k: {n: v.detach().cpu().clone() for n, v in m.state_dict().items()}
               for k, m in built.items()}
    torch.save(weights, out / f"replica-{os.environ.get('RANK', '0')}.pt")
    sys.exit(rc)
