"""iMAML experiments: sinusoid regression beside MAML, and 5-way 1-shot Omniglot (Rajeswaran et
al. 2019, with the gradient-descent inner solver: λ = 2, 5 conjugate-gradient steps)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import distributed, train
from ..evaluation import evaluate
from ..meta.imaml import IMAML
from ..meta.learner import apply_gradients
from ..nets import MLP, Conv4
from ..settings import Settings
from ..stats import mean_ci95
from ..tasks import SinusoidFamily, load_omniglot
from . import experiment
from .maml import omniglot_samplers


@dataclass(frozen=True)
class SinusoidSettings(Settings):
    """iMAML on the sinusoid family of Finn et al. 2017 (the iMAML paper has no sinusoid
    experiment; these are the book's). Tasks of large amplitude have a sharply curved loss: inner
    steps larger than about 0.01 make the inner solver diverge on some tasks, hence the small step
    and the 25 steps."""

    tasks: int = 25
    shots: int = 10
    lam: float = 2.0          # λ
    inner_lr: float = 0.005
    inner_steps: int = 25
    cg_steps: int = 5
    damping: float = 0.0
    outer_lr: float = 1e-3    # β, Adam
    iterations: int = 2_000

    SCALES = {"book": {"iterations": 1_000}, "quick": {"iterations": 60}}


@dataclass(frozen=True)
class OmniglotSettings(Settings):
    """The paper's Omniglot setting for iMAML-GD (λ = 2.0, 5 CG steps); the rest follows the
    authors' code: 16 inner steps of 0.1, meta-batch 32, Adam with β = 1e-3. Their CG solves
    2v + Hv/(λ + 10) = ∇L^ts, which is ((1 + 11) I + H/λ) g = ∇L^ts up to a constant factor
    (irrelevant under Adam), hence damping 11: without it 5 CG steps cannot solve the system
    (Conv4's curvature is far above λ; relative residual above 1). Their evaluation adapts with 16
    plain gradient steps (λ = 0 at test time)."""

    ways: int = 5
    shots: int = 1
    queries: int = 1
    tasks: int = 32
    lam: float = 2.0
    inner_lr: float = 0.1
    inner_steps: int = 16
    cg_steps: int = 5
    damping: float = 11.0
    outer_lr: float = 1e-3
    test_steps: int = 16
    test_lam: float = 0.0
    iterations: int = 60_000
    test_episodes: int = 600
    rotations: str = "per_class"  # as in the authors' code (and MAML's)

    SCALES = {"book": {"iterations": 200, "tasks": 8, "test_episodes": 300},
              "quick": {"iterations": 2, "tasks": 2, "test_episodes": 10}}


PAPER_ACCURACY = {1: 99.16}  # 5-way 1-shot, GD inner solver (99.50 with the Hessian-free solver)


def train_sinusoid(settings: SinusoidSettings, device, seed: int = 0, progress: bool = True):
    """iMAML on the sinusoid family; returns (learner, θ, history)."""
    s = settings
    torch.manual_seed(seed)
    family = SinusoidFamily()
    learner = IMAML(MLP(), "mse", lam=s.lam, inner_lr=s.inner_lr, inner_steps=s.inner_steps, cg_steps=s.cg_steps,
                    damping=s.damping, on_cg_failure="ignore")
    theta = learner.init_params(device)
    optimizer = torch.optim.Adam(theta.values(), lr=s.outer_lr, capturable=torch.device(device).type == "cuda")
    history = train.fit(lambda it: learner.step(theta, optimizer, family.sample(distributed.share(s.tasks), s.shots,
                                                                                 device=device)),
                        s.iterations, log_every=max(1, s.iterations // 50), progress=progress,
                        desc="iMAML on sinusoids", state={"theta": theta, "optimizer": optimizer}, graph=True)
    return learner, theta, history


def omniglot_learner(settings: OmniglotSettings) -> IMAML:
    s = settings
    return IMAML(Conv4(s.ways, downsample="stride"), "cross_entropy", lam=s.lam, inner_lr=s.inner_lr,
                 inner_steps=s.inner_steps, cg_steps=s.cg_steps, damping=s.damping, on_cg_failure="ignore",
                 test_steps=s.test_steps, test_lam=s.test_lam)


def train_omniglot(settings: OmniglotSettings, device, sampler=None, seed: int = 0, progress: bool = True):
    """iMAML on N-way K-shot Omniglot; returns (learner, θ, history)."""
    s = settings
    torch.manual_seed(seed)
    sampler = sampler or omniglot_samplers(s.ways, s.shots, s.queries, device, rotations=s.rotations)[0]
    learner = omniglot_learner(s)
    theta = learner.init_params(device)
    optimizer = torch.optim.Adam(theta.values(), lr=s.outer_lr, capturable=torch.device(device).type == "cuda")
    history = train.fit(lambda it: learner.step(theta, optimizer, sampler.sample(distributed.share(s.tasks))),
                        s.iterations, log_every=max(1, min(100, s.iterations // 20)), progress=progress,
                        desc=f"iMAML {s.shots}-shot Omniglot", state={"theta": theta, "optimizer": optimizer},
                        graph=True)
    return learner, theta, history


@experiment("imaml-omniglot-5w1s", title="iMAML (GD inner solver), Omniglot 5-way 1-shot",
            paper="rajeswaran2019imaml", gpu_minutes=300,  # H200: ~0.3 s per meta-iteration × 60,000
            settings=OmniglotSettings)
def imaml_omniglot(settings: OmniglotSettings, device) -> dict:
    omniglot = load_omniglot(device=device)
    train_sampler, test_sampler = omniglot_samplers(settings.ways, settings.shots, settings.queries, device,
                                                    omniglot=omniglot, rotations=settings.rotations)
    learner, theta, _ = train_omniglot(settings, device, sampler=train_sampler, progress=settings.scale != "quick")
    mean, half = mean_ci95(evaluate(learner, theta, test_sampler, settings.test_episodes)["accuracy"])
    return {"metrics": {"accuracy": {"value": 100 * float(mean), "ci95": 100 * float(half),
                                     "paper": PAPER_ACCURACY[settings.shots], "unit": "%"}},
            "test_tasks": settings.test_episodes,
            "notes": "The paper's 99.50% uses a Hessian-free inner solver; this is the gradient-descent solver "
                     "(paper: 99.16%). Evaluation is transductive (batch statistics), as for MAML."}


# --- where iMAML wins: many inner steps in one memory budget ------------------------------------


@dataclass(frozen=True)
class ManyStepsSettings(Settings):
    """iMAML against MAML where more adaptation pays: sinusoids with MAML's α = 0.01, where MAML's
    error after adaptation keeps falling as its inner steps grow (the book's experiment; the paper
    has no sinusoid experiment). Both methods use the 1-40-40-1 MLP with tanh units: iMAML's
    implicit gradient assumes a smooth training loss, and on the ReLU network the inner solvers
    stall at its kinks (:func:`inner_stall` measures it). iMAML solves its inner problem with the
    accelerated solver (Nesterov momentum, per-task steps, restarts) for 100 steps at λ = 1, a
    weaker pull than MAML's 25 steps of 0.01 exert (λ ≈ 1/(kα) = 4), so its φ_i may move further;
    its memory does not grow with the steps. CG gets 10 iterations, twice the paper's 5, because
    I + H/λ is worse conditioned at λ = 1 than at the paper's λ = 2 with damping. MAML runs with
    one step, with the most steps that fit in iMAML's measured memory, and with ``maml_steps``."""

    tasks: int = 25
    shots: int = 10
    activation: str = "tanh"
    maml_lr: float = 0.01          # α of Finn et al. (2017)
    maml_steps: int = 25           # the long MAML run
    lam: float = 1.0               # λ
    inner_solver: str = "accelerated"
    inner_lr: float = 0.01         # the adaptive solver's first step
    inner_steps: int = 100
    cg_steps: int = 10
    outer_lr: float = 1e-3         # β, Adam
    iterations: int = 10_000
    test_tasks: int = 300
    budget_steps: tuple = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 25)  # MAML step counts whose memory is measured

    SCALES = {"book": {"iterations": 500},
              "quick": {"iterations": 10, "test_tasks": 40, "inner_steps": 30, "budget_steps": (1, 2, 4, 8, 25)}}


def many_steps_learners(settings: ManyStepsSettings):
    """(iMAML, a function k ↦ MAML with k steps of α) on the sinusoid MLP."""
    from ..meta.maml import MAML
    s = settings
    imaml = IMAML(MLP(activation=s.activation), "mse", lam=s.lam, inner_lr=s.inner_lr, inner_steps=s.inner_steps,
                  inner_solver=s.inner_solver, cg_steps=s.cg_steps, on_cg_failure="ignore")
    return imaml, lambda k: MAML(MLP(activation=s.activation), "mse", inner_lr=s.maml_lr, inner_steps=k)


def inner_stall(activations=("relu", "tanh"), steps=(100, 1000), lam: float = 1.0, tasks: int = 25,
                shots: int = 10, seed: int = 0) -> dict:
    """How far each solver gets on the inner problem of a freshly initialised sinusoid MLP, by
    activation: {(activation, solver): [median inner gradient norm after each of ``steps``]}. On
    the ReLU network the norms stop falling (across a kink the gradient jumps, so it stays up);
    on the tanh network they keep falling."""
    batch = SinusoidFamily().sample(tasks, shots, generator=torch.Generator().manual_seed(seed))
    out = {}
    for activation in activations:
        for solver in ("monotone", "accelerated"):
            norms = []
            for k in steps:
                torch.manual_seed(seed)
                learner = IMAML(MLP(activation=activation), "mse", lam=lam, inner_lr=0.01, inner_steps=k,
                                inner_solver=solver, on_cg_failure="ignore")
                with torch.no_grad():
                    norms.append(float(learner.solve_inner(learner.init_params("cpu"), batch)[1].median()))
            out[activation, solver] = norms
    return out


def meta_gradient_cost(learner, batch, device, repeats: int = 3) -> tuple[float, int | None]:
    """(seconds, peak bytes) of one meta-gradient of ``learner`` at a fresh θ on ``batch``."""
    from .. import profile
    theta = learner.init_params(device)

    def call():
        return learner.meta_gradient(theta, batch)

    call()
    memory = profile.peak_bytes(call, torch.device(device))
    return profile.seconds(call, torch.device(device), repeats=repeats), memory


@dataclass
class StepsRow:
    label: str
    method: str
    steps: int                 # inner steps
    mse: tuple                 # (mean, 95% half-width) after adaptation on the test tasks
    memory: int | None         # peak bytes of one meta-gradient
    seconds: float             # one meta-gradient
    history: object


def many_steps(settings: ManyStepsSettings, device, seed: int = 0, progress: bool = False):
    """Train MAML with 1, the most that fit iMAML's memory and ``maml_steps`` inner steps, and
    iMAML; evaluate each with its own adaptation. Returns (rows, details): details holds the
    MAML memory curve, the chosen budget and iMAML's θ and learner."""
    from .maml import SinusoidSettings, sinusoid_test_tasks
    s = settings
    family = SinusoidFamily()
    probe = family.sample(s.tasks, s.shots, device=device, generator=torch.Generator().manual_seed(seed))
    imaml, maml = many_steps_learners(s)
    imaml_cost = meta_gradient_cost(imaml, probe, device)
    maml_costs = {k: meta_gradient_cost(maml(k), probe, device) for k in s.budget_steps}
    fits = [k for k, (_, m) in maml_costs.items() if m is not None and imaml_cost[1] is not None and m <= imaml_cost[1]]
    budget = max(fits, default=1)
    test = sinusoid_test_tasks(SinusoidSettings(test_tasks=s.test_tasks), s.shots, device)

    def fit(learner):
        torch.manual_seed(seed)
        theta = learner.init_params(device)
        optimizer = torch.optim.Adam(theta.values(), lr=s.outer_lr)
        history = train.fit(lambda it: learner.step(theta, optimizer, family.sample(s.tasks, s.shots, device=device)),
                            s.iterations, log_every=max(1, s.iterations // 30), progress=progress,
                            desc=f"{learner!r}"[:40], state={"theta": theta, "optimizer": optimizer})
        return theta, history

    rows, thetas = [], {}
    for k in sorted({1, budget, s.maml_steps}):
        learner = maml(k)
        theta, history = fit(learner)
        curve = learner.adaptation_curve(theta, test, k)["loss"][:, k].cpu()
        seconds, memory = maml_costs[k] if k in maml_costs else meta_gradient_cost(learner, probe, device)
        rows.append(StepsRow(f"MAML, {k} step{'s' * (k > 1)}", "maml", k, mean_ci95(curve), memory, seconds, history))
    theta, history = fit(imaml)
    with torch.no_grad():
        curve = imaml.adaptation_curve(theta, test, s.inner_steps)["loss"][:, -1].cpu()
    rows.append(StepsRow(f"iMAML, λ = {s.lam:g}", "imaml", s.inner_steps, mean_ci95(curve),
                         imaml_cost[1], imaml_cost[0], history))
    _, test_norms = imaml.solve_inner(theta, test)
    residual = imaml.meta_gradient(theta, test).metrics["cg_residual"]
    return rows, {"budget": budget, "maml_costs": maml_costs, "imaml_cost": imaml_cost, "theta": theta,
                  "learner": imaml, "test_inner_norm": test_norms.cpu(), "test_cg_residual": residual.cpu()}


def many_steps_table(rows) -> str:
    """The accuracy/memory/time table of :func:`many_steps`, in Markdown."""
    lines = ["| method | inner steps | MSE after adaptation | peak memory (MiB) | ms per meta-gradient |",
             "| --- | --- | --- | --- | --- |"]
    for r in rows:
        memory = "n/a" if r.memory is None else f"{r.memory / 2**20:.2f}"
        lines.append(f"| {r.label} | {r.steps} | {r.mse[0]:.3f} ± {r.mse[1]:.3f} | {memory} | {1e3 * r.seconds:.0f} |")
    return "\n".join(lines)


# --- where iMAML diverges: a fixed inner step on a steep task ------------------------------------


@dataclass(frozen=True)
class DivergenceSettings(Settings):
    """iMAML-GD on sinusoids with a large λ and a fixed inner step: meta-training moves θ to where
    some tasks' curvature exceeds what the step can take (2/step − λ), the inner loop diverges on
    them and the meta-gradient with it. The monotone solver, which refuses a step that raises the
    objective, runs the same settings. The step is MAML's α = 0.01, twice the sinusoid section's,
    so that steep tasks pass the limit sooner (the mechanism does not depend on the step)."""

    tasks: int = 25
    shots: int = 10
    lam: float = 10.0
    inner_lr: float = 0.01
    inner_steps: int = 25
    cg_steps: int = 5
    outer_lr: float = 1e-3
    iterations: int = 1_000

    SCALES = {"book": {"iterations": 400}, "quick": {"iterations": 15}}


def divergence_runs(settings: DivergenceSettings, device, seed: int = 0) -> dict:
    """Meta-train with the fixed-step and the monotone inner solver; each run stops at its first
    non-finite meta-loss. Per solver: the query loss and the largest inner gradient norm per
    iteration, where it diverged (None if it did not), and the θ and batch of its last finite
    iteration (for :func:`inner_trajectories`)."""
    s = settings
    family = SinusoidFamily()
    runs = {}
    for solver in ("gd", "monotone"):
        learner = IMAML(MLP(), "mse", lam=s.lam, inner_lr=s.inner_lr, inner_steps=s.inner_steps,
                        cg_steps=s.cg_steps, inner_solver=solver, on_cg_failure="ignore")
        torch.manual_seed(seed)
        theta = learner.init_params(device)
        optimizer = torch.optim.Adam(theta.values(), lr=s.outer_lr)
        loss, inner, diverged_at = [], [], None
        last = ({k: v.detach().clone() for k, v in theta.items()}, None)
        for it in range(s.iterations):
            batch = family.sample(s.tasks, s.shots, device=device)
            before = {k: v.detach().clone() for k, v in theta.items()}
            grads, metrics = learner.meta_gradient(theta, batch)
            value, worst = float(metrics["loss"].mean()), float(metrics["inner_grad_norm"].max())
            if not (torch.isfinite(torch.tensor([value, worst])).all()):
                diverged_at = it
                break
            loss.append(value)
            inner.append(worst)
            last = (before, batch)
            apply_gradients(theta, grads)
            optimizer.step()
        runs[solver] = {"learner": learner, "loss": loss, "inner_max": inner, "diverged_at": diverged_at,
                        "theta": last[0], "batch": last[1]}
    return runs


def inner_trajectories(settings: DivergenceSettings, theta, batch, steps: int | None = None) -> dict:
    """The regularised objective L(φ) + λ/2‖φ − θ‖² after 0..steps inner steps, on the task of
    ``batch`` where the fixed step ends highest, for both solvers: {solver: [steps + 1] values}."""
    from ..meta.functional import batched_loss
    s = settings
    steps = s.inner_steps if steps is None else steps
    out = {}
    for solver in ("gd", "monotone"):
        learner = IMAML(MLP(), "mse", lam=s.lam, inner_lr=s.inner_lr, inner_steps=s.inner_steps,
                        inner_solver=solver, on_cg_failure="ignore")
        values = []
        for j in range(steps + 1):
            phi = ({k: v.expand(batch.num_tasks, *v.shape) for k, v in theta.items()} if j == 0
                   else learner.adapt(theta, batch, steps=j))
            with torch.no_grad():
                fit = batched_loss(learner.net, "mse", phi, batch.x_tr, batch.y_tr)["loss"]
                prox = sum((phi[k] - theta[k]).pow(2).flatten(1).sum(1) for k in phi)
            values.append(fit + s.lam / 2 * prox)
        out[solver] = torch.stack(values, 1)   # [tasks, steps + 1]
    worst = int(torch.nan_to_num(out["gd"][:, -1], nan=float("inf")).argmax())
    return {solver: v[worst].cpu() for solver, v in out.items()} | {"task": worst}


def largest_curvature(net, theta, batch, iterations: int = 30) -> torch.Tensor:
    """The eigenvalue of largest magnitude of each task's training-loss Hessian at θ ([tasks]),
    by power iteration with Hessian-vector products: the curvature that limits a fixed inner step."""
    from torch.func import grad, jvp, vmap

    from ..meta.functional import task_loss
    loss = task_loss(net, "mse")
    theta = {k: v.detach() for k, v in theta.items()}

    def one(x, y):
        v = {k: torch.randn_like(p) for k, p in theta.items()}
        value = torch.zeros(())
        for _ in range(iterations):
            norm = sum(t.pow(2).sum() for t in v.values()).sqrt()
            v = {k: t / norm for k, t in v.items()}
            hv = jvp(lambda p: grad(loss)(p, x, y), (theta,), (v,))[1]
            value = sum((hv[k] * v[k]).sum() for k in v)
            v = hv
        return value

    return vmap(one, randomness="different")(batch.x_tr, batch.y_tr)
