"""The experiments of the chapter on MAML's challenges and the MAML family (Meta-SGD, CAVIA,
MAML++, ANIL), at three scales.

- The challenge, shown: MAML on sinusoids over a grid of inner rates α, inner steps and outer
  rates β (:func:`instability_run`), and the time and memory of a meta-iteration against the
  number of inner steps (:func:`cost_curves`, from :mod:`mlcourse.profile`).
- One comparison of every gradient-based learner of the book and of prototypical networks
  on the same sinusoid and Omniglot 5-way 1-shot settings:
  :func:`compare` trains and evaluates each through the learner interface only, and measures its
  time and memory per meta-iteration.
- The MAML++ ablation on Omniglot (:func:`ablation`): MAML with the same inner loop, each change
  of MAML++ alone, and all of them.
- What the methods learn: Meta-SGD's rates per layer, CAVIA's context against the task's
  amplitude and phase, and the similarity of a MAML network's representations before and after
  adaptation (linear CKA, :func:`representation_similarity`), the feature-reuse result behind ANIL.

Each method keeps its own paper's inner loop (read from that method's settings in the package
where another chapter states them); the settings classes below hold what is shared and what is
new. The registered reproductions run the papers' headline experiments at their scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import profile, train
from ..checks import check_count
from ..evaluation import evaluate
from ..graphs import fast_step
from ..meta.anil import ANIL
from ..meta.cavia import CONTEXT, CAVIA, ContextConv4, ContextMLP
from ..meta.functional import map_tasks
from ..meta.imaml import IMAML
from ..meta.maml import MAML
from ..meta.mamlpp import MAMLPlusPlus
from ..meta.metasgd import MetaSGD
from ..meta.protonet import Conv4Embedding, ProtoNet
from ..meta.reptile import Reptile
from ..nets import MLP, Conv4, Params
from ..settings import Settings
from ..stats import mean_ci95
from ..tasks import SinusoidFamily, load_omniglot
from . import experiment
from . import imaml as imaml_experiments
from . import maml as maml_experiments
from . import reptile as reptile_experiments

# --- the challenge: bi-level instability ---------------------------------------------------------


@dataclass(frozen=True)
class InstabilitySettings(Settings):
    """MAML on the sinusoid family of Finn et al. (1-40-40-1, K = 10, meta-batch 25, Adam) over a
    grid of α, inner steps and β around the paper's α = 0.01, one step, β = 0.001. The paper has no
    such sweep; the values are the book's, chosen to bracket where training stops working."""

    tasks: int = 25
    shots: int = 10
    alphas: tuple = (0.01, 0.1, 0.3)      # inner rates swept (with one and with several steps)
    steps: tuple = (1, 5)                 # inner steps swept
    betas: tuple = (1e-3, 1e-2, 1e-1)     # outer rates swept (α = 0.01, one step)
    iterations: int = 500
    SCALES = {"book": {"iterations": 150},
              "quick": {"iterations": 4, "alphas": (0.01, 0.3), "steps": (1, 2), "betas": (1e-3, 1e-1)}}


def instability_run(alpha: float, steps: int, beta: float, settings: InstabilitySettings, device,
                    seed: int = 0) -> dict:
    """Meta-train MAML on sinusoids with (α, steps, β) and record, every iteration, the inner
    loss (D^tr, before and after adaptation) and the outer loss (D^ts after adaptation), batch
    means. Stops at the first non-finite loss and says where (``diverged_at``; None if never)."""
    s = settings
    torch.manual_seed(seed)
    family = SinusoidFamily()
    maml = MAML(MLP(), "mse", inner_lr=alpha, inner_steps=steps)
    theta = maml.init_params(device)
    optimizer = torch.optim.Adam(theta.values(), lr=beta)
    rows = {"inner_before": [], "inner_after": [], "outer": []}
    diverged_at = None
    for it in range(s.iterations):
        batch = family.sample(s.tasks, s.shots, device=device)
        with torch.no_grad():
            phi = maml.adapt({k: v.detach() for k, v in theta.items()}, batch)
            support = map_tasks(lambda p, x, y: maml.loss(p, x, y), "vmap", (), (phi, batch.x_tr, batch.y_tr))
            before = map_tasks(lambda x, y: maml.loss(theta, x, y), "vmap", (), (batch.x_tr, batch.y_tr))
        outer = maml.step(theta, optimizer, batch)["loss"]
        values = torch.stack([before.mean(), support.mean(), outer]).tolist()   # one host sync
        for key, value in zip(rows, values):
            rows[key].append(value)
        if not all(math.isfinite(v) for v in values):
            diverged_at = it
            break
    return {"alpha": alpha, "steps": steps, "beta": beta, "diverged_at": diverged_at, **rows}


def instability_grid(settings: InstabilitySettings, device, seed: int = 0) -> list[dict]:
    """Every (α, steps) of the grid at β = 0.001, then every β at α = 0.01 with one step."""
    s = settings
    runs = [instability_run(a, k, 1e-3, s, device, seed) for k in s.steps for a in s.alphas]
    runs += [instability_run(0.01, 1, b, s, device, seed) for b in s.betas if b != 1e-3]
    return runs


# --- the challenge: the cost of higher order -------------------------------------------------


@dataclass(frozen=True)
class CostSettings(Settings):
    """Time and peak memory of one meta-gradient of second- and first-order MAML against the
    number of inner steps, with :func:`mlcourse.profile.meta_iteration_cost` (sinusoids: meta-batch
    25; Omniglot: 5-way 1-shot Conv4 with ``omniglot_tasks`` tasks, random images)."""

    sinusoid_steps: tuple = (1, 2, 4, 8)
    omniglot_steps: tuple = (1, 2, 4)
    omniglot_tasks: int = 8
    repeats: int = 3
    SCALES = {"book": {"omniglot_tasks": 4},
              "quick": {"sinusoid_steps": (1, 2), "omniglot_steps": (1,), "omniglot_tasks": 2, "repeats": 1}}


def cost_curves(settings: CostSettings, device) -> dict[tuple[str, str], list[tuple[int, float, int | None]]]:
    """{(method, setting): [(steps, seconds, peak bytes), ...]} for MAML and first-order MAML."""
    s = settings
    out = {}
    for setting, steps, tasks in [("sinusoid", s.sinusoid_steps, 25), ("omniglot", s.omniglot_steps, s.omniglot_tasks)]:
        for method in ("maml", "fomaml"):
            out[method, setting] = [(k, *profile.meta_iteration_cost(method, setting, k, device, tasks=tasks,
                                                                    repeats=s.repeats)) for k in steps]
    return out


# --- the comparison: one setting, every learner ----------------------------------------------

LABELS = {"maml": "MAML", "fomaml": "first-order MAML", "reptile": "Reptile", "imaml": "iMAML",
          "metasgd": "Meta-SGD", "cavia": "CAVIA", "mamlpp": "MAML++", "anil": "ANIL",
          "protonet": "prototypical networks"}
GRADIENT_METHODS = ("maml", "fomaml", "reptile", "imaml", "metasgd", "cavia", "mamlpp", "anil")


@dataclass(frozen=True)
class SinusoidComparisonSettings(Settings):
    """Every learner on the sinusoid family of Finn et al. 2017, §5.1: K = 10 points to adapt on,
    meta-batch 25, Adam with β = 0.001 (Reptile: its own annealed SGD), evaluated on new tasks with
    100 query points after each learner's own test-time adaptation. The paper's scale is MAML's
    70,000 meta-iterations. MAML, first-order MAML, Reptile and iMAML take their chapters'
    settings; the others are below."""

    tasks: int = 25
    shots: int = 10
    queries: int = 10
    outer_lr: float = 1e-3
    iterations: int = 70_000
    test_tasks: int = 600
    test_queries: int = 100
    metasgd_rates: tuple = (0.005, 0.1)   # Li et al.: rates drawn uniformly from this range
    cavia_context: int = 5                # Zintgraf et al.'s code: 5 context parameters, α = 1, one step
    cavia_lr: float = 1.0
    mamlpp_steps: int = 5                 # MAML++ with MAML's α as the rates' start, 5 steps
    anil_lr: float = 0.01                 # ANIL with MAML's α and steps
    reptile_lr: float = 0.02              # Reptile: Nichol & Schulman's sine-wave demonstration, 5 SGD
    reptile_steps: int = 5                # steps of 0.02, outer SGD from 0.1 annealed linearly to 0,
    reptile_outer_lr: float = 0.1         # 10 steps at test time (as the Reptile chapter)
    cost_repeats: int = 5                 # timed meta-gradients per method (the median is reported)
    SCALES = {"book": {"iterations": 300, "test_tasks": 300, "cost_repeats": 3},
              "quick": {"iterations": 2, "test_tasks": 10, "cost_repeats": 1}}


@dataclass(frozen=True)
class OmniglotComparisonSettings(Settings):
    """Every learner on 5-way 1-shot Omniglot with MAML's protocol (Finn et al. 2017 and their
    code): Conv4 with strided convolutions, one query per class, a random quarter turn per class,
    meta-batch 32, Adam with β = 0.001, 60,000 meta-iterations, 600 test episodes of characters
    never seen in meta-training. MAML, first-order MAML, Reptile and iMAML take their chapters'
    settings; Meta-SGD starts its rates at MAML's α and adapts in one step (Li et al.); CAVIA uses
    100 context parameters through FiLM on the third block, α = 1 and two steps (Zintgraf et al.'s
    classification code); ANIL uses MAML's settings; MAML++ its authors' 5-way configuration (5
    steps, rates from α = 0.4, the multi-step loss annealed over the first 20 of 150 epochs,
    first order for the first 80, β cosine-annealed to 0.00001)."""

    ways: int = 5
    shots: int = 1
    queries: int = 1
    tasks: int = 32
    channels: int = 64
    outer_lr: float = 1e-3
    iterations: int = 60_000
    test_episodes: int = 600
    cavia_context: int = 100
    cavia_lr: float = 1.0
    cavia_steps: int = 2
    mamlpp_lr: float = 0.4
    mamlpp_steps: int = 5
    msl_fraction: float = 20 / 150        # of the iterations, the multi-step loss's annealing
    first_order_fraction: float = 80 / 150  # of the iterations, first-order meta-gradients
    cost_repeats: int = 5
    SCALES = {"book": {"iterations": 80, "tasks": 4, "channels": 32, "test_episodes": 100, "cost_repeats": 3},
              "quick": {"iterations": 1, "tasks": 2, "channels": 4, "test_episodes": 4, "cost_repeats": 1}}


# The papers' numbers at their scale: (value, what and where, citation key). None where the paper
# reports no number for this setting. Omniglot accuracies in %; sinusoid MSE.
PAPER_OMNIGLOT = {
    "maml": (maml_experiments.PAPER_ACCURACY["maml", 1], "60,000 iterations, meta-batch 32", "finn2017maml"),
    "fomaml": (maml_experiments.PAPER_ACCURACY["fomaml", 1], "with MAML's code", "nichol2018reptile"),
    "reptile": (maml_experiments.PAPER_ACCURACY["reptile", 1], "100,000 iterations, transductive",
                "nichol2018reptile"),
    "imaml": (imaml_experiments.PAPER_ACCURACY[1], "gradient-descent inner solver", "rajeswaran2019imaml"),
    "metasgd": (99.53, "one inner step", "li2017metasgd"),
    "cavia": (None, "reported on Mini-ImageNet only", "zintgraf2019cavia"),
    "mamlpp": (99.47, "75,000 iterations, meta-batch 16", "antoniou2019maml++"),
    "anil": (None, "reported for 20-way Omniglot: on par with MAML", "raghu2020anil"),
    "protonet": (98.8, "60-way training episodes", "snell2017prototypical"),
}
PAPER_SINUSOID = {m: (None, "reported as a figure or not at all", key) for m, (_, _, key) in PAPER_OMNIGLOT.items()}


def _check_settings(settings, kind):
    if not isinstance(settings, kind):
        raise TypeError(f"settings must be {kind.__name__} (e.g. {kind.__name__}.at()), got {settings!r}.")


def sinusoid_learner(method: str, settings: SinusoidComparisonSettings):
    """The learner of ``method`` on sinusoids, with its inner loop (see the settings' docstring)."""
    _check_settings(settings, SinusoidComparisonSettings)
    s, maml = settings, maml_experiments.SinusoidSettings()
    if method in ("maml", "fomaml"):
        return MAML(MLP(), "mse", inner_lr=maml.inner_lr, inner_steps=maml.inner_steps,
                    first_order=method == "fomaml", test_steps=maml.test_steps)
    if method == "metasgd":
        return MetaSGD(MLP(), "mse", inner_lr=maml.inner_lr, inner_steps=1, rate_range=s.metasgd_rates)
    if method == "cavia":
        return CAVIA(ContextMLP(context=s.cavia_context), "mse", inner_lr=s.cavia_lr, inner_steps=1)
    if method == "anil":
        return ANIL(MLP(), "mse", inner_lr=s.anil_lr, inner_steps=maml.inner_steps, test_steps=maml.test_steps)
    if method == "mamlpp":
        return MAMLPlusPlus(MLP(), "mse", inner_lr=maml.inner_lr, inner_steps=s.mamlpp_steps, per_step_bn=False,
                            msl_iterations=max(1, s.iterations // 10), cosine_iterations=s.iterations)
    if method == "reptile":
        return Reptile(MLP(), "mse", inner_lr=s.reptile_lr, inner_steps=s.reptile_steps, test_steps=maml.test_steps)
    if method == "imaml":
        i = imaml_experiments.SinusoidSettings()
        return IMAML(MLP(), "mse", lam=i.lam, inner_lr=i.inner_lr, inner_steps=i.inner_steps, cg_steps=i.cg_steps,
                     damping=i.damping, on_cg_failure="ignore")
    raise ValueError(f"method must be one of {GRADIENT_METHODS} on sinusoids, got {method!r}.")


def omniglot_learner(method: str, settings: OmniglotComparisonSettings):
    """The learner of ``method`` on 5-way Omniglot, with its paper's inner loop."""
    _check_settings(settings, OmniglotComparisonSettings)
    s, maml = settings, maml_experiments.OmniglotSettings()

    def conv4():
        return Conv4(s.ways, channels=s.channels, downsample=maml.downsample)

    if method in ("maml", "fomaml"):
        return MAML(conv4(), "cross_entropy", inner_lr=maml.inner_lr, inner_steps=maml.inner_steps,
                    first_order=method == "fomaml", test_steps=maml.test_steps)
    if method == "metasgd":
        return MetaSGD(conv4(), "cross_entropy", inner_lr=maml.inner_lr, inner_steps=1)
    if method == "cavia":
        net = ContextConv4(s.ways, context=s.cavia_context, channels=s.channels, downsample=maml.downsample)
        return CAVIA(net, "cross_entropy", inner_lr=s.cavia_lr, inner_steps=s.cavia_steps)
    if method == "anil":
        return ANIL(conv4(), "cross_entropy", inner_lr=maml.inner_lr, inner_steps=maml.inner_steps,
                    test_steps=maml.test_steps)
    if method == "mamlpp":
        return mamlpp_variant("MAML++", s)
    if method == "reptile":
        r = reptile_experiments.ReptileOmniglotSettings()
        return Reptile(conv4(), "cross_entropy", inner_lr=r.inner_lr, inner_steps=r.inner_steps,
                       inner_batch=r.inner_batch, inner_optimizer="adam", test_steps=r.test_steps,
                       test_batch=r.test_batch)
    if method == "imaml":
        i = imaml_experiments.OmniglotSettings()
        return IMAML(conv4(), "cross_entropy", lam=i.lam, inner_lr=i.inner_lr, inner_steps=i.inner_steps,
                     cg_steps=i.cg_steps, damping=i.damping, on_cg_failure="ignore", test_steps=i.test_steps,
                     test_lam=i.test_lam)
    if method == "protonet":
        return _protonet(s)
    raise ValueError(f"method must be one of {(*GRADIENT_METHODS, 'protonet')} on Omniglot, got {method!r}.")


def _protonet(settings: OmniglotComparisonSettings):
    return ProtoNet(Conv4Embedding(channels=settings.channels))


def outer_optimizer(method: str, theta: Params, outer_lr: float, iterations: int, device):
    """(optimizer, schedule or None): Adam with β = ``outer_lr`` for every method but Reptile, whose
    paper steps θ toward the φ_i with plain SGD at a rate (``outer_lr``, its chapter's) annealed
    linearly to 0."""
    if method == "reptile":
        optimizer = torch.optim.SGD(theta.values(), lr=outer_lr)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: max(0.0, 1 - it / iterations))
    capturable = torch.device(device).type == "cuda"
    return torch.optim.Adam(theta.values(), lr=outer_lr, capturable=capturable), None


@dataclass
class Trained:
    """A meta-trained learner: the learner, θ, its training history and its wall time."""
    method: str
    learner: object
    theta: Params
    history: train.History


def meta_train(method: str, learner, sample, iterations: int, outer_lr: float, device, seed: int = 0,
               progress: bool = False) -> Trained:
    """θ from ``learner.init_params``, then ``iterations`` meta-updates on ``sample()`` batches, through
    the learner interface only (``learner.step``)."""
    check_count("iterations", iterations, minimum=0)
    torch.manual_seed(seed)
    theta = learner.init_params(device)
    optimizer, schedule = outer_optimizer(method, theta, outer_lr, iterations, device)
    if schedule is None:
        run = fast_step(lambda: learner.step(theta, optimizer, sample()), torch.device(device),
                        use_graph=torch.device(device).type == "cuda" and method != "mamlpp")

        def step(it):
            return run()
    else:
        def step(it):
            metrics = learner.step(theta, optimizer, sample())
            schedule.step()
            return metrics
    state = {"theta": theta, "optimizer": optimizer, **({"schedule": schedule} if schedule is not None else {})}
    history = train.fit(step, iterations, log_every=max(1, min(50, iterations // 20)), progress=progress,
                        desc=f"{LABELS.get(method, method)}", state=state)
    return Trained(method, learner, theta, history)


def measure_cost(learner, theta: Params, batch, device, repeats: int) -> tuple[float, int | None]:
    """(seconds, peak bytes) of one meta-gradient of ``learner`` at θ on ``batch``."""
    learner.meta_gradient(theta, batch)   # warm-up: one-time costs stay out of the numbers
    memory = profile.peak_bytes(lambda: learner.meta_gradient(theta, batch), torch.device(device))
    return profile.seconds(lambda: learner.meta_gradient(theta, batch), torch.device(device), repeats=repeats,
                           warmup=0), memory


@dataclass
class Row:
    """One line of the comparison: the metric's mean and 95% half-width over test tasks, seconds and
    peak bytes per meta-iteration, training wall time, and the paper's number."""
    method: str
    mean: float
    ci95: float
    seconds: float
    memory: int | None
    train_seconds: float
    paper: tuple

    @property
    def label(self) -> str:
        return LABELS.get(self.method, self.method)


def sinusoid_samplers(settings: SinusoidComparisonSettings, device):
    """(a function that samples a meta-training batch, the fixed test tasks)."""
    s = settings
    family = SinusoidFamily()
    test = family.sample(s.test_tasks, s.shots, s.test_queries, device=device,
                         generator=torch.Generator().manual_seed(1000))
    return (lambda: family.sample(s.tasks, s.shots, s.queries, device=device)), test


def compare_sinusoid(settings: SinusoidComparisonSettings, device, methods=GRADIENT_METHODS, seed: int = 0,
                     progress: bool = False) -> tuple[list[Row], dict[str, Trained]]:
    """Train and evaluate every method on sinusoids: (rows of the table, the trained learners)."""
    _check_settings(settings, SinusoidComparisonSettings)
    s = settings
    sample, test = sinusoid_samplers(s, device)
    rows, trained = [], {}
    for method in methods:
        learner = sinusoid_learner(method, s)
        outer_lr = s.reptile_outer_lr if method == "reptile" else s.outer_lr
        run = meta_train(method, learner, sample, s.iterations, outer_lr, device, seed, progress)
        mse = learner.evaluate(run.theta, test)["loss"].cpu()
        seconds, memory = measure_cost(learner, run.theta, sample(), device, s.cost_repeats)
        rows.append(Row(method, *map(float, mean_ci95(mse)), seconds, memory, run.history.seconds,
                        PAPER_SINUSOID[method]))
        trained[method] = run
    return rows, trained


def omniglot_comparison_samplers(settings: OmniglotComparisonSettings, device, omniglot=None):
    """{"train": ..., "reptile": ..., "test": ...}: episode samplers on MAML's character split
    (Reptile meta-trains on its paper's 10-shot episodes; everything is tested 1-shot)."""
    s = settings
    omniglot = load_omniglot(device=device) if omniglot is None else omniglot
    rotations = maml_experiments.OmniglotSettings().rotations
    train_sampler, test = maml_experiments.omniglot_samplers(s.ways, s.shots, s.queries, device, omniglot=omniglot,
                                                             rotations=rotations)
    reptile_shots = reptile_experiments.ReptileOmniglotSettings().train_shots
    reptile_sampler = maml_experiments.omniglot_samplers(s.ways, reptile_shots, 1, device, omniglot=omniglot,
                                                         rotations=rotations)[0]
    return {"train": train_sampler, "reptile": reptile_sampler, "test": test}


def compare_omniglot(settings: OmniglotComparisonSettings, device, methods=None, omniglot=None, seed: int = 0,
                     progress: bool = False) -> tuple[list[Row], dict[str, Trained]]:
    """Train and evaluate every method (prototypical networks too) on 5-way 1-shot Omniglot: (rows of
    the table, the trained learners)."""
    _check_settings(settings, OmniglotComparisonSettings)
    s = settings
    if methods is None:
        methods = (*GRADIENT_METHODS, "protonet")
    samplers = omniglot_comparison_samplers(s, device, omniglot)
    rows, trained = [], {}
    for method in methods:
        learner = omniglot_learner(method, s)
        sampler = samplers["reptile" if method == "reptile" else "train"]
        outer_lr = reptile_experiments.ReptileOmniglotSettings().outer_lr if method == "reptile" else s.outer_lr
        run = meta_train(method, learner, lambda: sampler.sample(s.tasks), s.iterations, outer_lr, device, seed,
                         progress)
        accuracy = 100 * evaluate(learner, run.theta, samplers["test"], s.test_episodes, chunk=50)["accuracy"]
        seconds, memory = measure_cost(learner, run.theta, sampler.sample(s.tasks), device, s.cost_repeats)
        rows.append(Row(method, *map(float, mean_ci95(accuracy)), seconds, memory, run.history.seconds,
                        PAPER_OMNIGLOT[method]))
        trained[method] = run
    return rows, trained


def table(rows: list[Row], metric: str, digits: int = 2) -> str:
    """The comparison as a Markdown table: our result ± 95% interval, time and memory per
    meta-iteration, and the paper's number at its scale (with its citation)."""
    lines = [f"| method | {metric} (this run) | s / meta-iteration | peak MiB | paper, at its scale |",
             "| --- | --- | --- | --- | --- |"]
    for r in rows:
        value, where, key = r.paper
        paper = (f"{value} ({where}) {{cite:p}}`{key}`" if value is not None else f"— ({where}) {{cite:p}}`{key}`")
        memory = "—" if r.memory is None else f"{r.memory / 2**20:.1f}"
        lines.append(f"| {r.label} | {r.mean:.{digits}f} ± {r.ci95:.{digits}f} | {r.seconds:.3f} | {memory} | {paper} |")
    return "\n".join(lines)


# --- MAML++: the ablation --------------------------------------------------------------------

ABLATION = ("MAML", "+ MSL", "+ LSLR", "+ BNWB", "+ DA", "+ CA", "MAML++")
_OPTIONS = {"MAML": {}, "+ MSL": {"multi_step_loss": True}, "+ LSLR": {"per_step_rates": True},
            "+ BNWB": {"per_step_bn": True}, "+ DA": {"first_order_iterations": True},
            "+ CA": {"cosine_iterations": True},
            "MAML++": {"multi_step_loss": True, "per_step_rates": True, "per_step_bn": True,
                       "first_order_iterations": True, "cosine_iterations": True}}


def mamlpp_variant(variant: str, settings: OmniglotComparisonSettings) -> MAMLPlusPlus:
    """MAML with MAML++'s inner loop (its steps and starting α) and the options of ``variant``
    (one of :data:`ABLATION`: MAML, one change alone, or all of them)."""
    _check_settings(settings, OmniglotComparisonSettings)
    if variant not in _OPTIONS:
        raise ValueError(f"variant must be one of {ABLATION}, got {variant!r}.")
    s, on = settings, _OPTIONS[variant]
    net = Conv4(s.ways, channels=s.channels, downsample=maml_experiments.OmniglotSettings().downsample)
    return MAMLPlusPlus(net, "cross_entropy", inner_lr=s.mamlpp_lr, inner_steps=s.mamlpp_steps,
                        multi_step_loss=on.get("multi_step_loss", False),
                        msl_iterations=max(1, round(s.msl_fraction * s.iterations)),
                        per_step_bn=on.get("per_step_bn", False), per_step_rates=on.get("per_step_rates", False),
                        first_order_iterations=round(s.first_order_fraction * s.iterations)
                        if on.get("first_order_iterations") else 0,
                        cosine_iterations=s.iterations if on.get("cosine_iterations") else None)


@dataclass
class AblationRow:
    variant: str
    mean: float
    ci95: float
    final_train_loss: float     # mean query loss of the last tenth of meta-training
    roughness: float            # std of the training query loss over the second half
    seconds: float              # training wall time
    history: train.History


def ablation(settings: OmniglotComparisonSettings, device, variants=ABLATION, omniglot=None, seed: int = 0,
             reuse: dict | None = None, progress: bool = False) -> list[AblationRow]:
    """Train and evaluate each MAML++ variant on 5-way 1-shot Omniglot. ``reuse``: {variant:
    Trained} already trained with the same settings (the comparison's MAML++), not trained again."""
    _check_settings(settings, OmniglotComparisonSettings)
    s = settings
    samplers = omniglot_comparison_samplers(s, device, omniglot)
    out = []
    for variant in variants:
        learner = mamlpp_variant(variant, s)
        if reuse and variant in reuse:
            run = reuse[variant]
            learner = run.learner
        else:
            run = meta_train("mamlpp", learner, lambda: samplers["train"].sample(s.tasks), s.iterations, s.outer_lr,
                             device, seed, progress)
        accuracy = 100 * evaluate(learner, run.theta, samplers["test"], s.test_episodes, chunk=50)["accuracy"]
        _, losses = run.history.curve("loss")
        tail, half = losses[-max(1, len(losses) // 10):], losses[len(losses) // 2:]
        out.append(AblationRow(variant, *map(float, mean_ci95(accuracy)), float(tail.mean()), float(half.std()),
                               run.history.seconds, run.history))
    return out


def ablation_table(rows: list[AblationRow]) -> str:
    lines = ["| variant | accuracy % (this run) | final training loss | spread of the training loss | training s |",
             "| --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r.variant} | {r.mean:.1f} ± {r.ci95:.1f} | {r.final_train_loss:.3f} | {r.roughness:.3f} "
                     f"| {r.seconds:.0f} |")
    return "\n".join(lines)


# --- what the methods learn ------------------------------------------------------------------


@dataclass(frozen=True)
class ContextSettings(Settings):
    """CAVIA on sinusoids with several numbers of context parameters (the authors' sine experiment
    uses 5; amplitude and phase are two numbers), each trained like the comparison's CAVIA."""

    contexts: tuple = (1, 2, 5)
    probe_tasks: int = 400                # new tasks whose adapted context is plotted
    SCALES = {"quick": {"contexts": (1, 5), "probe_tasks": 20}}


def context_sweep(settings: ContextSettings, comparison: SinusoidComparisonSettings, device, seed: int = 0,
                  reuse: Trained | None = None) -> dict[int, dict]:
    """{context size: {"mse": (mean, ci95), "learner", "theta"}} for CAVIA trained with each size on
    the comparison's settings. ``reuse``: the comparison's CAVIA, for its context size."""
    _check_settings(settings, ContextSettings)
    sample, test = sinusoid_samplers(comparison, device)
    out = {}
    for size in settings.contexts:
        if reuse is not None and reuse.learner.context_size == size:
            learner, theta = reuse.learner, reuse.theta
        else:
            learner = CAVIA(ContextMLP(context=size), "mse", inner_lr=comparison.cavia_lr, inner_steps=1)
            theta = meta_train("cavia", learner, sample, comparison.iterations, comparison.outer_lr, device,
                               seed).theta
        mse = learner.evaluate(theta, test)["loss"].cpu()
        out[size] = {"mse": tuple(map(float, mean_ci95(mse))), "learner": learner, "theta": theta}
    return out


def context_probe(learner: CAVIA, theta: Params, tasks: int, shots: int, device, seed: int = 7):
    """(contexts [tasks, d], amplitudes [tasks], phases [tasks]) after adapting to new tasks."""
    batch = SinusoidFamily().sample(tasks, shots, device=device, generator=torch.Generator().manual_seed(seed))
    contexts = learner.adapt({k: v.detach() for k, v in theta.items()}, batch)[CONTEXT].detach()
    return contexts.cpu(), batch.params["amplitude"].cpu(), batch.params["phase"].cpu()


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Linear centred kernel alignment (Kornblith et al. 2019) of two representations of the same
    n examples, x [n, p] and y [n, q]: ‖Yᵀ X‖²_F / (‖Xᵀ X‖_F ‖Yᵀ Y‖_F) after centring each feature.
    1 for representations equal up to a rotation and a scale; near 0 for unrelated ones."""
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must be [n, features] for the same n examples, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}.")
    x, y = x - x.mean(0), y - y.mean(0)
    return (y.T @ x).pow(2).sum() / ((x.T @ x).norm() * (y.T @ y).norm())


def conv4_representations(net: Conv4, params: Params, x: torch.Tensor) -> list[torch.Tensor]:
    """The output of each of Conv4's four blocks and of its head for the images x, flattened to
    [n, features]."""
    from torch.func import functional_call

    out, h = [], x
    for i, block in enumerate(net.features):
        prefix = f"features.{i}."
        h = functional_call(block, {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}, (h,))
        out.append(h.flatten(1))
    head = {k[len("head."):]: v for k, v in params.items() if k.startswith("head.")}
    out.append(functional_call(net.head, head, (h.flatten(1),)))
    return out


def representation_similarity(learner, theta: Params, batch) -> torch.Tensor:
    """[tasks, 5]: linear CKA between Conv4's representation of each task's query images at θ and at
    the adapted φ_i, for the four blocks and the head (the analysis of Raghu et al. 2020)."""
    fixed = {k: v.detach() for k, v in theta.items()}
    phi = learner.adapt(fixed, batch)
    rows = []
    for i in range(batch.num_tasks):
        before = conv4_representations(learner.net, fixed, batch.x_ts[i])
        after = conv4_representations(learner.net, {k: v[i].detach() for k, v in phi.items()}, batch.x_ts[i])
        rows.append(torch.stack([linear_cka(a, b) for a, b in zip(before, after)]))
    return torch.stack(rows)


# --- registered reproductions at the papers' scale --------------------------------------------

@dataclass(frozen=True)
class MAMLPlusPlusOmniglotSettings(OmniglotComparisonSettings):
    """MAML++ on 5-way 1-shot Omniglot with its authors' configuration: meta-batch 16, 150 epochs of
    500 meta-iterations, the rest as in :class:`OmniglotComparisonSettings`."""
    tasks: int = 16
    iterations: int = 75_000


def _record(method: str, settings: OmniglotComparisonSettings, device) -> dict:
    s = settings
    rows, _ = compare_omniglot(s, device, methods=(method,), progress=s.scale != "quick")
    r = rows[0]
    value, where, key = PAPER_OMNIGLOT[method]
    return {"metrics": {"accuracy": {"value": r.mean, "ci95": r.ci95, "paper": value, "unit": "%"},
                        "seconds_per_iteration": {"value": r.seconds, "ci95": None, "paper": None, "unit": "s"}},
            "test_tasks": s.test_episodes,
            "notes": f"The paper's number: {where}. Batch norm uses batch statistics (transductive evaluation), "
                     "as in MAML's code; characters are split as in MAML's code."}


# GPU minutes at the papers' scale are estimates, not measurements: MAML's 5-way 1-shot run takes
# 4 minutes on an H200 with CUDA graphs (4 ms per meta-iteration, book/results); a learner's
# iteration is taken to cost MAML's times its inner steps (Meta-SGD and ANIL: one; CAVIA: two),
# and MAML++ runs eagerly (its schedules change between iterations), about 20 ms per step.
for _method, _minutes, _settings in [("metasgd", 5, OmniglotComparisonSettings),
                                     ("cavia", 8, OmniglotComparisonSettings),
                                     ("anil", 4, OmniglotComparisonSettings),
                                     ("mamlpp", 125, MAMLPlusPlusOmniglotSettings)]:
    experiment(f"{_method}-omniglot-5w1s", title=f"{LABELS[_method]}, Omniglot 5-way 1-shot",
               paper=PAPER_OMNIGLOT[_method][2], gpu_minutes=_minutes, settings=_settings)(
        lambda settings, device, m=_method: _record(m, settings, device))


@experiment("cavia-sinusoid", title="CAVIA, sinusoid regression, K = 10, 5 context parameters",
            paper="zintgraf2019cavia", gpu_minutes=5, settings=SinusoidComparisonSettings)
def cavia_sinusoid(settings: SinusoidComparisonSettings, device) -> dict:
    rows, _ = compare_sinusoid(settings, device, methods=("cavia",), progress=settings.scale != "quick")
    r = rows[0]
    return {"metrics": {"mse": {"value": r.mean, "ci95": r.ci95, "paper": None, "unit": "MSE"}},
            "test_tasks": settings.test_tasks,
            "notes": "MSE after one context step on K = 10 points, on 100 query points of each new task."}
