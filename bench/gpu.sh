#!/usr/bin/env bash
# Every GPU measurement of the training path in one go, JSON on stdout (about 3 minutes on one
# H200-class GPU; each part has its own time limit, 5 minutes in all at most).
#
#     cd <copy of the repository> && PYTHONPATH=$PWD bash bench/gpu.sh > gpu.json
#
# Needs only torch (CUDA), numpy, h5py, scipy, PyYAML, tqdm and psutil: nothing is installed and
# no data is read (the benchmarks write random shards with the dataset's writer;
# tests/test_train.py checks this import chain). PYTHON picks the interpreter (default python3).
#
#   train   bench/train.py --device cuda --batches 16,64,256 --graph --bf16: aten ops and CUDA
#           kernels per step, GPU busy fraction, windows/s eager / bf16 / CUDA graph / both per
#           batch size, data loading per step, the paper-scale projection (40 h, 50 epochs)
#   reader  bench/reader.py --skip-storage: reader_windows_per_s (one process), item_bytes
#   checks  bench/gpu_checks.py: hand-written PGN backward vs autograd on CUDA, CUDA graph vs
#           eager weights, bf16 vs float32 losses, the training loop with and without the graph
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
tmp=$(mktemp -d)
ERROR_JSON='import json, sys; print(json.dumps({"error": open(sys.argv[1]).read()[-2000:]}))'
trap 'rm -rf "$tmp"' EXIT

part() {  # name seconds command...: its JSON, or {"error": ...} with the tail of its stderr
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    if timeout "$limit" "$@" > "$tmp/$name.json" 2> "$tmp/$name.err"; then
        echo "gpu.sh: $name done in $((SECONDS - t0)) s" >&2
    else
        echo "gpu.sh: $name FAILED (exit $?, $((SECONDS - t0)) s)" >&2
        tail -5 "$tmp/$name.err" >&2
        "$PY" -c "$ERROR_JSON" "$tmp/$name.err" > "$tmp/$name.json"
    fi
}

"$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "gpu.sh: no CUDA")' \
    || exit 1
part train 170 "$PY" bench/train.py --device cuda --batches 16,64,256 --steps 10 --graph --bf16
part reader 50 "$PY" bench/reader.py --skip-storage --takes 12 --minutes 3 --windows 4000
part checks 80 "$PY" bench/gpu_checks.py
"$PY" - "$tmp" <<'EOF'
import json
import sys
from pathlib import Path

tmp = Path(sys.argv[1])
out = {k: json.loads((tmp / f"{k}.json").read_text()) for k in ("train", "reader", "checks")}
t, r = out["train"], out["reader"].get("reader", {})
if "batches" in t:
    big = max(t["batches"], key=int)
    b = t["batches"][big]
    speeds = {"eager": b["windows_per_s"]}
    for k in ("bf16", "graph_replay", "graph_replay_bf16"):
        if k in b:
            speeds[k] = b[k]["windows_per_s"]
    out["summary"] = {
        "gpu": t.get("gpu"), "batch": int(big), "windows_per_s": speeds,
        "target_10000_windows_per_s": max(speeds.values()) >= 10000,
        "data_fraction_of_step": b.get("data_fraction_of_step"),
        "aten_ops_per_step": t.get("aten_ops_per_step"),
        "cuda_kernels_per_step": t.get("cuda_kernels_per_step"),
        "gpu_busy_fraction": t.get("gpu_busy_fraction"),
        "paper_projection_minutes": t.get("paper_projection", {}).get("minutes"),
        "reader_windows_per_s": r.get("reader_windows_per_s"), "item_bytes": r.get("item_bytes"),
    }
print(json.dumps(out, indent=2))
EOF
