"""Meta-iterations per second with the meta-batch split over 1 and 2 (or more) processes.

    python benchmarks/distributed.py [--processes 1 2] [--iterations 30] [--learner maml|reptile|imaml]

Each process runs one thread (gloo on the CPU, as ``torchrun`` with ``OMP_NUM_THREADS=1``) and
takes its share of a meta-batch of 5-way 1-shot Omniglot-sized episodes (Conv4, random images:
the speed does not depend on the pixels); the meta-gradients are averaged with one all-reduce per
step. On a machine shared with other work the absolute figures are noisy: read the ratio.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _learner(kind):
    from mlcourse.meta.imaml import IMAML
    from mlcourse.meta.maml import MAML
    from mlcourse.meta.reptile import Reptile
    from mlcourse.nets import Conv4

    net = Conv4(5, downsample="stride")
    if kind == "maml":
        return MAML(net, "cross_entropy", inner_lr=0.4)
    if kind == "reptile":
        return Reptile(net, "cross_entropy", inner_lr=1e-3, inner_steps=5, inner_batch=10, inner_optimizer="adam")
    return IMAML(net, "cross_entropy", inner_steps=16, cg_steps=5, damping=11.0, on_cg_failure="ignore")


def _episodes(n, shots=1, ways=5):
    from mlcourse.tasks import TaskBatch

    x = torch.rand(n, ways * shots, 1, 28, 28)
    y = torch.arange(ways).repeat_interleave(shots).expand(n, -1)
    return TaskBatch(x, y, x.clone(), y)


def _worker(rank, world, folder, kind, tasks, iterations, queue):
    from mlcourse import distributed

    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world)
    torch.manual_seed(0)
    learner = _learner(kind)
    theta = learner.init_params("cpu")
    optimizer = torch.optim.Adam(theta.values(), lr=1e-3)
    batch = _episodes(distributed.share(tasks))
    for _ in range(2):  # warm-up
        learner.step(theta, optimizer, batch)
    if world > 1:
        dist.barrier()
    began = time.perf_counter()
    for _ in range(iterations):
        learner.step(theta, optimizer, batch)
    seconds = time.perf_counter() - began
    if rank == 0:
        queue.put(iterations / seconds)
    if world > 1:
        dist.destroy_process_group()


def measure(processes: int, kind: str, tasks: int, iterations: int) -> float:
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    with tempfile.TemporaryDirectory() as folder:
        mp.start_processes(_worker, args=(processes, folder, kind, tasks, iterations, queue), nprocs=processes,
                           start_method="spawn")
    return queue.get()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--learner", default="maml", choices=["maml", "reptile", "imaml"])
    parser.add_argument("--tasks", type=int, default=32, help="meta-batch (the paper's MAML Omniglot: 32)")
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(f"{args.learner}, Conv4 5-way 1-shot, meta-batch {args.tasks}, one thread per process, gloo, "
          f"{os.cpu_count()} cores")
    rates = {}
    for p in args.processes:
        rates[p] = measure(p, args.learner, args.tasks, args.iterations)
        print(f"{p} process(es): {rates[p]:.3f} meta-iterations/s"
              + (f"  ({rates[p] / rates[args.processes[0]]:.2f}x {args.processes[0]} process)" if p != args.processes[0]
                 else ""), flush=True)


if __name__ == "__main__":
    main()
