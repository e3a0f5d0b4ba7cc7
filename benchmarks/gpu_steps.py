"""The captured steps of Reptile, iMAML and MAML-TRPO navigation: captured against eager, and their speed.

    python benchmarks/gpu_steps.py                 # on a GPU: correctness, then milliseconds per step
    python benchmarks/gpu_steps.py --cpu-smoke     # the same code at toy sizes on the CPU (no capture there)

Correctness: θ after a few steps on the same fixed batches, eager against the CUDA-graph path
(``GraphedStep``, as the experiments use it), relative to θ's norm. Speed: milliseconds per
meta-iteration, eager and captured, at the papers' sizes (Reptile: 5 tasks, 5 Adam steps on
minibatches of 10 of 5×10 images; iMAML: 32 tasks of 5-way 1-shot, 16 inner steps, 5 CG steps;
MAML-TRPO: 20 goals × 20 trajectories × 100 steps, a 100-100 policy).
"""

from __future__ import annotations

import argparse
import time

import torch

from mlcourse import graphs
from mlcourse.meta.imaml import IMAML
from mlcourse.meta.reptile import Reptile
from mlcourse.nets import Conv4
from mlcourse.tasks import TaskBatch


def _episodes(n, ways, shots, queries, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, ways * (shots + queries), 1, 28, 28, generator=g).to(device)
    y = torch.arange(ways).repeat_interleave(shots + queries).expand(n, -1).to(device)
    s = ways * shots
    return TaskBatch(x[:, :s], y[:, :s], x[:, s:], y[:, s:])


class _Batches:
    """Fixed batches fed through one static batch (a captured step reads the same memory every time)."""

    def __init__(self, batches):
        self.batches = batches
        self.static = TaskBatch(*(t.clone() for t in (batches[0].x_tr, batches[0].y_tr, batches[0].x_ts,
                                                       batches[0].y_ts)))

    def load(self, i):
        b = self.batches[i % len(self.batches)]
        for name in ("x_tr", "y_tr", "x_ts", "y_ts"):
            getattr(self.static, name).copy_(getattr(b, name))


def _reptile(device, small):
    learner = Reptile(Conv4(5, channels=4 if small else 64, downsample="stride"), "cross_entropy", inner_lr=1e-3,
                      inner_steps=2 if small else 5, inner_batch=10, inner_optimizer="adam")
    theta = learner.init_params(device)
    optimizer = torch.optim.SGD(theta.values(), lr=1.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1 - it / 1000)
    data = _Batches([_episodes(2 if small else 5, 5, 10, 1, device, seed=i) for i in range(2)])

    def meta_gradient():
        return learner.step(theta, graphs.NoUpdate(), data.static)

    def after():
        optimizer.step()
        schedule.step()

    return theta, meta_gradient, after, data.load


def _imaml(device, small):
    learner = IMAML(Conv4(5, channels=4 if small else 64, downsample="stride"), "cross_entropy", lam=2.0,
                    inner_lr=0.1, inner_steps=2 if small else 16, cg_steps=2 if small else 5, damping=11.0, on_cg_failure="ignore")
    theta = learner.init_params(device)
    optimizer = torch.optim.Adam(theta.values(), lr=1e-3, capturable=device.type == "cuda")
    data = _Batches([_episodes(2 if small else 32, 5, 1, 1, device, seed=i) for i in range(2)])
    return theta, lambda: learner.step(theta, optimizer, data.static), lambda: None, data.load


def _navigation(device, small):
    from mlcourse.rl.maml_rl import MAMLRL
    from mlcourse.rl.navigation import Navigation2D
    from mlcourse.rl.policy import GaussianPolicy
    from mlcourse.rl.trpo import TRPO

    env = Navigation2D(horizon=4 if small else 100, device=device)
    torch.manual_seed(0)
    learner = MAMLRL(env, GaussianPolicy(2, 2, hidden=(8,) if small else (100, 100)).to(device), inner_lr=0.1,
                     trajectories=3 if small else 20)
    theta = learner.init_params()
    trpo = TRPO(max_kl=0.01, line_search="parallel")
    goals = env.sample_tasks(2 if small else 20, generator=torch.Generator(device=device).manual_seed(0))
    return theta, lambda: learner.step(theta, trpo, goals), lambda: None, lambda i: None


PATHS = {"Reptile": _reptile, "iMAML": _imaml, "MAML-TRPO navigation": _navigation}


def _run(make, device, small, steps, graphed, seed=0):
    torch.manual_seed(seed)
    theta, step, after, load = make(device, small)
    runner = graphs.GraphedStep(step, device) if graphed else step
    for i in range(steps):
        load(i)
        runner()
        after()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {k: v.detach().clone() for k, v in theta.items()}, runner


def correctness(device, small, steps=6):
    for name, make in PATHS.items():
        # The batches are fixed; sampling inside a step (Reptile's minibatches, the rollouts) draws
        # from the global CUDA generator, which graph replays advance as eager steps do.
        eager, _ = _run(make, device, small, steps, graphed=False)
        captured, runner = _run(make, device, small, steps, graphed=True)
        scale = torch.cat([v.flatten() for v in eager.values()]).norm()
        error = float(torch.cat([(captured[k] - eager[k]).flatten() for k in eager]).norm() / scale)
        how = "CUDA graph" if getattr(runner, "graphed", False) else "eager (no capture on this device)"
        status = "ok" if error < 1e-4 else "MISMATCH"
        print(f"[correctness] {name}: {how} vs eager after {steps} steps, relative difference {error:.2e} {status}",
              flush=True)


def speed(device, small, steps=20, warmup=4):
    for name, make in PATHS.items():
        row = {}
        for graphed in (False, True):
            torch.manual_seed(0)
            theta, step, after, load = make(device, small)
            runner = graphs.GraphedStep(step, device) if graphed else step
            for i in range(warmup):  # warm-up (and the capture)
                runner()
                after()
            if device.type == "cuda":
                torch.cuda.synchronize()
            began = time.perf_counter()
            for i in range(steps):
                load(i)
                runner()
                after()
            if device.type == "cuda":
                torch.cuda.synchronize()
            row["graph" if graphed else "eager"] = 1e3 * (time.perf_counter() - began) / steps
        print(f"[speed] {name}: eager {row['eager']:.1f} ms, captured {row['graph']:.1f} ms per meta-iteration "
              f"({row['eager'] / row['graph']:.1f}x)", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="toy sizes on the CPU")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    device = torch.device("cpu" if args.cpu_smoke or not torch.cuda.is_available() else "cuda")
    small = args.cpu_smoke
    correctness(device, small, steps=2 if small else 6)
    speed(device, small, steps=1 if small else args.steps, warmup=1 if small else 4)


if __name__ == "__main__":
    main()
