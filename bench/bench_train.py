"""Benchmark: training throughput of the default model, in crops and 48-voxel cube
equivalents (crop voxels / 48^3) per second.

    .venv/bin/python bench/bench_train.py [--steps 8] [--batch 14] [--crop 48]  (the training defaults)

1. Synthetic crops already in memory: fp32 or bf16 autocast, contiguous or
   channels-last-3d memory layout (forward of the heatmap, backward and AdamW step).
2. End to end: a short run of `pipeline.train.train` on the default demo datasets
   (built first if missing), crop drawing, targets, augmentation and data handling included.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.model import AneurysmNet, model_size  # noqa: E402
from pipeline.train import TrainConfig  # noqa: E402

DEFAULT = TrainConfig(datasets=())


def synthetic(steps: int, batch: int, crop: int) -> None:
    torch.manual_seed(0)
    cubes = torch.rand(batch, 1, crop, crop, crop)
    labels = (torch.rand(batch, crop // 4, crop // 4, crop // 4) < 0.01).float()
    equivalent = (crop / 48) ** 3
    print(f"| layout | precision | crops/s | cube equivalents/s (batch {batch} x {crop}^3, {steps} steps, "
          f"{torch.get_num_threads()} threads) |")
    print("|---|---|---|---|")
    for channels_last in (False, True):
        for bf16 in (False, True):
            model = AneurysmNet()
            x = cubes
            if channels_last:
                model = model.to(memory_format=torch.channels_last_3d)
                x = cubes.contiguous(memory_format=torch.channels_last_3d)
            optimizer = torch.optim.AdamW(model.parameters(), 1e-3)

            def step():
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    out = model.dense(x)
                loss = F.binary_cross_entropy_with_logits(out["presence"].float(), labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

            step()
            start = time.perf_counter()
            for _ in range(steps):
                step()
            rate = steps * batch / (time.perf_counter() - start)
            print(f"| {'channels-last-3d' if channels_last else 'contiguous'} | {'bf16' if bf16 else 'fp32'} "
                  f"| {rate:.1f} | {rate * equivalent:.0f} |")


def end_to_end(epochs: int) -> None:
    from pipeline.data import PROJECT_ROOT, ensure_demo_data
    from pipeline.dataset import build_datasets
    from pipeline.train import read_metrics, resolve_datasets, train

    folder = PROJECT_ROOT / "data" / "datasets"
    if not (folder / "build_manifest.json").is_file():
        build_datasets(ensure_demo_data(), folder)
    with tempfile.TemporaryDirectory() as run:
        train(TrainConfig(datasets=resolve_datasets([folder]), epochs=epochs, series_validation_epochs=0), run)
        epochs_done = [m for m in read_metrics(run) if m["kind"] == "epoch"]
    print("\nend to end (train(), crops, targets and augmentation included, default precision), per epoch: "
          + ", ".join(f"{m['crops_per_second']:.1f} crops/s ({m['cubes_per_second']:.0f} cube equivalents/s)"
                      for m in epochs_done))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=DEFAULT.batch_size)
    parser.add_argument("--crop", type=int, default=DEFAULT.crop)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    size = model_size(AneurysmNet())
    print(f"default model: {size['parameters'] / 1e6:.2f} M parameters, {size['macs_per_cube'] / 1e9:.2f} G MACs per cube\n")
    synthetic(args.steps, args.batch, args.crop)
    end_to_end(args.epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
