"""Seconds per meta-iteration of MAML-RL on 2D navigation, on CPU and (when available) CUDA.

The reference configuration: 20 tasks × 20 trajectories of 100 steps, one inner policy-gradient
step (α = 0.1), a TRPO meta-step (δ = 0.01, 10 conjugate-gradient steps, 15 line-search steps).
The paper trains for 500 meta-iterations; the script prints the projected time for them, for
three meta-optimisers: TRPO with the Fisher-vector products on all trajectories (the paper's),
TRPO with them on a quarter of the trajectories (the book's CPU setting), and Adam on the DiCE
meta-gradient.

    python benchmarks/maml_rl_nav.py [--iterations 3] [--hidden 64 64] [--device cpu|cuda]

Set OMP_NUM_THREADS to the number of free cores: on a busy machine, torch's default of one
thread per core can be several times slower than one thread.
"""

from __future__ import annotations

import argparse
import time

import torch

from mlcourse.rl.maml_rl import MAMLRL
from mlcourse.rl.navigation import Navigation2D
from mlcourse.rl.policy import GaussianPolicy
from mlcourse.rl.trpo import TRPO

OPTIMISERS = {
    "TRPO, Fisher on all trajectories": lambda theta: TRPO(max_kl=0.01, fisher_fraction=1.0),
    "TRPO, Fisher on 1/4 of them": lambda theta: TRPO(max_kl=0.01, fisher_fraction=0.25),
    "Adam on the meta-gradient": lambda theta: torch.optim.Adam(theta.values(), lr=3e-3),
}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(device: torch.device, make_optimizer, iterations: int, hidden, tasks: int = 20, trajectories: int = 20):
    """(wall seconds, process CPU seconds) per meta-iteration, after two warm-up iterations."""
    torch.manual_seed(0)
    env = Navigation2D(horizon=100, device=device)
    learner = MAMLRL(env, GaussianPolicy(2, 2, hidden=tuple(hidden)).to(device), inner_lr=0.1,
                     trajectories=trajectories)
    theta = learner.init_params()
    optimizer = make_optimizer(theta)
    for _ in range(2):  # warm-up: lazy initialisation, allocator, CUDA context
        learner.step(theta, optimizer, env.sample_tasks(tasks))
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(iterations):
        learner.step(theta, optimizer, env.sample_tasks(tasks))
    sync(device)
    return (time.perf_counter() - wall) / iterations, (time.process_time() - cpu) / iterations


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: the CPU, and CUDA when available)")
    args = parser.parse_args()
    devices = [torch.device(args.device)] if args.device else (
        [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else []))
    print(f"MAML-RL on 2D navigation: 20 tasks × 20 trajectories × 100 steps, policy {args.hidden}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s)")
    for device in devices:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        for label, make in OPTIMISERS.items():
            wall, cpu = measure(device, make, args.iterations, args.hidden)
            print(f"{name:>22s} | {label:34s} | {wall:6.3f} s per meta-iteration (process CPU {cpu:.3f} s) "
                  f"-> 500 iterations in {500 * wall / 60:5.1f} min", flush=True)


if __name__ == "__main__":
    main()
