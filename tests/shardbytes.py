"""Test helper: every array of a shard set as raw bytes, for byte-identity checks between runs."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np


def shard_array_bytes(shard_dir: Path) -> dict[str, bytes]:
    """``{"<file>.h5/<dataset path>": bytes}`` for every dataset of every shard in ``shard_dir``."""
    out = {}
    for f in sorted(Path(shard_dir).glob("*.h5")):
        with h5py.File(f, "r") as h:
            def visit(name, obj, f=f):
                if isinstance(obj, h5py.Dataset):
                    out[f"{f.name}/{name}"] = np.ascontiguousarray(obj[()]).tobytes()
            h.visititems(visit)
    return out
