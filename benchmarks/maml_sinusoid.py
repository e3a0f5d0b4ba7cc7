"""Seconds per second-order MAML meta-iteration in the sinusoid setting of Finn et al. (2017):
MLP 1-40-40-1, K = 10, meta-batch 25, Adam. The package's steps (vmap over tasks, and the
task-batched MLP in plain autograd that ``execution="auto"`` picks on the CPU) against a per-task
loop written the textbook way (torch.autograd.grad with create_graph=True), in the same run; on
CUDA also the CUDA-graph replay of the whole step (sampling included).

    python benchmarks/maml_sinusoid.py [--device cpu|cuda] [--iterations N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mlcourse.graphs import capture
from mlcourse.meta.maml import MAML
from mlcourse.nets import MLP, forward
from mlcourse.tasks import SinusoidFamily

TASKS, SHOTS, ALPHA, BETA = 25, 10, 0.01, 1e-3


def textbook_step(net, theta, optimizer, batch, steps):
    """One meta-iteration as a textbook writes it: a Python loop over tasks."""
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for i in range(batch.num_tasks):
        phi = dict(theta)
        for _ in range(steps):
            loss = (forward(net, phi, batch.x_tr[i]) - batch.y_tr[i]).pow(2).mean()
            grads = torch.autograd.grad(loss, list(phi.values()), create_graph=True)
            phi = {k: v - ALPHA * g for (k, v), g in zip(phi.items(), grads)}
        total = total + (forward(net, phi, batch.x_ts[i]) - batch.y_ts[i]).pow(2).mean()
    (total / batch.num_tasks).backward()
    optimizer.step()


def seconds_per_call(fn, device, iterations, repeats=5):
    """Median over ``repeats`` of the mean time of ``iterations`` calls (after a warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        for _ in range(iterations):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - began) / iterations)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None)
    parser.add_argument("--iterations", type=int, default=None)
    args = parser.parse_args()
    devices = [torch.device(args.device)] if args.device else (
        [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else []))
    family, net = SinusoidFamily(), MLP()
    print(f"torch {torch.__version__}; meta-batch {TASKS}, K={SHOTS}, MLP 1-40-40-1, second-order MAML")
    print(f"{'device':>6} {'inner':>5} | {'path':<29} | {'ms/iter':>9} | {'tasks/s':>9} | vs loop")
    for device in devices:
        iterations = args.iterations or (20 if device.type == "cpu" else 200)
        for steps in (1, 5):
            maml = MAML(net, "mse", inner_lr=ALPHA, inner_steps=steps, execution="vmap")
            batched = MAML(net, "mse", inner_lr=ALPHA, inner_steps=steps, execution="batched")
            theta = maml.init_params(device)
            optimizer = torch.optim.Adam(theta.values(), lr=BETA, capturable=device.type == "cuda")
            batch = family.sample(TASKS, SHOTS, device=device)
            results = {
                "loop over tasks (textbook)": seconds_per_call(
                    lambda: textbook_step(net, theta, optimizer, batch, steps), device, max(2, iterations // 5)),
                "vmap over tasks (package)": seconds_per_call(
                    lambda: maml.step(theta, optimizer, batch), device, iterations),
            }
            if device.type == "cpu":  # auto's choice there
                results["batched MLP (package, auto)"] = seconds_per_call(
                    lambda: batched.step(theta, optimizer, batch), device, iterations)
            if device.type == "cuda":
                replay = capture(lambda: maml.step(theta, optimizer, family.sample(TASKS, SHOTS, device=device)))
                results["vmap + CUDA graph (sampling in)"] = seconds_per_call(replay, device, iterations * 5)
            loop = results["loop over tasks (textbook)"]
            for path, seconds in results.items():
                print(f"{device.type:>6} {steps:>5} | {path:<29} | {seconds * 1e3:9.3f} | {TASKS / seconds:9.0f} | "
                      f"{loop / seconds:5.1f}x")
            if device.type == "cuda" and steps == 1:
                best = min(results.values())
                print(f"       the paper's 70,000 meta-iterations at {best * 1e3:.3f} ms each: {70_000 * best:.0f} s")


if __name__ == "__main__":
    main()
