"""Episodes per second of the MANN and the LSTM, meta-batch 16, sequences of 50 (5 classes × 10).

    python benchmarks/blackbox_omniglot.py

Times a meta-training step (sampling the episodes on the device, forward, backward, Adam) and an
evaluation forward pass, on the CPU and, when there is one, on the CUDA GPU, in the same run.
The episodes come from random images of Omniglot's shape, so no data set is needed.
"""

from __future__ import annotations

import time

import torch

from mlcourse.meta.mann import PAPER
from mlcourse.meta.sequences import OmniglotSequences, label_inputs, sequence_step
from mlcourse.experiments.blackbox import make_learner
from mlcourse.nets import forward, init_params

META_BATCH = PAPER["meta_batch"]


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


def run(device: torch.device) -> None:
    images = torch.randint(0, 256, (200, 20, 28, 28), dtype=torch.uint8)
    sequences = OmniglotSequences(images, device=device)
    print(f"\n{device.type.upper()}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                                       f" ({torch.get_num_threads()} threads)"))
    for kind in ("mann", "lstm"):
        net = make_learner(kind, sequences.input_size)
        theta = init_params(net, device)
        optimizer = torch.optim.Adam(theta.values(), lr=1e-3)

        def train():
            x, y = sequences.sample(META_BATCH)
            sequence_step(net, theta, optimizer, x, y)

        x_eval, y_eval = sequences.sample(META_BATCH)

        @torch.no_grad()
        def infer():
            forward(net, theta, label_inputs(x_eval, y_eval, net.classes))

        train_rate, infer_rate = measure(train, device) * META_BATCH, measure(infer, device) * META_BATCH
        print(f"  {kind.upper():5s} training {train_rate:8.1f} episodes/s   forward only {infer_rate:8.1f} episodes/s"
              f"   (100,000 training episodes: {100_000 / train_rate / 60:.1f} min)")


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: the CPU, and CUDA when available)")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"MANN (controller {PAPER['controller']}, memory {PAPER['slots']}x{PAPER['width']}, {PAPER['heads']} read "
          f"heads) and LSTM; meta-batch {META_BATCH}, sequences of {PAPER['classes'] * PAPER['instances']}; "
          f"torch {torch.__version__}")
    if args.device:
        run(torch.device(args.device))
        return
    run(torch.device("cpu"))
    if torch.cuda.is_available():
        run(torch.device("cuda"))
    else:
        print("\nCUDA: not available here")


if __name__ == "__main__":
    main()
