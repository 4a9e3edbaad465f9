"""Benchmark the shard format and reader; prints JSON.

    .venv/bin/python bench/reader.py [--takes 12] [--minutes 3] [--windows 3000]

1. Storage options (chunk length x compression) on synthetic takes of realistic shapes (E = 64,
   478 landmarks): file MB per video minute, whole-take read (ms per video minute, the reader's
   cache fill) and random 128-frame window reads straight from HDF5 (no cache).
2. WindowDataset (the shipped format): ``item_bytes`` (all three MFCC streams, the item contract;
   ``item_bytes_two_streams``: what training of the two-stream variants reads), windows/s of single
   items, cold (first touch of every take) and warm (takes cached), single process, single thread.
3. ``reader_windows_per_s``: the training reader, warm, in one process: DataLoader(batch 32,
   collate_fn=musicface.data.collate, no workers), wall clock and CPU seconds (process_time, less
   sensitive to a shared machine's load); also at batch 256, with two streams, and with 2 worker
   processes and default_collate for comparison.
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
from musicface.data import WindowDataset, collate, open_shards
from preprocessing import shards as sh
from preprocessing import timebase as tb


def synthetic_take(i: int, n: int, rng) -> sh.TakeData:
    m = sh.n_mfcc_rows(n)
    t = np.arange(n) / tb.FPS
    # smooth-ish signals like real features (random walks), so compression is not meaningless
    def walk(*shape):
        return np.cumsum(rng.standard_normal(shape).astype(np.float32) * 0.05, axis=0)

    arrays = {k: walk(m, tb.MFCC_DIM) for k in sh.MFCC_KEYS}
    arrays.update(exp=walk(n, 64), pose=walk(n, 6) * 0.1, au45=rng.random(n).astype(np.float32),
                  eye_long=np.zeros(n, np.float32),
                  eye_blink=(np.sin(t * 2) > 0.95).astype(np.uint8),
                  valid=(rng.random(n) > 0.01).astype(np.uint8),
                  landmarks=(0.5 + walk(n, 478, 2) * 0.01).astype(np.float16))
    return sh.TakeData(f"take{i:04d}", f"s{i % 4}", f"song{i}", "train", 0.0, "gcc-phat",
                       10.0, arrays)


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
                    for k in sh.MFCC_KEYS + ("exp", "pose", "au45", "eye_long",
                                             "eye_blink", "valid"):
                        g[k][()]
            whole = time.process_time() - c0
            files = {p: h5py.File(p) for p in s.files}
            c0 = time.process_time()
            for _ in range(windows // 10):
                info = infos[rng.integers(len(infos))]
                st = int(rng.integers(0, info.n_frames - 128))
                g = files[info.shard]["takes"][info.take]
                r0, r1 = tb.centre_rows([st, st + 127])  # the window's first / last frame
                for k in sh.MFCC_KEYS:
                    g[k][max(0, r0 - tb.CENTRE_ROW):r1 + tb.CENTRE_ROW + 1]
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


def loader_rate(ds, batch: int, windows: int, collate_fn=collate, workers: int = 0):
    """Windows/s (wall, CPU of this process) of a warm DataLoader over ``ds``, start-up excluded."""
    dl = torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers,
                                     collate_fn=collate_fn, persistent_workers=workers > 0)
    best = (0.0, 0.0)
    for _ in range(2):  # the better of two passes (the machine may be shared)
        it = iter(dl)
        next(it)  # start-up (worker fork + cache fill) excluded from the steady state
        c0, w0, n = time.process_time(), time.perf_counter(), 0
        for b in it:
            n += len(b["start"])
            if n >= windows:
                break
        wall, cpu = n / (time.perf_counter() - w0), n / max(time.process_time() - c0, 1e-9)
        best = max(best, (wall, cpu))
    return round(best[0], 1), round(best[1], 1)


def reader(out: Path, windows: int) -> dict:
    s = open_shards(out)
    res = {}
    ds = WindowDataset(s, "train", window=128, samples_per_epoch=max(windows, 64) * 4, seed=0)
    two = WindowDataset(s, "train", window=128, samples_per_epoch=max(windows, 64) * 4, seed=0,
                        mfcc_keys=("mfcc_vocals", "mfcc_music"))
    res["item_bytes"] = item_bytes(ds[0])
    res["item_bytes_two_streams"] = item_bytes(two[0])
    res["mfcc_rows_per_item"] = ds.mfcc_rows
    ds = WindowDataset(s, "train", window=128, samples_per_epoch=max(windows, 64) * 4, seed=0)
    c0 = time.process_time()
    for i in range(len(ds.infos)):  # touch every take once: the cold cost
        ds._take(i)
    res["cache_fill_cpu_s"] = round(time.process_time() - c0, 3)
    c0, w0 = time.process_time(), time.perf_counter()
    for i in range(windows):
        ds[i]
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    res.update(single_items_windows_per_cpu_s=round(windows / cpu, 1),
               single_items_windows_per_wall_s=round(windows / wall, 1))
    for key, (d, b, n) in {"reader": (ds, 32, windows), "batch256": (ds, 256, 4 * windows),
                           "two_streams": (two, 32, windows)}.items():
        res[f"{key}_windows_per_s"], res[f"{key}_windows_per_cpu_s"] = loader_rate(d, b, n)
    res["default_collate_windows_per_s"] = loader_rate(ds, 32, windows, collate_fn=None)[0]
    res["two_workers_windows_per_s"] = loader_rate(ds, 32, windows, workers=2)[0]
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--takes", type=int, default=12)
    ap.add_argument("--minutes", type=float, default=3.0, help="length of each synthetic take")
    ap.add_argument("--windows", type=int, default=6000)
    ap.add_argument("--skip-storage", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    n = int(a.minutes * 60 * 30)
    takes = [synthetic_take(i, n, rng) for i in range(a.takes)]
    total_min = a.takes * a.minutes
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out = {"takes": a.takes, "minutes_per_take": a.minutes, "cpu_count": os.cpu_count(),
               "loadavg": os.getloadavg()[0]}
        if not a.skip_storage:
            out["storage"] = storage_options(tmp, takes, total_min, a.windows)
        sh.write_shard_set(tmp / "shipped", takes, 32, "bench")
        out["shipped"] = {"chunk_frames": sh.CHUNK_FRAMES, "chunk_mfcc_rows": sh.CHUNK_MFCC,
                          "compression": "gzip4+shuffle",
                          "mb_per_video_min": round(sum(p.stat().st_size
                                                        for p in (tmp / "shipped").glob("*.h5"))
                                                    / 2**20 / total_min, 3)}
        out["reader"] = reader(tmp / "shipped", a.windows)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
