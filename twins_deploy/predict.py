"""Run an exported classifier on images: the manifest's preprocessing, top-k classes.

The artifact's manifest says how images become its input (timm's eval transform with the
model's mean/std, interpolation and crop), so a deployed model is used exactly as the
PyTorch model was; ImageNet-1k class names are shipped for 1000-class heads.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from twins_deploy.artifacts import path_kind
from twins_deploy.errors import InputShapeError, quoted
from twins_deploy.manifest import Manifest, read_manifest
from twins_deploy.engines.opening import open_runner, warn_if_changed
from twins_deploy.preprocess import IMAGE_SUFFIXES, image_files, preprocess_image


@dataclass(frozen=True)
class Prediction:
    image: str
    top: list[tuple[int, float, str]]  # (class index, probability, label)


@lru_cache(maxsize=1)
def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names (lemmas), in classifier order."""
    text = resources.files("twins_deploy").joinpath("data/imagenet1k_labels.tsv").read_text()
    rows = [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]
    return [r[2] for r in rows]


def image_paths(items: list[str | os.PathLike[str]]) -> list[Path]:
    """Files as given, folders expanded to their images (sorted, :func:`image_files`). Each
    path's kind is checked without opening it (a named pipe would block); the images are
    decoded by :func:`predict`, all before the artifact is opened."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        kind = path_kind(p)
        if kind == "a folder":
            out += image_files(p, what="folder")
        elif kind == "a file":
            out.append(p)
        else:
            raise InputShapeError(f"{quoted(str(p))} is neither an image nor a folder of images "
                                  f"({', '.join(IMAGE_SUFFIXES)}): "
                                  + ("there is no such file" if kind == "missing" else f"it is {kind}"))
    if not out:
        raise InputShapeError("no images given")
    return out


def predict(artifact: str | os.PathLike[str], images: list[str | os.PathLike[str]], top_k: int = 5,
            device: str = "cpu", route: str | None = None,
            on_manifest: Callable[[Manifest], None] | None = None) -> list[Prediction]:
    """Top-``top_k`` classes of every image, from an ONNX model or TensorRT engine, run on
    ``route`` (a row of the route table), or the table's first route for the artifact on
    ``device`` ("cpu" or "cuda"). ``on_manifest`` sees the manifest once the request and the images
    have been checked, before inference (the CLI warns there about random weights: about the
    manifest used, before the predictions, and not on a request that is refused)."""
    manifest = read_manifest(artifact)
    if manifest.model.features:
        raise InputShapeError(f"{Path(artifact).name} is a backbone (it outputs feature maps): "
                              "predict needs a classifier artifact")
    if not 1 <= top_k <= manifest.model.num_classes:
        raise InputShapeError(f"--top-k must be 1..{manifest.model.num_classes}, got {top_k}")
    paths = image_paths(images)
    # every image decoded (and a bad one refused, one line) before the artifact is opened
    batches = [preprocess_image(p, manifest.spec.img_size, manifest.preprocess) for p in paths]
    labels = imagenet_labels() if manifest.model.num_classes == 1000 else None
    batch = manifest.spec.batch
    logits: list[np.ndarray] = []
    if on_manifest is not None:
        on_manifest(manifest)
    warn_if_changed(Path(artifact), manifest, "predicting with what is on disk")
    with open_runner(artifact, manifest, route=route, device=device) as runner:
        for k in range(0, len(batches), batch.max):
            x = np.concatenate(batches[k:k + batch.max])
            n = len(x)
            if not batch.contains(n):  # a fixed-batch artifact: fill up with copies, drop them after
                x = np.concatenate([x, np.repeat(x[:1], batch.min - n, axis=0)])
            logits.append(runner.infer(x)[0][:n])
    out = []
    for path, row in zip(paths, np.concatenate(logits)):
        z = row.astype(np.float64) - row.max()
        prob = np.exp(z) / np.exp(z).sum()
        idx = np.argsort(-prob)[:top_k]
        out.append(Prediction(str(path), [(int(i), float(prob[i]), labels[i] if labels else f"class {i}")
                                          for i in idx]))
    return out
