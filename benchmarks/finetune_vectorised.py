"""Fine-tuning many target tasks, and multi-task losses: vmap over tasks against a loop.

    python benchmarks/finetune_vectorised.py            # CPU, and CUDA when available
    python benchmarks/finetune_vectorised.py --quick    # fewer repeats

Prints milliseconds per call for
- ``mlcourse.meta.finetune.evaluate`` on 5-way K-shot Omniglot-sized episodes (Conv4, 64
  channels, stride-2), all layers fine-tuned for 10 steps, with ``execution="vmap"`` and ``"loop"``,
  for K = 1, 5, 15; and what ``"auto"`` picks;
- one Adam step of ``MultiTask`` models (hard sharing and independent 32-channel Conv4s, 10
  tasks of 14, 28 or 70 images each) with vmap and with a loop over tasks.
No data files are needed: images are random.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from mlcourse.meta.finetune import _execution, evaluate
from mlcourse.meta.multitask import MultiTask
from mlcourse.nets import Conv4, init_params
from mlcourse.tasks import EpisodeSampler


def timed(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    began = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - began) / repeats * 1000


def finetune_figures(device: torch.device, repeats: int, tasks: int) -> None:
    net = Conv4(5, downsample="stride")
    theta = {k: v.detach() for k, v in init_params(net, device).items()}
    images = torch.randint(0, 256, (100, 20, 28, 28), dtype=torch.uint8)
    print(f"  fine-tuning {tasks} episodes, 10 steps, all layers ({device}):")
    for shots in (1, 5, 15):
        episodes = EpisodeSampler(images, 5, shots, 5, device=device).sample(tasks)
        row = {mode: timed(lambda: evaluate(net, theta, episodes, lr=0.1, steps=10, execution=mode), repeats, device)
               for mode in ("vmap", "loop")}
        auto = _execution("auto", net, episodes)
        print(f"    K = {shots:2d}: vmap {row['vmap']:8.1f} ms   loop {row['loop']:8.1f} ms   "
              f"(vmap {row['loop'] / row['vmap']:.2f}x faster; auto picks {auto})")


def multitask_figures(device: torch.device, repeats: int) -> None:
    m, classes = 10, 14
    conv = lambda: Conv4(classes, channels=32, downsample="stride")
    models = {"hard sharing": MultiTask("hard", m, trunk=nn.Sequential(conv().features, nn.Flatten()),
                                        head=nn.Linear(128, classes), loss="cross_entropy"),
              "independent": MultiTask("independent", m, net=conv(), loss="cross_entropy")}
    print(f"  one Adam step of a multi-task model, {m} tasks ({device}):")
    for images in (14, 28, 70):
        x = torch.rand(m, images, 1, 28, 28, device=device)
        y = torch.randint(0, classes, (m, images), device=device)
        for name, model in models.items():
            params = model.init_params(device=device)
            optimizer = torch.optim.Adam(params.values(), lr=1e-3)
            row = {}
            for mode in ("vmap", "loop"):
                model.execution = mode

                def step():
                    optimizer.zero_grad(set_to_none=True)
                    model.loss(params, x, y).backward()
                    optimizer.step()

                row[mode] = timed(step, repeats, device)
            model.execution = "auto"
            print(f"    {images:3d} images per task, {name:>12}: vmap {row['vmap']:8.1f} ms   loop {row['loop']:8.1f} ms"
                  f"   (auto picks {model._execution(x)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for device in devices:
        finetune_figures(device, repeats, tasks=8 if device.type == "cpu" else 64)
        multitask_figures(device, repeats)


if __name__ == "__main__":
    main()
