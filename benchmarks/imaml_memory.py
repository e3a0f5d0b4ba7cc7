"""Peak memory and seconds per meta-gradient against the number of inner steps, for MAML (memory
grows with the steps it differentiates through) and iMAML (implicit gradient: flat), on the
sinusoid MLP (meta-batch 25) and on Conv4 for 5-way 1-shot Omniglot (meta-batch 32 on CUDA, 4 on
the CPU). Memory is the CUDA allocator's peak, or on the CPU the sampled peak of heap memory in
use (see mlcourse.profile). Target: iMAML's peak at 50 steps within 1.2x of its peak at 1 step.

    python benchmarks/imaml_memory.py [--steps 1 2 5 10 20 50] [--device cpu]
"""

from __future__ import annotations

import argparse

import torch

from mlcourse.experiments.cost import meta_iteration_cost


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 5, 10, 20, 50])
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    devices = [torch.device(args.device)] if args.device else (
        [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else []))
    print(f"torch {torch.__version__}; memory in MiB, time in ms per meta-gradient")
    for device in devices:
        for setting in ("sinusoid", "omniglot"):
            tasks = 25 if setting == "sinusoid" else (32 if device.type == "cuda" else 4)
            rows = {m: [meta_iteration_cost(m, setting, k, device, tasks=tasks) for k in args.steps]
                    for m in ("maml", "imaml")}
            print(f"\n{device.type} / {setting} (meta-batch {tasks})")
            print(f"{'steps':>6} | {'MAML MiB':>9} {'ms':>9} | {'iMAML MiB':>9} {'ms':>9} | MAML/iMAML memory")
            for i, k in enumerate(args.steps):
                (ms, mm), (ims, im) = rows["maml"][i], rows["imaml"][i]
                ratio = mm / im if im else float("inf")
                print(f"{k:>6} | {mm / 2**20:9.2f} {1e3 * ms:9.2f} | {im / 2**20:9.2f} {1e3 * ims:9.2f} | {ratio:8.1f}x")
            first, last = rows["imaml"][0][1], rows["imaml"][-1][1]
            growth = last / first if first else float("nan")
            print(f"iMAML peak at {args.steps[-1]} steps / at {args.steps[0]} step: {growth:.2f}x "
                  f"(target <= 1.2x: {'met' if growth <= 1.2 else 'NOT met'})")


if __name__ == "__main__":
    main()
