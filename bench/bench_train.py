"""Benchmark: training throughput of the default model, in crops and 48-voxel cube
equivalents (crop voxels / 48^3) per second, and how much of it the input pipeline keeps.

    .venv/bin/python bench/bench_train.py [--batch 14] [--crop 48] [--epochs 3]   (CPU)
    python bench/bench_train.py --device cuda --datasets DIR --batch 14,64 --steps 100 [--json OUT]

1. Synthetic: crops and their targets already in the device's memory, then the training
   step of `pipeline.training.trainer` (the model's heatmap, `heatmap_loss`, backward, AdamW). On the
   CPU for fp32 and bf16 autocast, contiguous and channels-last-3d; on CUDA with what
   `train` uses there (bf16 autocast, channels-last-3d, fused AdamW).
2. The input pipeline alone: `draw_batch` (cut, augment, targets) without the model.
3. End to end: `pipeline.training.trainer.train` on the built datasets (the default demo datasets on
   the CPU, built first if missing), crop drawing, targets, augmentation and data movement
   included; the rate of each epoch after the first (cuDNN's choice of algorithms and the
   first draws stay out); loading the volumes into the device's memory is timed apart.

Prints the ratio end to end / synthetic per batch size: what the input pipeline leaves of
the device's speed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from pipeline.model.network import AneurysmNet, model_size
from pipeline.training.config import TrainConfig
from pipeline.model.precision import Precision, configure_training_process
from pipeline.training.crops import Batch
from pipeline.training.loss import heatmap_loss

DEFAULT = TrainConfig(datasets=())


def synthetic_rate(device: torch.device, batch: int, crop: int, steps: int, bf16: bool, channels_last: bool) -> float:
    """Crops per second of training steps on random crops and targets already on ``device``."""
    torch.manual_seed(0)
    cells = crop // 4
    crops = torch.rand(batch, 1, crop, crop, crop, device=device)
    label = (torch.rand(batch, cells, cells, cells, device=device) < 0.01).float()
    location = torch.where(label > 0, torch.randint(0, 13, label.shape, device=device), -1)
    weight = torch.ones_like(label)
    vessel = torch.zeros_like(label)
    batch_targets = dict(label=label, location=location, weight=weight, vessel=vessel,
                         artery=torch.full_like(location, -1), vessel_weight=torch.zeros(batch, device=device))
    model = AneurysmNet().to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
        crops = crops.contiguous(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3, fused=device.type == "cuda")
    precision = Precision(device, torch.bfloat16 if bf16 else None)

    def step():
        loss = heatmap_loss(model.dense, Batch(crops, **batch_targets), DEFAULT, precision)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(max(3, steps // 10)):
        step()
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _synchronize(device)
    return steps * batch / (time.perf_counter() - start)


def end_to_end(datasets: Path, device: torch.device, batch: int, crop: int, steps: int, epochs: int) -> dict:
    """``train`` for ``epochs`` epochs of ``steps`` steps: crops/s of each epoch, load seconds."""
    from pipeline.dataset.store import resolve_datasets
    from pipeline.runs import RunFolder
    from pipeline.training.trainer import train

    config = TrainConfig(datasets=resolve_datasets([datasets]), epochs=epochs, steps_per_epoch=steps,
                         batch_size=batch, crop=crop, series_validation_epochs=0, cube_validation_every=epochs)
    with tempfile.TemporaryDirectory() as run:
        started = time.perf_counter()
        train(config, run)
        total = time.perf_counter() - started
        records = [m for m in RunFolder(run).read_metrics() if m["kind"] == "epoch"]
    training = sum(m["seconds"] for m in records)
    return {"epoch_crops_per_second": [m["crops_per_second"] for m in records],
            "epoch_train_loss": [m["train_loss"] for m in records],
            "other_seconds": total - training}  # volumes into memory, location prior, validation, checkpoints


def input_rate(datasets: Path, device: torch.device, batch: int, crop: int, steps: int) -> float:
    """Crops per second of `pipeline.training.crops.draw_batch` alone (cut, augment, targets), the
    volumes already in the device's memory."""
    import numpy as np

    from pipeline.training.crops import Aneurysms, VolumeBank
    from pipeline.dataset.store import resolve_datasets
    from pipeline.training.crops import draw_batch
    from pipeline.training.data import load_cubes

    config = TrainConfig(datasets=resolve_datasets([datasets]), batch_size=batch, crop=crop)
    data = load_cubes(config.datasets, keep=set())
    bank = VolumeBank(device, budget_bytes=1 << 40)
    bank.hold(data.volumes)
    aneurysms = Aneurysms.of(bank.uids, data.aneurysms, data.aneurysm_locations)
    rng = np.random.default_rng(0)
    for _ in range(3):
        draw_batch(bank, aneurysms, config, rng)
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        draw_batch(bank, aneurysms, config, rng)
    _synchronize(device)
    return steps * batch / (time.perf_counter() - start)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--datasets", type=Path, help="built datasets (default: data/datasets, built from the demo)")
    parser.add_argument("--batch", default=str(DEFAULT.batch_size), help="crops per step, comma-separated sizes")
    parser.add_argument("--crop", type=int, default=DEFAULT.crop)
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per measurement (default: synthetic 8 on the CPU, 100 on CUDA; an epoch as in "
                             "training on the CPU, 100 on CUDA)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    device = torch.device(args.device)
    configure_training_process()  # as `python -m pipeline train` does
    steps = args.steps or (100 if device.type == "cuda" else 8)
    epoch_steps = args.steps or (100 if device.type == "cuda" else DEFAULT.steps_per_epoch)
    size = model_size(AneurysmNet())
    print(f"default model: {size['parameters'] / 1e6:.2f} M parameters, {size['macs_per_cube'] / 1e9:.2f} G MACs per cube")
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    datasets = args.datasets or _demo_datasets()
    variants = [(False, False), (True, False), (False, True), (True, True)] if device.type == "cpu" else [(True, True)]
    results = []
    for batch in map(int, args.batch.split(",")):
        row = {"batch": batch, "crop": args.crop, "device": device.type}
        for bf16, channels_last in variants:
            key = f"synthetic_{'bf16' if bf16 else 'fp32'}_{'channels_last' if channels_last else 'contiguous'}"
            row[key] = synthetic_rate(device, batch, args.crop, steps, bf16, channels_last)
        row["input_pipeline_alone"] = input_rate(datasets, device, batch, args.crop, steps)
        row.update(end_to_end(datasets, device, batch, args.crop, epoch_steps, args.epochs))
        row["end_to_end"] = statistics.median(row["epoch_crops_per_second"][1:] or row["epoch_crops_per_second"])
        row["ratio"] = row["end_to_end"] / row[key]  # against the variant train() uses (listed last)
        results.append(row)
        print(json.dumps(row), flush=True)
    equivalent = (args.crop / 48) ** 3
    print(f"\n| batch | synthetic crops/s ({key[10:]}) | input pipeline alone crops/s | end to end crops/s | "
          f"end to end / synthetic | cube equivalents/s end to end | load, prior, validation s |")
    print("|---|---|---|---|---|---|---|")
    for row in results:
        print(f"| {row['batch']} | {row[key]:.0f} | {row['input_pipeline_alone']:.0f} | {row['end_to_end']:.0f} | "
              f"{row['ratio']:.2f} | {row['end_to_end'] * equivalent:.0f} | {row['other_seconds']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


def _demo_datasets() -> Path:
    from pipeline.data import PROJECT_ROOT, ensure_demo_data
    from pipeline.dataset.build import build_datasets

    folder = PROJECT_ROOT / "data" / "datasets"
    if not (folder / "build_manifest.json").is_file():
        build_datasets(ensure_demo_data(), folder)
    return folder


if __name__ == "__main__":
    sys.exit(main())
