"""The shard schema (version 1): the one definition the writer (:mod:`preprocessing.shards`) and the
reader (:mod:`musicface.data`) share. docs/data.md describes it for users.

A shard set is a folder: ``{train,test}-NNNNN.h5`` and ``manifest.json``.

* HDF5 root attributes (:data:`ROOT_ATTRS`): ``schema_version``, ``fps``, ``mfcc_rate``,
  ``exp_dim``, ``subjects`` (sorted subject names of the passing takes = the model's one-hot
  order), ``config_sha`` (hash of the config sections in :data:`DATASET_CONFIG_KEYS`).
* ``/takes/<take>/``: the arrays of :data:`ARRAYS` (dtype, shape with ``M`` MFCC rows, ``N`` frames,
  ``E`` = exp_dim, ``K`` landmarks) and the attributes of :data:`TAKE_ATTRS`. In frames with
  ``valid == 0`` every per-frame array holds 0, never NaN.
* ``manifest.json``: the root attributes, ``files`` (name, split, takes, sha256), ``n_takes``,
  ``hours`` and ``takes``: per take its ``file`` and its attributes (:func:`from_attrs` values),
  so a reader learns everything about the set without opening an HDF5 file.

:func:`to_attrs` / :func:`from_attrs` convert a take's attributes between Python values and what
is stored (dicts as sorted JSON strings). The write order of attributes and arrays is fixed here,
so the same inputs give the same file bytes.
"""
from __future__ import annotations

import json

import numpy as np

from preprocessing.timebase import FPS, MFCC_DIM, MFCC_KEYS, MFCC_RATE

SCHEMA_VERSION = 1

ROOT_ATTRS = ("schema_version", "fps", "mfcc_rate", "exp_dim", "subjects", "config_sha")

# per-take arrays in write order: name -> (dtype, shape); M = MFCC rows, N = frames, E = exp_dim
ARRAYS = {
    **{k: ("f4", ("M", MFCC_DIM)) for k in MFCC_KEYS},
    "exp": ("f4", ("N", "E")),
    "pose": ("f4", ("N", 6)),          # pitch, yaw, roll (rad), tx, ty, tz (docs/pose.md)
    "au45": ("f4", ("N",)),            # normalised eye closure in [0, 1]
    "eye_long": ("f4", ("N",)),        # au45 on long closures, else 0
    "eye_blink": ("u1", ("N",)),       # 1 on blinks
    "valid": ("u1", ("N",)),
    "landmarks": ("f2", ("N", "K", 2)),  # image-normalised x, y of the backend's landmark set
}
FRAME_KEYS = ("exp", "pose", "au45", "eye_long", "eye_blink", "valid")  # per-frame training arrays

# per-take attributes in write order -> their Python type (dicts are stored as sorted JSON)
TAKE_ATTRS = {"subject": str, "subject_index": int, "song": str, "split": str, "offset_s": float,
              "sync_method": str, "sync_confidence": float, "n_frames": int, "backends": dict,
              "tool_versions": dict}

# config sections that change the data (their hash is config_sha; the shards rule depends on
# exactly these, so editing model / train / loss / evaluate never rebuilds the shards)
DATASET_CONFIG_KEYS = ("samples", "demo", "sync", "separate", "track", "coeffs", "au45", "eyes",
                       "qc", "split", "shards")


class ShardError(ValueError):
    """A shard set that the reader cannot use (wrong schema version, missing file, ...)."""


def _str(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def to_attrs(meta: dict) -> dict:
    """A take's attributes (Python values, keys of :data:`TAKE_ATTRS`) -> stored values, ordered."""
    return {k: json.dumps(meta[k], sort_keys=True) if t is dict else t(meta[k])
            for k, t in TAKE_ATTRS.items()}


def from_attrs(attrs) -> dict:
    """Stored take attributes (HDF5 attrs or a manifest entry) -> Python values (TAKE_ATTRS)."""
    out = {}
    for k, t in TAKE_ATTRS.items():
        v = attrs[k]
        if t is dict:
            out[k] = v if isinstance(v, dict) else json.loads(_str(v))
        else:
            out[k] = _str(v) if t is str else t(v)
    return out


def root_attrs(exp_dim: int, subjects: list[str], config_sha: str) -> dict:
    """The HDF5 root attributes of a shard (:data:`ROOT_ATTRS`, in order)."""
    import h5py

    return {"schema_version": SCHEMA_VERSION, "fps": FPS, "mfcc_rate": MFCC_RATE,
            "exp_dim": int(exp_dim), "subjects": np.array(subjects, dtype=h5py.string_dtype()),
            "config_sha": config_sha}


def root_meta(attrs) -> dict:
    """HDF5 root attributes or a manifest -> ``subjects, exp_dim, fps, mfcc_rate, config_sha``."""
    return {"subjects": [_str(s) for s in attrs["subjects"]], "exp_dim": int(attrs["exp_dim"]),
            "fps": int(attrs["fps"]), "mfcc_rate": int(attrs["mfcc_rate"]),
            "config_sha": _str(attrs.get("config_sha", ""))}


def check_version(path, attrs) -> None:
    """Raise :class:`ShardError` unless ``attrs`` (HDF5 root or manifest) are of this version."""
    if "schema_version" not in attrs:
        raise ShardError(f"{path}: not a MusicFace shard (no schema_version attribute)")
    v = int(attrs["schema_version"])
    if v != SCHEMA_VERSION:
        raise ShardError(f"{path}: shard schema_version {v} is not supported by this reader "
                         f"(schema_version {SCHEMA_VERSION}); rebuild the shards (snakemake "
                         f"dataset) or use the musicface version that wrote them")
