"""Benchmark the shard format and reader; prints JSON.

    .venv/bin/python bench/reader.py [--takes 12] [--minutes 3] [--windows 3000]

1. Storage options (chunk length x compression) on synthetic takes of realistic shapes (E = 64,
   478 landmarks): file MB per video minute, whole-take read (ms per video minute, the reader's cache
   fill) and random 128-frame window reads straight from HDF5 (no cache).
2. WindowDataset (the shipped format): windows/s and MB/s of items produced, cold (first touch of every
   take) and warm (takes cached), single process, single thread; CPU seconds (process_time) as well
   as wall seconds, since the machine may be shared.
3. DataLoader, batch 32, 0 and 2 workers, default_collate vs musicface.data.collate (batches filled
   in place by __getitems__): windows/s.
Random data compresses worse than real features, so file sizes are an upper bound.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from musicface.data import WindowDataset, collate, open_shards  # noqa: E402
from preprocessing import shards as sh  # noqa: E402


def synthetic_take(i: int, n: int, rng) -> sh.TakeData:
    m = sh.n_mfcc_rows(n)
    t = np.arange(n) / 30
    # smooth-ish signals like real features (random walks), so compression is not meaningless
    def walk(*shape):
        return np.cumsum(rng.standard_normal(shape).astype(np.float32) * 0.05, axis=0)

    arrays = {k: walk(m, 26) for k in sh.MFCC_KEYS}
    arrays.update(exp=walk(n, 64), pose=walk(n, 6) * 0.1, au45=rng.random(n).astype(np.float32),
                  eye_long=np.zeros(n, np.float32), eye_blink=(np.sin(t * 2) > 0.95).astype(np.uint8),
                  valid=(rng.random(n) > 0.01).astype(np.uint8),
                  landmarks=(0.5 + walk(n, 478, 2) * 0.01).astype(np.float16))
    return sh.TakeData(f"take{i:04d}", f"s{i % 4}", f"song{i}", "train", 0.0, "gcc-phat", 10.0, arrays)


def write_variant(out: Path, takes, chunk: int, compression: dict) -> None:
    sh.CHUNK_FRAMES, sh.CHUNK_MFCC = chunk, chunk * 4
    sh.COMPRESSION = compression
    sh.write_shard_set(out, takes, 32, "bench")


def storage_options(root: Path, takes, minutes_total: float, windows: int) -> list[dict]:
    saved = (sh.CHUNK_FRAMES, sh.CHUNK_MFCC, sh.COMPRESSION)
    variants = [("gzip4+shuffle", dict(compression="gzip", compression_opts=4, shuffle=True)),
                ("lzf+shuffle", dict(compression="lzf", shuffle=True)),
                ("none", {})]
    rows = []
    rng = np.random.default_rng(0)
    for chunk in (128, 512, 2048):
        for name, comp in variants:
            out = root / f"s_{chunk}_{name}"
            write_variant(out, takes, chunk, comp)
            size = sum(p.stat().st_size for p in out.glob("*.h5"))
            s = open_shards(out)
            infos = s.takes()
            c0 = time.process_time()
            for info in infos:
                with h5py.File(info.shard) as f:
                    g = f["takes"][info.take]
                    for k in sh.MFCC_KEYS + ("exp", "pose", "au45", "eye_long", "eye_blink", "valid"):
                        g[k][()]
            whole = time.process_time() - c0
            files = {p: h5py.File(p) for p in s.files}
            c0 = time.process_time()
            for _ in range(windows // 10):
                info = infos[rng.integers(len(infos))]
                st = int(rng.integers(0, info.n_frames - 128))
                g = files[info.shard]["takes"][info.take]
                r0 = st * 10 // 3
                for k in sh.MFCC_KEYS:
                    g[k][max(0, r0 - 19):r0 + 427 + 19]
                for k in ("exp", "pose", "au45", "eye_long", "eye_blink", "valid"):
                    g[k][st:st + 128]
            direct = (windows // 10) / (time.process_time() - c0)
            for f in files.values():
                f.close()
            rows.append({"chunk_frames": chunk, "chunk_mfcc_rows": chunk * 4, "compression": name,
                         "mb_per_video_min": round(size / 2**20 / minutes_total, 3),
                         "whole_take_read_ms_per_video_min": round(whole * 1000 / minutes_total, 2),
                         "direct_h5_windows_per_s": round(direct, 1)})
    sh.CHUNK_FRAMES, sh.CHUNK_MFCC, sh.COMPRESSION = saved
    return rows


def item_bytes(item) -> int:
    return sum(v.numel() * v.element_size() for v in item.values())


def reader(out: Path, windows: int) -> dict:
    s = open_shards(out)
    res = {}
    ds = WindowDataset(s, "train", window=128, samples_per_epoch=windows, seed=0)
    nbytes = item_bytes(ds[0])
    ds = WindowDataset(s, "train", window=128, samples_per_epoch=windows, seed=0)  # fresh, empty cache
    c0, w0 = time.process_time(), time.perf_counter()
    for i in range(len(s.takes("train"))):  # touch every take once: the cold cost
        ds._take(i)
    res["cache_fill_cpu_s"] = round(time.process_time() - c0, 3)
    c0, w0 = time.process_time(), time.perf_counter()
    for i in range(windows):
        ds[i]
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    res.update(item_mb=round(nbytes / 2**20, 3), warm_windows_per_cpu_s=round(windows / cpu, 1),
               warm_windows_per_wall_s=round(windows / wall, 1),
               warm_mb_per_cpu_s=round(windows * nbytes / 2**20 / cpu, 1))
    for name, collate_fn in (("default_collate", None), ("data.collate", collate)):
        for workers in (0, 2):
            dl = torch.utils.data.DataLoader(ds, batch_size=32, num_workers=workers, collate_fn=collate_fn,
                                             persistent_workers=workers > 0)
            it = iter(dl)
            next(it)  # start-up (worker fork + cache fill) excluded from the steady state below
            c0, w0, n = time.process_time(), time.perf_counter(), 0
            for b in it:
                n += len(b["start"])
            key = f"dataloader_{name}_{workers}w"
            res[key + "_windows_per_wall_s"] = round(n / (time.perf_counter() - w0), 1)
            if workers == 0:
                res[key + "_windows_per_cpu_s"] = round(n / (time.process_time() - c0), 1)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--takes", type=int, default=12)
    ap.add_argument("--minutes", type=float, default=3.0, help="length of each synthetic take")
    ap.add_argument("--windows", type=int, default=3000)
    ap.add_argument("--skip-storage", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    n = int(a.minutes * 60 * 30)
    takes = [synthetic_take(i, n, rng) for i in range(a.takes)]
    total_min = a.takes * a.minutes
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out = {"takes": a.takes, "minutes_per_take": a.minutes, "cpu_count": os.cpu_count()}
        if not a.skip_storage:
            out["storage"] = storage_options(tmp, takes, total_min, a.windows)
        sh.write_shard_set(tmp / "shipped", takes, 32, "bench")
        out["shipped"] = {"chunk_frames": sh.CHUNK_FRAMES, "chunk_mfcc_rows": sh.CHUNK_MFCC,
                          "compression": "gzip4+shuffle",
                          "mb_per_video_min": round(sum(p.stat().st_size for p in (tmp / "shipped").glob("*.h5"))
                                                    / 2**20 / total_min, 3)}
        out["reader"] = reader(tmp / "shipped", a.windows)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
