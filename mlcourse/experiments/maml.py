"""The MAML, first-order MAML and Reptile experiments of the chapters, at three scales.

The chapters call the training and evaluation functions here at the book's scale; the
reproduction command runs the same functions at the papers' scale:

- sinusoid regression (Finn et al. 2017, §5.1): MLP 1-40-40-1, K = 10, α = 0.01, meta-batch 25,
  Adam with β = 0.001, 70,000 meta-iterations; evaluated by fine-tuning with K points for up to 10
  steps of size α;
- Omniglot 5-way 1- and 5-shot (Finn et al. 2017, §5.2 and the reference code): Conv4 with strided
  convolutions, meta-batch 32, α = 0.4, one inner step in training and three at test, Adam with
  β = 0.001, 60,000 meta-iterations, K queries per class, 600 test episodes;
- Reptile on Omniglot (Nichol et al. 2018): 5 inner steps of Adam (β1 = 0, lr 0.001) on
  minibatches of 10 from 10 training shots per class, meta-batch 5, outer step 1.0 linearly
  annealed to 0, 100,000 meta-iterations; evaluated with 50 steps on minibatches of 5.
"""

from __future__ import annotations

import torch

from .. import train
from ..graphs import fast_step
from ..meta.maml import MAML
from ..meta.reptile import Reptile
from ..nets import MLP, Conv4
from ..reproduce import experiment
from ..stats import mean_ci95
from ..tasks import EpisodeSampler, SinusoidFamily, load_omniglot

# --- sinusoid regression -----------------------------------------------------------------------

SINUSOID = {"tasks": 25, "shots": 10, "alpha": 0.01, "beta": 1e-3, "iterations": 70_000}
SCALE_ITERATIONS = {"paper": 70_000, "book": 10_000, "quick": 200}


def train_sinusoid(method: str, iterations: int, device, seed: int = 0, progress: bool = True,
                   inner_steps: int = 1):
    """Meta-train on the sinusoid family with the paper's settings. method: "maml", "fomaml" or
    "pretrained" (one θ trained on all tasks by plain regression, the paper's baseline).
    Returns (learner, θ, history); the learner's adaptation_curve evaluates θ."""
    torch.manual_seed(seed)
    family, net = SinusoidFamily(), MLP()
    learner = MAML(net, "mse", inner_lr=SINUSOID["alpha"], inner_steps=inner_steps, first_order=method == "fomaml")
    theta = learner.init_params(device)
    optimizer = torch.optim.Adam(theta.values(), lr=SINUSOID["beta"], capturable=torch.device(device).type == "cuda")

    if method in ("maml", "fomaml"):
        def step():
            return learner.step(theta, optimizer, family.sample(SINUSOID["tasks"], SINUSOID["shots"], device=device))
    elif method == "pretrained":
        def step():
            # Plain regression on the pooled points of many tasks: min_θ Σ_i L(θ, D_i).
            batch = family.sample(SINUSOID["tasks"], SINUSOID["shots"], device=device)
            optimizer.zero_grad(set_to_none=True)
            loss = learner.loss(theta, batch.x_tr.reshape(-1, 1), batch.y_tr.reshape(-1, 1))
            loss.backward()
            optimizer.step()
            return {"loss": loss.detach()}
    else:
        raise ValueError(f"method must be 'maml', 'fomaml' or 'pretrained', got {method!r}.")
    run = fast_step(step, torch.device(device))
    history = train.fit(lambda it: run(), iterations, log_every=max(1, iterations // 50), progress=progress,
                        desc=f"{method} on sinusoids", hint=learner.divergence_hint())
    return learner, theta, history


def sinusoid_test_tasks(tasks: int, shots: int, device, seed: int = 1000):
    """A fixed set of new test tasks: K shots to adapt on, 100 query points to judge."""
    return SinusoidFamily().sample(tasks, shots, 100, device=device, generator=torch.Generator().manual_seed(seed))


@experiment("maml-sinusoid", title="MAML, sinusoid regression, K = 10", paper="finn2017maml", gpu_minutes=2)
def maml_sinusoid(scale: str, device, iterations: int | None = None) -> dict:
    iterations = iterations or SCALE_ITERATIONS[scale]
    learner, theta, history = train_sinusoid("maml", iterations, device, progress=scale != "quick")
    test = sinusoid_test_tasks(600 if scale != "quick" else 50, SINUSOID["shots"], device)
    curve = learner.adaptation_curve(theta, test, 10)["loss"]
    metrics = {}
    for steps in (1, 10):
        mean, half = mean_ci95(curve[:, steps].cpu())
        metrics[f"mse_after_{steps}_step{'s' if steps > 1 else ''}"] = {
            "value": float(mean), "ci95": float(half), "paper": None, "unit": "MSE"}
    return {"metrics": metrics, "test_tasks": test.num_tasks,
            "settings": {**SINUSOID, "iterations": iterations, "test_queries": 100},
            "notes": "The paper reports this result as a plot (its Figure 3), not a number."}


# --- Omniglot ----------------------------------------------------------------------------------

OMNIGLOT = {"ways": 5, "tasks": 32, "alpha": 0.4, "beta": 1e-3, "train_steps": 1, "test_steps": 3,
            "iterations": 60_000, "test_episodes": 600}
# The papers' accuracies (%). Batch norm with batch statistics makes evaluation transductive (the
# query set is normalised together), as in MAML's code; so Reptile is compared with its transductive
# numbers (Nichol et al. Table 2; non-transductive: 95.39 and 98.90).
PAPER_ACCURACY = {("maml", 1): 98.7, ("maml", 5): 99.9, ("fomaml", 1): 98.3, ("reptile", 1): 97.68,
                  ("reptile", 5): 99.48}


def omniglot_samplers(shots: int, queries: int, device, ways: int = 5, omniglot=None):
    """Episode samplers for meta-training (with rotations as new classes) and meta-testing on the
    disjoint character splits of the MAML code."""
    omniglot = load_omniglot(device=device) if omniglot is None else omniglot
    split = omniglot.split("maml")
    return (EpisodeSampler(omniglot.images[split["train"]], ways, shots, queries, rotations=True, device=device),
            EpisodeSampler(omniglot.images[split["test"]], ways, shots, queries, rotations=True, device=device))


def train_omniglot_maml(shots: int, iterations: int, device, first_order: bool = False, tasks: int = 32,
                        seed: int = 0, progress: bool = True, sampler=None, use_graph: bool | None = None):
    """MAML (or first-order MAML) on 5-way K-shot Omniglot with the paper's settings."""
    torch.manual_seed(seed)
    sampler = sampler or omniglot_samplers(shots, shots, device)[0]
    learner = MAML(Conv4(OMNIGLOT["ways"], downsample="stride"), "cross_entropy", inner_lr=OMNIGLOT["alpha"],
                   inner_steps=OMNIGLOT["train_steps"], first_order=first_order)
    theta = learner.init_params(device)
    optimizer = torch.optim.Adam(theta.values(), lr=OMNIGLOT["beta"], capturable=torch.device(device).type == "cuda")
    run = fast_step(lambda: learner.step(theta, optimizer, sampler.sample(tasks)), torch.device(device), use_graph)
    history = train.fit(lambda it: run(), iterations, log_every=max(1, min(100, iterations // 20)),
                        progress=progress, desc=f"{'FO-' if first_order else ''}MAML {shots}-shot Omniglot",
                        hint=learner.divergence_hint())
    return learner, theta, history


def train_omniglot_reptile(shots: int, iterations: int, device, tasks: int = 5, train_shots: int = 10,
                           seed: int = 0, progress: bool = True, omniglot=None):
    """Reptile on 5-way Omniglot with the paper's settings; the outer step size is annealed from 1 to 0."""
    torch.manual_seed(seed)
    sampler = omniglot_samplers(train_shots, 1, device, omniglot=omniglot)[0]
    learner = Reptile(Conv4(OMNIGLOT["ways"], downsample="stride"), "cross_entropy", inner_lr=1e-3, inner_steps=5,
                      inner_batch=10, inner_optimizer="adam")
    theta = learner.init_params(device)
    optimizer = torch.optim.SGD(theta.values(), lr=1.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1 - it / iterations)

    def step(it):
        metrics = learner.step(theta, optimizer, sampler.sample(tasks))
        schedule.step()
        return metrics

    history = train.fit(step, iterations, log_every=max(1, min(100, iterations // 20)), progress=progress,
                        desc=f"Reptile {shots}-shot Omniglot")
    return learner, theta, history


def evaluate_omniglot(learner, theta, sampler, episodes: int, steps: int, chunk: int = 100, **kwargs) -> torch.Tensor:
    """Accuracy on D^ts of each of ``episodes`` new episodes after adapting θ on its D^tr."""
    accuracies = []
    for start in range(0, episodes, chunk):
        batch = sampler.sample(min(chunk, episodes - start))
        if isinstance(learner, Reptile):
            phi = learner.solutions(theta, batch, steps=steps, **kwargs)
            accuracies.append(learner.query_metrics(phi, batch)["accuracy"])
        else:
            accuracies.append(learner.adaptation_curve(theta, batch, steps)["accuracy"][:, -1])
    return torch.cat(accuracies).cpu()


OMNIGLOT_ITERATIONS = {"paper": 60_000, "book": 1_000, "quick": 3}


def _omniglot_record(method: str, shots: int, scale: str, device, iterations: int | None = None) -> dict:
    device = torch.device(device)
    omniglot = load_omniglot(device=device)
    episodes = OMNIGLOT["test_episodes"] if scale != "quick" else 10
    if method == "reptile":
        iterations = iterations or {"paper": 100_000, "book": 2_000, "quick": 3}[scale]
        learner, theta, _ = train_omniglot_reptile(shots, iterations, device, progress=scale != "quick",
                                                   omniglot=omniglot)
        test = omniglot_samplers(shots, 1, device, omniglot=omniglot)[1]
        acc = evaluate_omniglot(learner, theta, test, episodes, steps=50, batch_size=5)
        settings = {"ways": 5, "train_shots": 10, "inner_steps": 5, "inner_batch": 10, "inner_lr": 1e-3,
                    "inner_optimizer": "adam (beta1=0)", "meta_batch": 5, "outer_lr": "1.0 annealed to 0",
                    "iterations": iterations, "eval_steps": 50, "eval_batch": 5, "test_queries_per_class": 1}
    else:
        iterations = iterations or OMNIGLOT_ITERATIONS[scale]
        train_sampler, test = omniglot_samplers(shots, shots, device, omniglot=omniglot)
        learner, theta, _ = train_omniglot_maml(shots, iterations, device, first_order=method == "fomaml",
                                                sampler=train_sampler, progress=scale != "quick")
        acc = evaluate_omniglot(learner, theta, test, episodes, steps=OMNIGLOT["test_steps"])
        settings = {**OMNIGLOT, "shots": shots, "queries_per_class": shots, "iterations": iterations,
                    "network": "Conv4, strided convolutions (MAML reference code for Omniglot)"}
    mean, half = mean_ci95(acc)
    return {"metrics": {"accuracy": {"value": 100 * float(mean), "ci95": 100 * float(half),
                                     "paper": PAPER_ACCURACY.get((method, shots)), "unit": "%"}},
            "test_tasks": episodes, "settings": settings,
            "notes": "Meta-test characters are disjoint from meta-training ones (split of the MAML code). Batch "
                     "norm uses batch statistics, so evaluation is transductive, as in the MAML code."
                     + (" Reptile's inner Adam state starts fresh for every task." if method == "reptile" else "")}


# GPU minutes at the paper's scale. MAML and first-order MAML were measured (H200, CUDA graphs); Reptile's
# are estimates from its eager meta-iteration in benchmarks/maml_memory.py (~30 ms, 5 steps) × 100,000.
for _method, _shots, _minutes in [("maml", 1, 4), ("maml", 5, 8), ("fomaml", 1, 3), ("reptile", 1, 45),
                                  ("reptile", 5, 45)]:
    _title = {"maml": "MAML", "fomaml": "first-order MAML", "reptile": "Reptile"}[_method]
    experiment(f"{_method}-omniglot-5w{_shots}s", title=f"{_title}, Omniglot 5-way {_shots}-shot",
               paper="nichol2018reptile" if _method == "reptile" else "finn2017maml", gpu_minutes=_minutes)(
        lambda scale, device, iterations=None, m=_method, k=_shots: _omniglot_record(m, k, scale, device, iterations))
