"""Every check that needs a GPU, in one run with a time budget: correctness of the CUDA paths
against float64 CPU references, the benchmarks' CUDA rows, and paper-scale reproductions in a
given order until the budget is spent.

    python benchmarks/gpu_check.py --budget 480 --out results_dir [--reproduce name ...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def correctness() -> None:
    """The CUDA computations equal the CPU ones (float64), and a graph replay equals an eager step."""
    from mlcourse.graphs import capture
    from mlcourse.meta.maml import MAML
    from mlcourse.nets import MLP, Conv4
    from mlcourse.tasks import SinusoidFamily, TaskBatch

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    torch.manual_seed(0)
    x = torch.rand(4, 5, 1, 28, 28, dtype=torch.float64)
    y = torch.arange(5).expand(4, 5)
    cases = [("MLP sinusoid", MLP(), "mse", SinusoidFamily().sample(6, 10, device=cpu, dtype=torch.float64)),
             ("Conv4 5-way", Conv4(5, downsample="stride"), "cross_entropy", TaskBatch(x, y, x.flip(1), y.flip(1)))]
    for name, net, loss, batch in cases:
        grads = {}
        for device, execution in [(cpu, "loop"), (cuda, "vmap"), (cuda, "loop")]:
            maml = MAML(net, loss, inner_lr=0.1, inner_steps=2, execution=execution)
            theta = maml.init_params(device, torch.float64)
            grads[device.type, execution] = maml.meta_gradient(theta, batch.to(device))
        reference = grads["cpu", "loop"]
        scale = torch.cat([v.flatten() for v in reference.values()]).norm()
        for key, g in grads.items():
            # Relative to the whole gradient's norm: the biases of convolutions followed by batch
            # norm have a true gradient of zero, so entry-wise relative errors there are noise/noise.
            error = torch.cat([(g[k].cpu() - reference[k]).flatten() for k in reference]).norm() / scale
            status = "ok" if error < 1e-10 else "MISMATCH"
            print(f"[correctness] {name}: meta-gradient on {key} vs CPU loop, relative error {error:.2e} {status}")

    # A CUDA-graph replay of a step on a fixed batch equals the same step run eagerly.
    family = SinusoidFamily()
    batch = family.sample(25, 10, device=cuda)
    results = []
    for graphed in (False, True):
        torch.manual_seed(1)
        maml = MAML(MLP(), "mse", inner_lr=0.01, inner_steps=1)
        theta = maml.init_params(cuda)
        optimizer = torch.optim.Adam(theta.values(), lr=1e-3, capturable=True)
        step = lambda: maml.step(theta, optimizer, batch)  # noqa: E731
        if graphed:
            replay = capture(step, warmup=3)  # 3 real steps; the captured call only records
            for _ in range(7):
                replay()
        else:
            for _ in range(10):
                step()
        torch.cuda.synchronize()
        results.append({k: v.detach().clone() for k, v in theta.items()})
    worst = max(float((results[0][k] - results[1][k]).abs().max()) for k in results[0])
    print(f"[correctness] CUDA graph replay vs eager after 10 steps: max abs difference {worst:.2e} "
          f"{'ok' if worst < 1e-5 else 'MISMATCH'}")

    # The captured steps of Reptile, iMAML and MAML-TRPO navigation against their eager steps.
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_steps

    gpu_steps.correctness(cuda, small=False)


def run(command: list[str], seconds_left: float, log: Path) -> str:
    """Run a command with the time left; its output goes to the console and to log; returns stdout."""
    if seconds_left < 20:
        print(f"[skipped, no time left] {' '.join(command)}")
        return ""
    print(f"\n$ {' '.join(command)}  (at most {seconds_left:.0f} s)", flush=True)
    with open(log, "a") as f:
        try:
            out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=seconds_left)
            f.write(f"$ {' '.join(command)}\n{out.stdout}{out.stderr}\n")
            print(out.stdout[-3000:] + (out.stderr[-2000:] if out.returncode else ""), flush=True)
            return out.stdout
        except subprocess.TimeoutExpired as err:
            f.write(f"$ {' '.join(command)}\nTIMEOUT after {seconds_left:.0f} s\n{err.stdout or ''}\n")
            print(f"[timeout after {seconds_left:.0f} s]", flush=True)
            return ""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=480, help="seconds for everything")
    parser.add_argument("--out", default="gpu_results")
    parser.add_argument("--benchmarks", nargs="*", default=[
        "maml_sinusoid.py --device cuda", "maml_omniglot.py --device cuda --queries 1 --iterations 10",
        "maml_memory.py --device cuda", "imaml_memory.py --device cuda", "maml_rl_nav.py --device cuda --iterations 2",
        "gpu_steps.py",
        "blackbox_omniglot.py --device cuda"])
    parser.add_argument("--per-benchmark", type=float, default=90, help="seconds at most for each benchmark")
    parser.add_argument("--reproduce", nargs="*", default=["maml-sinusoid", "maml-omniglot-5w1s"])
    args = parser.parse_args()
    began = time.perf_counter()
    left = lambda: args.budget - (time.perf_counter() - began)  # noqa: E731
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | budget {args.budget:.0f} s", flush=True)
    correctness()
    # Seconds per meta-iteration measured by the benchmarks, to fit the reproductions in the budget.
    per_iteration = {}
    for bench in args.benchmarks:
        script, *flags = bench.split()
        text = run([sys.executable, f"benchmarks/{script}", *flags], min(left(), args.per_benchmark),
                   out / "benchmarks.log")
        for line in text.splitlines():
            if line.startswith("the paper's 60,000 meta-iterations at this speed:"):
                per_iteration["maml-omniglot"] = float(line.split(":")[1].split()[0]) * 60 / 60_000
            if line.strip().startswith("the paper's 70,000 meta-iterations at"):
                per_iteration["maml-sinusoid"] = float(line.split(" at ")[1].split()[0]) / 1e3
    paper_iterations = {"maml-sinusoid": 70_000, "maml-omniglot": 60_000}
    for i, name in enumerate(args.reproduce):
        command = [sys.executable, "-m", "mlcourse.reproduce", name, "--out", str(out)]
        key = next((k for k in per_iteration if name.startswith(k)), None)
        if key:
            # Shorten meta-training when the paper's iterations would not fit this run's share of
            # what is left (training, plus about a minute for loading and evaluation).
            share = (left() - 60 * (len(args.reproduce) - i)) / (len(args.reproduce) - i)
            fits = int(share / (per_iteration[key] * 1.5))
            if fits < paper_iterations[key]:
                command += ["--iterations", str(max(1000, fits // 1000 * 1000))]
        run(command, left(), out / "reproduce.log")
    print(f"\ndone in {time.perf_counter() - began:.0f} s", flush=True)


if __name__ == "__main__":
    main()
