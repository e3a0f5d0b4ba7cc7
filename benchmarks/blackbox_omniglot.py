"""Episodes per second of the sequence learners of chapter 4: MANN, LSTM and in-context transformer.

    python benchmarks/blackbox_omniglot.py [--device cuda] [--scale book|paper]

Times a meta-training step (sampling the online episodes on the device, forward, backward, Adam)
and an evaluation forward pass, meta-batch 16, sequences of 50 (5 classes × 10 instances), with
the learners of ``SequenceSettings.at(scale)``. On the CPU it runs with 1 and with 2 threads:
the recurrences are long chains of small operations, and on a shared or busy machine thread
synchronisation can cost more than a second thread gains. The episodes come from random images of
Omniglot's shape, so no data set is needed.
"""

from __future__ import annotations

import argparse
import time

import torch

from mlcourse.experiments.blackbox import KINDS, SequenceSettings, make_learner
from mlcourse.meta.sequences import OmniglotSequences


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(fn, device, seconds: float = 3.0, warmup: int = 2) -> float:
    """Calls per second of fn, run for about ``seconds`` after a warm-up."""
    for _ in range(warmup):
        fn()
    sync(device)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        calls += 1
    sync(device)
    return calls / (time.perf_counter() - start)


def run(device: torch.device, settings: SequenceSettings) -> None:
    images = torch.randint(0, 256, (200, 20, 28, 28), dtype=torch.uint8)
    sequences = OmniglotSequences(images, settings.classes, settings.instances, settings.image_size, device=device)
    b = settings.meta_batch
    for kind in KINDS:
        learner = make_learner(kind, settings)
        theta = learner.init_params(device)
        optimizer = torch.optim.Adam(theta.values(), lr=1e-4)
        batch = sequences.sample(b)
        train_rate = measure(lambda: learner.step(theta, optimizer, sequences.sample(b)), device) * b
        infer_rate = measure(lambda: learner.evaluate(theta, batch), device) * b
        print(f"  {kind:12s} training {train_rate:8.1f} episodes/s   forward only {infer_rate:8.1f} episodes/s"
              f"   (100,000 training episodes: {100_000 / train_rate / 60:.1f} min)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: the CPU, and CUDA when available)")
    parser.add_argument("--scale", default="book", choices=("book", "paper"))
    args = parser.parse_args()
    torch.manual_seed(0)
    settings = SequenceSettings.at(args.scale)
    print(f"{args.scale} settings: encoder {settings.encoder}, controller {settings.controller}, memory "
          f"{settings.slots}x{settings.width}, {settings.heads} heads, key strength {settings.key_strength}; "
          f"transformer dim {settings.transformer_dim}, {settings.transformer_layers} layer(s); meta-batch "
          f"{settings.meta_batch}; torch {torch.__version__}")
    devices = [torch.device(args.device)] if args.device else [torch.device("cpu")] + (
        [torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        if device.type == "cpu":
            for threads in (1, 2):
                torch.set_num_threads(threads)
                print(f"\nCPU, {threads} thread{'s' * (threads > 1)}")
                run(device, settings)
        else:
            print(f"\n{torch.cuda.get_device_name(device)}")
            run(device, settings)
    if not args.device and not torch.cuda.is_available():
        print("\nCUDA: not available here")


if __name__ == "__main__":
    main()
