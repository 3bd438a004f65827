"""The calibration images of the recorded INT8 benchmark (results/int8_cpu.*): photo crops.

The benchmark's Twins-SVT-S has seeded random weights, so no data set belongs to it; its INT8
graphs only need natural-image activation ranges. scikit-learn ships two photographs
(``china.jpg``, ``flower.jpg``, 427x640); this script cuts reproducible square crops of random
size and place from them, resized to 160-400 px (the export's preprocessing resizes them to
224 as it does every image). Run from the repository root:

    .venv/bin/python results/calib_photos.py /tmp/int8-calib        # 40 JPEGs, seed 0
    .venv/bin/twins-bench --preset int8-compare --calib /tmp/int8-calib --out results

40 is above the calibration minimum (32) and below the recommended 128: enough for ranges of a
random-weight model, not a recipe for a trained one (see docs/int8.md).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_images


def crops(count: int, seed: int) -> list[Image.Image]:
    """``count`` square crops of scikit-learn's sample photos, each resized to 160-400 px."""
    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(a) for a in load_sample_images().images]
    out = []
    for i in range(count):
        photo = photos[i % len(photos)]
        w, h = photo.size
        side = int(rng.integers(96, min(w, h) + 1))
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        size = int(rng.integers(160, 401))
        out.append(photo.crop((x, y, x + side, y + side)).resize((size, size), Image.BICUBIC))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="folder to write c000.jpg ... into (created)")
    ap.add_argument("--count", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(crops(args.count, args.seed)):
        im.save(args.out / f"c{i:03d}.jpg", quality=90)
    print(f"{args.count} crops in {args.out}")


if __name__ == "__main__":
    main()
