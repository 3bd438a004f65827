"""Train the tiny test model ``svt_t`` on scikit-learn's digits: the committed fixture
``tests/data/svt_t_digits.safetensors`` that INT8 accuracy is judged with.

Random weights say nothing about accuracy (every class score is noise), and no small
pretrained Twins can be fetched offline, so this trains one: about a minute on 2 CPU
threads. Images are read from PNG folders through the project's preprocessing
(tests/digits.py), exactly what ``twins-validate --images`` and calibration read.

    .venv/bin/python tests/train_digits.py --out tests/data/svt_t_digits.safetensors
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

from digits import MODEL, NUM_CLASSES, load_folder, write_digits
from twins_deploy.factory import create_model

SEED, EPOCHS, LR, BATCH, WEIGHT_DECAY, SMOOTHING, THREADS = 0, 8, 2e-3, 64, 0.05, 0.1, 2
SHIFT = 3  # max shift in pixels of the 32x32 input (under one pixel of the 8x8 digit)


def shift(x: Tensor, gen: torch.Generator, pad: int = SHIFT) -> Tensor:
    """Random translation by up to ``pad`` px: pad with the background value, then crop
    each image at a random offset (no torch.roll: it would wrap strokes around the edge,
    and the project keeps roll out of its code)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), value=float(x.amin()))  # the normalised black
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), generator=gen).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


@torch.no_grad()
def top1(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Top-1 accuracy in eval mode."""
    model.eval()
    pred = torch.cat([model(xb).argmax(1) for xb in x.split(256)])
    return (pred == y).float().mean().item()


def train(out: Path, epochs: int = EPOCHS, seed: int = SEED) -> dict[str, str]:
    """Train, evaluate on the held-out test folder, save weights and metadata to ``out``."""
    torch.set_num_threads(THREADS)
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        dirs = write_digits(tmp)
        x_train, y_train = map(torch.from_numpy, load_folder(dirs.train))
        x_test, y_test = map(torch.from_numpy, load_folder(dirs.test))

    model = create_model(MODEL, num_classes=NUM_CLASSES, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    steps = (len(x_train) + BATCH - 1) // BATCH
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=epochs * steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=SMOOTHING)

    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        order, total = torch.randperm(len(x_train), generator=gen), 0.0
        for idx in order.split(BATCH):
            loss = loss_fn(model(shift(x_train[idx], gen)), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch}/{epochs}: loss {total / len(x_train):.4f}, test top-1 "
              f"{top1(model, x_test, y_test):.4f}, {time.perf_counter() - start:.1f} s", flush=True)
    seconds = time.perf_counter() - start

    acc = top1(model, x_test, y_test)
    meta = {
        "model": MODEL, "num_classes": str(NUM_CLASSES), "seed": str(seed), "epochs": str(epochs),
        "lr": str(LR), "batch": str(BATCH), "weight_decay": str(WEIGHT_DECAY),
        "label_smoothing": str(SMOOTHING), "shift_px": str(SHIFT), "threads": str(THREADS),
        "train_seconds": f"{seconds:.1f}", "train_size": str(len(x_train)), "test_size": str(len(x_test)),
        "fp32_test_top1": f"{acc:.6f}", "fp32_test_correct": str(round(acc * len(x_test))),
        "torch_version": torch.__version__,
        "data": "sklearn.datasets.load_digits, stratified 1347/450 split, random_state 0 (tests/digits.py)",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out), metadata=meta)
    print(f"wrote {out}: fp32 test top-1 {acc:.4f} ({meta['fp32_test_correct']}/{len(x_test)}), "
          f"{seconds:.1f} s training")
    return meta


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "data" / "svt_t_digits.safetensors")
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p.add_argument("--seed", type=int, default=SEED)
    args = p.parse_args(argv)
    train(args.out, args.epochs, args.seed)


if __name__ == "__main__":
    main()
