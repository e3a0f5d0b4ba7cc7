"""Time and memory of one meta-gradient against the number of inner steps, for MAML, first-order
MAML and Reptile, in the sinusoid setting (MLP, meta-batch 25) and the Omniglot setting (Conv4,
5-way 1-shot, meta-batch 32 on CUDA and 4 on the CPU). Memory: the CUDA allocator's peak, or on
the CPU the heap held once the forward pass has built its graph (see mlcourse.profile).

    python benchmarks/maml_memory.py [--steps 1 2 5 10] [--device cpu]
"""

from __future__ import annotations

import argparse

import torch

from mlcourse.experiments.cost import meta_iteration_cost


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 5, 10])
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    devices = [torch.device(args.device)] if args.device else (
        [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else []))
    print(f"torch {torch.__version__}")
    print(f"{'device':>6} {'setting':>9} {'method':>8} | " + " | ".join(f"{k:>3} steps: ms, MiB" for k in args.steps)
          + f" | memory {args.steps[-1]} vs {args.steps[0]} steps")
    for device in devices:
        for setting in ("sinusoid", "omniglot"):
            tasks = 25 if setting == "sinusoid" else (32 if device.type == "cuda" else 4)
            for method in ("maml", "fomaml", "reptile"):
                row = [meta_iteration_cost(method, setting, k, device, tasks=tasks) for k in args.steps]
                cells = " | ".join(f"{1e3 * s:8.2f}, {(m or 0) / 2**20:7.2f}" for s, m in row)
                ratio = row[-1][1] / row[0][1] if row[0][1] else float("nan")
                print(f"{device.type:>6} {setting:>9} {method:>8} | {cells} | {ratio:5.2f}x")


if __name__ == "__main__":
    main()
