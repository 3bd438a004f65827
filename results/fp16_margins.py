"""How far FP16 logits move from FP32, against the FP32 top-1 margins: the numbers behind the
FP16 top-1 gate (engines/validation.py, Thresholds.for_precision; docs/validation.md).

Run from the repository root after exporting the mixed FP16 graphs (CPU only, about a minute):

    twins-export --model svt_s --precision fp16 --out-dir /tmp/fp16x --no-validate -q --force
    twins-export --model pcpvt_s --precision fp16 --out-dir /tmp/fp16x --no-validate -q --force
    python results/fp16_margins.py /tmp/fp16x > results/fp16_margins.txt

Inputs: the 41 validation samples (batches 1, 8, 32 at 224, seeded) plus 64 Gaussian ones;
weights seeded random (create_model(seed=0)); reference PyTorch FP32 with explicit attention;
candidate the FP16 ONNX in ONNX Runtime's CPU provider. Margins and errors are in standard
deviations of the sample's FP32 logits.
"""
from __future__ import annotations

import sys

import numpy as np
import onnxruntime as ort
import torch

from twins_deploy.engines.validation import VALIDATION_SEED, random_batch
from twins_deploy.factory import create_model
from twins_deploy.registry import get_config


def main(folder: str) -> None:
    from twins_deploy.bench.machine import machine_info

    cpu = machine_info()
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}; {cpu.get('cpu')}; flags {cpu.get('cpu_flags')}")
    for name in ("svt_s", "pcpvt_s"):
        model = create_model(name, seed=0).eval()
        model.set_attention_impl("explicit")
        pre = get_config(name).preprocess
        sess = ort.InferenceSession(f"{folder}/{name}_fp16.onnx", providers=["CPUExecutionProvider"])
        xs = [random_batch(b, (224, 224), pre, VALIDATION_SEED + 97 * i) for i, b in enumerate([1, 8, 32])]
        xs.append(np.random.default_rng(5).standard_normal((64, 3, 224, 224)).astype(np.float32))
        x = np.concatenate(xs)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy().astype(np.float64)
        got = np.concatenate([sess.run(None, {"input": x[i:i + 16]})[0] for i in range(0, len(x), 16)])
        top2 = np.sort(ref, axis=1)[:, -2:]
        std = ref.std(axis=1)
        margin = (top2[:, 1] - top2[:, 0]) / std
        err = np.abs(got.astype(np.float64) - ref).max(axis=1) / std
        flips = int((ref.argmax(1) != got.argmax(1)).sum())
        print(f"{name}: samples {len(x)}, top-1 flips {flips}")
        print(f"  largest logit error / std: median {np.median(err):.4f}, max {err.max():.4f}")
        print(f"  FP32 margin / std: min {margin.min():.4f}, 5th pct {np.quantile(margin, .05):.4f}, "
              f"median {np.median(margin):.4f}; below 0.1: {(margin < 0.1).sum()} of {len(x)}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/fp16x")
