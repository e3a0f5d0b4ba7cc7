"""Second-order MAML, the package's against a textbook per-task loop, in one run: seconds per
meta-iteration, peak memory and the difference between their meta-gradients.

The textbook loop is written here the way learn2learn and higher compute MAML: an ``nn.Module``
network (torch's own ``nn.BatchNorm2d(track_running_stats=False)``, blocks [conv, batch norm,
ReLU, max-pool]); per task, a functional forward with the adapted weights, the inner step from
``torch.autograd.grad(..., create_graph=True)``, the query loss and ``.backward()``, so that each
task's graph is freed before the next. The package's ``MAML(..., execution="auto")`` runs the
same meta-iteration (an Adam step included in both) with the execution it picks for the device.

Settings: Omniglot 5-way 1-shot, 15 queries per class, meta-batch 32, one inner step (α = 0.4),
for the max-pool and the strided Conv4; the sinusoid MLP 1-40-40-1, K = 10, meta-batch 25, one
inner step (α = 0.01). Both sides run interleaved (textbook, package, textbook, ...) so that
the machine's load falls on both alike; the medians and the median of the per-round ratios are
printed. Peak memory is :func:`mlcourse.profile.peak_bytes` (on the CPU, the sampled malloc heap
above what was in use before the call), median of three calls.

The meta-gradients are compared in float32 on the benchmark's batch and in float64 on a smaller
batch (4 tasks): the largest difference of any entry, over the largest entry of the whole
gradient (float32 rounding, amplified by batch norm over few examples, shows at ~1e-4; float64
shows whether the two compute the same function).

    python benchmarks/maml_vs_textbook.py [--rounds 5] [--only maxpool,stride,sinusoid] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from mlcourse import runtime
from mlcourse.meta.maml import MAML
from mlcourse.nets import MLP, Conv4
from mlcourse.profile import peak_bytes, seconds
from mlcourse.tasks import EpisodeSampler, SinusoidFamily, load_omniglot

CASES = ("maxpool", "stride", "sinusoid")


class TextbookConv4(nn.Module):
    """Conv4 as torch users write it; parameter names match :class:`mlcourse.nets.Conv4`."""

    def __init__(self, ways: int = 5, downsample: str = "maxpool", channels: int = 64, image_size: int = 28):
        super().__init__()
        blocks, size, c_in = [], image_size, 1
        for _ in range(4):
            stride = 2 if downsample == "stride" else 1
            block = [nn.Conv2d(c_in, channels, 3, stride=stride, padding=1),
                     nn.BatchNorm2d(channels, track_running_stats=False), nn.ReLU()]
            if downsample == "maxpool":
                block.append(nn.MaxPool2d(2))
                size //= 2
            else:
                size = (size + 1) // 2
            blocks.append(nn.Sequential(*block))
            c_in = channels
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(channels * size * size, ways)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def textbook_meta_gradient(net: nn.Module, loss_fn, theta: dict, batch, alpha: float) -> None:
    """Accumulate ∇θ (1/n) Σ_i L(θ − α∇L(θ, D_i^tr), D_i^ts) into θ's ``.grad``, task by task."""
    n = batch.num_tasks
    for i in range(n):
        support = loss_fn(functional_call(net, theta, (batch.x_tr[i],)), batch.y_tr[i])
        grads = torch.autograd.grad(support, list(theta.values()), create_graph=True)
        phi = {k: p - alpha * g for (k, p), g in zip(theta.items(), grads)}
        (loss_fn(functional_call(net, phi, (batch.x_ts[i],)), batch.y_ts[i]) / n).backward()


def textbook_step(net, loss_fn, theta, optimizer, batch, alpha):
    optimizer.zero_grad(set_to_none=True)
    textbook_meta_gradient(net, loss_fn, theta, batch, alpha)
    optimizer.step()


def relative_difference(a: dict, b: dict) -> float:
    """max_k max |a_k − b_k| / max_k max |b_k|: the largest difference over the largest entry."""
    scale = max(float(v.abs().max()) for v in b.values())
    return max(float((a[k] - b[k]).abs().max()) for k in b) / scale


def setting(case: str, tasks: int | None, device, dtype=torch.float32, seed: int = 0):
    """(textbook net, package net, loss, α, a task batch) for one case."""
    generator = torch.Generator(device=device).manual_seed(seed)
    if case == "sinusoid":
        batch = SinusoidFamily().sample(tasks or 25, 10, device=device, dtype=dtype, generator=generator)
        mse = lambda out, y: (out - y).pow(2).mean()  # noqa: E731
        return MLP(), MLP(), "mse", mse, 0.01, batch
    omniglot = load_omniglot(device="cpu")
    sampler = EpisodeSampler(omniglot.images[omniglot.split()["train"]], 5, 1, 15, rotations="per_class", device=device)
    batch = sampler.sample(tasks or 32, generator=generator).to(device, dtype=dtype)
    return (TextbookConv4(5, case), Conv4(5, downsample=case), "cross_entropy", F.cross_entropy, 0.4, batch)


def check_gradients(case: str, device) -> tuple[float, float]:
    """Relative meta-gradient differences, float32 (the benchmark's batch) and float64 (4 tasks)."""
    out = []
    for dtype, tasks in ((torch.float32, None), (torch.float64, 4)):
        textbook, net, kind, loss_fn, alpha, batch = setting(case, tasks, device, dtype)
        maml = MAML(net, kind, inner_lr=alpha, inner_steps=1)
        torch.manual_seed(0)
        theta = maml.init_params(device, dtype)
        textbook_meta_gradient(textbook, loss_fn, theta, batch, alpha)
        reference = {k: p.grad.clone() for k, p in theta.items()}
        out.append(relative_difference(maml.meta_gradient(theta, batch).grads, reference))
    return out[0], out[1]


def measure(case: str, device, rounds: int) -> dict:
    textbook, net, kind, loss_fn, alpha, batch = setting(case, None, device)
    maml = MAML(net, kind, inner_lr=alpha, inner_steps=1)
    torch.manual_seed(0)
    theta_a, theta_b = maml.init_params(device), maml.init_params(device)
    with torch.no_grad():
        for k in theta_b:
            theta_b[k].copy_(theta_a[k])
    opt_a, opt_b = torch.optim.Adam(theta_a.values(), lr=1e-3), torch.optim.Adam(theta_b.values(), lr=1e-3)
    runs = {
        "textbook": lambda: textbook_step(textbook, loss_fn, theta_a, opt_a, batch, alpha),
        "mlcourse": lambda: maml.step(theta_b, opt_b, batch),
    }
    repeat = 10 if case == "sinusoid" else 1  # the MLP's iteration is milliseconds: time ten at once
    times = {name: [] for name in runs}
    for fn in runs.values():
        fn()  # warm-up
    for _ in range(rounds):
        for name, fn in runs.items():
            times[name].append(seconds(lambda: [fn() for _ in range(repeat)], device, repeats=1, warmup=0) / repeat)
    peaks = {name: statistics.median(peak_bytes(fn, device) or 0 for _ in range(3)) for name, fn in runs.items()}
    ratios = [a / b for a, b in zip(times["textbook"], times["mlcourse"])]
    picked = sorted({maml_execution(maml, batch)})
    return {"times": {k: statistics.median(v) for k, v in times.items()}, "ratio": statistics.median(ratios),
            "peaks": peaks, "execution": picked[0]}


def maml_execution(maml: MAML, batch) -> str:
    from mlcourse.meta.functional import choose_execution

    a = choose_execution(maml.execution, maml.net, batch.device, batch.shots, batched=True)
    q = choose_execution(maml.execution, maml.net, batch.device, batch.queries, batched=True)
    return a if a == q else f"{a} adaptation, {q} query"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default=",".join(CASES), help=f"comma-separated subset of {CASES}")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    cases = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; allowed: {', '.join(CASES)}")
    device = runtime.check_device(args.device)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load}; second-order MAML, "
          f"1 inner step, Adam; {args.rounds} interleaved rounds, medians")
    print(f"{'case':<9} | {'textbook s/it':>13} | {'mlcourse s/it':>13} | {'speed-up':>8} | {'textbook MiB':>12} | "
          f"{'mlcourse MiB':>12} | {'memory':>6} | {'grad diff f32':>13} | {'f64':>8} | mlcourse runs")
    for case in cases:
        r = measure(case, device, args.rounds)
        d32, d64 = check_gradients(case, device)
        t, m = r["times"]["textbook"], r["times"]["mlcourse"]
        pt, pm = (r["peaks"][k] / 2**20 for k in ("textbook", "mlcourse"))
        print(f"{case:<9} | {t:13.4f} | {m:13.4f} | {r['ratio']:7.2f}x | {pt:12.1f} | {pm:12.1f} | "
              f"{pm / pt if pt else float('nan'):5.2f}x | {d32:13.1e} | {d64:8.1e} | {r['execution']}", flush=True)
    print("speed-up: median over rounds of textbook time / mlcourse time; memory: mlcourse peak / textbook peak.")
    print("cases: maxpool, stride = Omniglot 5-way 1-shot, 15 queries/class, meta-batch 32, Conv4 with max-pool / "
          "stride-2; sinusoid = MLP 1-40-40-1, K = 10, meta-batch 25.")


if __name__ == "__main__":
    main()
