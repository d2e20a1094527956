#!/usr/bin/env python3
"""Makes the bundled sample of UTKFace faces that ships in the repository (assets/sample/utkface/).

Deterministic: the same input folder gives the same file, byte for byte.

    ~/.cache/satm/venv/bin/python tools/make_sample.py [--src ../shared/data/utkface] [--n 1500] [--size 32] \
        [--seed 17] [--out assets/sample/utkface/utkface_sample.safetensors]

Input: a UTKFace folder with labels.csv (file,age,gender,race) and images/ (as ../shared/data/utkface is).
Selection: only faces whose age lies inside one of the 8 Adience age groups (0-2, 4-6, 8-13, 15-20, 25-32, 38-43,
48-53, 60-), stratified over those groups in proportion to their counts in the input (largest remainder), chosen
with Python's random.Random(seed) from each group's files in sorted order, written in sorted file-name order.
Pixels: each image is converted to RGB and resized to size x size with PIL's BILINEAR filter (a triangle filter
whose support widens with the downscale factor, as satm's loader resizes), stored as u8 [N, 3, size, size].
Labels: u8 tensors `age` (years), `gender` (0 male, 1 female), `race` (0-4); the source file names go into the
safetensors metadata (`files`, a JSON list), with `source`, `license` and `size`.
"""
import argparse
import csv
import json
import os
import random
import sys

import numpy as np
from PIL import Image
from safetensors.numpy import load_file

GROUPS = [(0, 2), (4, 6), (8, 13), (15, 20), (25, 32), (38, 43), (48, 53), (60, 10**9)]
NAMES = ["0-2", "4-6", "8-13", "15-20", "25-32", "38-43", "48-53", "60-"]


def group(age):
    for g, (lo, hi) in enumerate(GROUPS):
        if lo <= age <= hi:
            return g
    return None


def write_safetensors(path, tensors, meta):
    """The safetensors layout written with sorted keys (the library orders its header by hash, so its files differ
    from run to run): u64 header length, JSON header padded with spaces to 8 bytes, then the raw little-endian data."""
    header = {"__metadata__": dict(sorted(meta.items()))}
    off = 0
    for k in sorted(tensors):
        v = tensors[k]
        assert v.dtype == np.uint8
        header[k] = {"dtype": "U8", "shape": list(v.shape), "data_offsets": [off, off + v.nbytes]}
        off += v.nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for k in sorted(tensors):
            f.write(np.ascontiguousarray(tensors[k]).tobytes())


def main():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", default=os.path.join(here, "..", "shared", "data", "utkface"))
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--out", default=os.path.join(here, "assets", "sample", "utkface", "utkface_sample.safetensors"))
    a = ap.parse_args()

    with open(os.path.join(a.src, "labels.csv"), newline="") as f:
        rows = [(r["file"], int(r["age"]), int(r["gender"]), int(r["race"])) for r in csv.DictReader(f)]
    rows.sort()
    by_group = [[] for _ in GROUPS]
    for r in rows:
        g = group(r[1])
        if g is not None:
            by_group[g].append(r)
    total = sum(len(b) for b in by_group)
    if a.n > total:
        sys.exit(f"make_sample: {a.n} faces asked, {total} in the 8 age groups")
    exact = [len(b) * a.n / total for b in by_group]
    quota = [int(x) for x in exact]
    order = sorted(range(len(GROUPS)), key=lambda g: (-(exact[g] - quota[g]), g))
    for g in order[: a.n - sum(quota)]:
        quota[g] += 1
    rng = random.Random(a.seed)
    chosen = []
    for g, b in enumerate(by_group):
        chosen.extend(rng.sample(b, quota[g]))
    chosen.sort()

    imgs = np.zeros((len(chosen), 3, a.size, a.size), dtype=np.uint8)
    for i, (name, _, _, _) in enumerate(chosen):
        with Image.open(os.path.join(a.src, "images", name)) as im:
            im = im.convert("RGB").resize((a.size, a.size), Image.BILINEAR)
            imgs[i] = np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
    tensors = {
        "images": imgs,
        "age": np.array([r[1] for r in chosen], dtype=np.uint8),
        "gender": np.array([r[2] for r in chosen], dtype=np.uint8),
        "race": np.array([r[3] for r in chosen], dtype=np.uint8),
    }
    meta = {
        "format": "satm-utkface-sample-v1",
        "files": json.dumps([r[0] for r in chosen]),
        "size": str(a.size),
        "source": "UTKFace crop_part1 (Zhang, Song and Qi, CVPR 2017), via ../shared/data/utkface; made by tools/make_sample.py",
        "license": "UTKFace: non-commercial research purposes only; image copyright remains with the original owners",
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    tmp = a.out + ".tmp"
    write_safetensors(tmp, tensors, meta)
    back = load_file(tmp)  # the official reader must read it back exactly
    assert all(np.array_equal(back[k], v) for k, v in tensors.items())
    os.replace(tmp, a.out)
    print(f"{a.out}: {len(chosen)} faces at {a.size}x{a.size}, {os.path.getsize(a.out)} bytes")
    print("per group: " + ", ".join(f"{NAMES[g]} {quota[g]}" for g in range(len(GROUPS))))


if __name__ == "__main__":
    main()
