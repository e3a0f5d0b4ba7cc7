"""Meta-iterations per second of MAML on 5-way 1-shot Omniglot with Conv4 (meta-batch 32, one inner
step, 15 queries per class by default), for each way of running a meta-batch: vmap over tasks,
a loop over tasks, and "auto", on the CPU and on CUDA when there is one, in the same run. "auto"
chooses per phase (adaptation on D^tr, query pass on D^ts) by device and examples per task; on
the CPU that is a vmapped adaptation with a per-task query pass. This script is the measurement
behind that choice (``benchmarks/maml_vs_textbook.py`` compares it with a textbook loop).

    python benchmarks/maml_omniglot.py [--tasks 32] [--shots 1] [--queries 15] [--iterations N] [--device cuda]
"""

from __future__ import annotations

import argparse

import torch

from mlcourse import runtime
from mlcourse.graphs import capture
from mlcourse.meta.functional import choose_execution
from mlcourse.meta.maml import MAML
from mlcourse.nets import Conv4
from mlcourse.profile import seconds
from mlcourse.tasks import EpisodeSampler, load_omniglot


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: the CPU, and CUDA when available)")
    args = parser.parse_args()
    devices = [torch.device(args.device)] if args.device else (
        [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else []))
    omniglot = load_omniglot(device="cpu")
    train = omniglot.images[omniglot.split()["train"]]
    print(f"torch {torch.__version__}; 5-way {args.shots}-shot, {args.queries} queries/class, meta-batch "
          f"{args.tasks}, Conv4, second-order MAML with 1 inner step (α = 0.4)")
    print(f"{'device':>6} | {'execution':>9} | {'s/iter':>8} | {'iter/s':>7} | what auto runs")
    for device in devices:
        sampler = EpisodeSampler(train, 5, args.shots, args.queries, rotations=True, device=device)
        repeats = args.iterations or (3 if device.type == "cpu" else 20)
        for execution in ("vmap", "loop", "auto"):
            maml = MAML(Conv4(5, downsample="stride"), "cross_entropy", inner_lr=0.4, inner_steps=1, execution=execution)
            theta = maml.init_params(device)
            optimizer = torch.optim.Adam(theta.values(), lr=1e-3)
            batch = sampler.sample(args.tasks)
            s = seconds(lambda: maml.step(theta, optimizer, batch), device, repeats=repeats)
            adapting = choose_execution("auto", maml.net, device, args.shots * 5, batched=True)
            querying = choose_execution("auto", maml.net, device, args.queries * 5, batched=True)
            picks = adapting if adapting == querying else f"{adapting} adaptation, {querying} query"
            print(f"{device.type:>6} | {execution:>9} | {s:8.4f} | {1 / s:7.2f} | {picks if execution == 'auto' else ''}")
        if device.type == "cuda":
            maml = MAML(Conv4(5, downsample="stride"), "cross_entropy", inner_lr=0.4, inner_steps=1)
            theta = maml.init_params(device)
            optimizer = torch.optim.Adam(theta.values(), lr=1e-3, capturable=True)
            replay = capture(lambda: maml.step(theta, optimizer, sampler.sample(args.tasks)))
            s = seconds(replay, device, repeats=repeats * 10)
            print(f"{device.type:>6} | {'graph':>9} | {s:8.4f} | {1 / s:7.2f} | (vmap + CUDA graph, sampling included)")
            print(f"the paper's 60,000 meta-iterations at this speed: {60_000 * s / 60:.1f} min")


if __name__ == "__main__":
    runtime.seed(0)
    main()
