"""The INT8 accuracy table of docs/int8.md: FP32 against every CPU INT8 route on a trained model.

The model is the tiny SVT trained on scikit-learn's digits (tests/train_digits.py, committed
as tests/data/svt_t_digits.safetensors); calibration takes 256 images of its training split,
the table is measured on the 450 held-out images. Run from the repository root:

    .venv/bin/python results/int8_accuracy.py     # writes results/int8_accuracy.{json,md}
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from digits import load_folder, write_digits  # noqa: E402

from twins_deploy.artifacts import now_iso, tool_versions  # noqa: E402
from twins_deploy.bench.machine import machine_info  # noqa: E402
from twins_deploy.engines.opening import open_runner  # noqa: E402
from twins_deploy.exporters.spec import ExportSpec  # noqa: E402
from twins_deploy.factory import create_model  # noqa: E402
from twins_deploy.pipeline import ArtifactRequest, CalibRequest, WeightsRequest, make_artifacts  # noqa: E402

CHECKPOINT = ROOT / "tests" / "data" / "svt_t_digits.safetensors"
ROWS = [("ort-cpu", "fp32"), ("ort-int8", "u8s8"), ("ort-int8", "s8s8"), ("openvino-int8", "s8s8"),
        ("openvino-int8", "u8s8")]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = write_digits(Path(tmp) / "digits")
        req = ArtifactRequest(ExportSpec("svt_t", img_size=(32, 32)), precision="int8", out_dir=Path(tmp) / "out",
                              weights=WeightsRequest(str(CHECKPOINT), num_classes=10), images=str(d.test),
                              calib=CalibRequest(str(d.calib)))
        arts = make_artifacts(req)
        files = {"fp32": arts.source.path, **{a.manifest.quant.form: a.path for a in (arts.onnx, *arts.companions)}}
        x, y = load_folder(d.test)
        model = create_model("svt_t", weights=str(CHECKPOINT), num_classes=10).eval()
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        rows = [{"route": "torch (PyTorch FP32)", "graph": "-", **_scores(ref, ref, y)}]
        for route, form in ROWS:
            with open_runner(files[form], route=route) as runner:
                got = np.concatenate([runner.infer(x[i:i + 32])[0] for i in range(0, len(x), 32)])
            rows.append({"route": route, "graph": form, **_scores(ref, got, y)})
    result = {"created": now_iso(), "machine": machine_info(), "tools": tool_versions(("openvino",)),
              "model": "svt_t, 10 classes, tests/data/svt_t_digits.safetensors", "calibration": "256 train images, minmax",
              "evaluation": "450 held-out images", "rows": rows}
    (ROOT / "results" / "int8_accuracy.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| route | graph | top-1 | top-1 vs FP32 | agreement with FP32 | mean cosine | min cosine | SQNR dB |",
             "|---|---|---|---|---|---|---|---|"]
    base = rows[0]["top1"]
    for r in rows:
        lines.append(f"| {r['route']} | {r['graph']} | {100 * r['top1']:.2f}% | {100 * (r['top1'] - base):+.2f} pt | "
                     f"{100 * r['agreement']:.2f}% | {r['mean_cosine']:.5f} | {r['min_cosine']:.5f} | "
                     f"{'-' if r['sqnr_db'] is None else format(r['sqnr_db'], '.1f')} |")
    m = result["machine"]
    head = (f"# INT8 accuracy on a trained Twins (svt_t on the digits, 450 held-out images)\n\n"
            f"Made by `results/int8_accuracy.py` on {m['cpu']} ({', '.join(m['cpu_flags'])}), {result['created']}.\n"
            f"Tools: {', '.join(f'{k} {v}' for k, v in result['tools'].items() if v)}.\n\n")
    (ROOT / "results" / "int8_accuracy.md").write_text(head + "\n".join(lines) + "\n")
    print("\n".join(lines))


def _scores(ref: np.ndarray, got: np.ndarray, y: np.ndarray) -> dict[str, float]:
    cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    noise = float(((ref - got) ** 2).sum())
    return {"top1": float((got.argmax(1) == y).mean()), "agreement": float((got.argmax(1) == ref.argmax(1)).mean()),
            "mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()),
            "sqnr_db": None if noise == 0 else round(float(10 * np.log10((ref ** 2).sum() / noise)), 2)}


if __name__ == "__main__":
    main()
