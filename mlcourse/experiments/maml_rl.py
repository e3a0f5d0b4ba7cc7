"""MAML for RL at the papers' scale: 2D navigation and the half-cheetah velocity and direction tasks.

Finn et al. (2017) show these results as curves; the numbers the book compares with are those of
the re-run of MAML-TRPO in Raghu et al. (2020, ANIL): average return after one adaptation step of
−20.3 ± 3.2 (2D navigation), −139.0 (half-cheetah velocity) and 170.4 (half-cheetah direction).

    python -m mlcourse.reproduce maml-rl-navigation            # GPU: a few minutes
    python -m mlcourse.reproduce maml-rl-cheetah-velocity      # MuJoCo on the CPU: hours, see notes

Chapter 9 reads :class:`ChapterSettings` (the navigation settings with TRPO's and the evaluation's
details) and evaluates with :func:`adaptation_curves`, every policy under every step-size schedule
in one batch, the paper's schedule being :func:`evaluation_rates` (α, then α/2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import distributed
from ..settings import Settings
from ..stats import mean_ci95
from ..train import fit
from . import experiment


@dataclass(frozen=True)
class NavigationSettings(Settings):
    """Finn et al. 2017, appendix A.2 and the reference code, 2D navigation: α = 0.1, 20
    trajectories per task, meta-batch 20, horizon 100, TRPO with δ = 0.01, γ = 0.99, GAE with
    λ_GAE = 1, a 100-100 ReLU policy, 500 meta-iterations."""

    iterations: int = 500
    tasks: int = 20                   # meta-batch
    trajectories: int = 20            # per task, before and after adaptation
    horizon: int = 100                # T
    hidden: tuple = (100, 100)
    inner_lr: float = 0.1             # α
    gamma: float = 0.99               # γ
    gae_lambda: float = 1.0           # λ_GAE
    max_kl: float = 0.01              # TRPO's δ
    fisher_fraction: float = 1.0      # share of the trajectories for the Fisher-vector products
    estimator: str = "dice"
    eval_tasks: int = 40

    SCALES = {"book": {"iterations": 100, "hidden": (64, 64), "fisher_fraction": 0.25},
              "quick": {"iterations": 2, "tasks": 2, "trajectories": 2, "horizon": 10, "hidden": (8,),
                        "eval_tasks": 4}}


@dataclass(frozen=True)
class CheetahSettings(NavigationSettings):
    """The half-cheetah tasks of Finn et al. 2017: meta-batch 40, horizon 200, otherwise as for
    navigation."""

    tasks: int = 40
    horizon: int = 200

    SCALES = {"book": {"iterations": 10, "tasks": 10, "trajectories": 10, "fisher_fraction": 0.25, "eval_tasks": 10},
              "quick": {"iterations": 1, "tasks": 2, "trajectories": 2, "horizon": 10, "hidden": (8,),
                        "eval_tasks": 2}}


@dataclass(frozen=True)
class ChapterSettings(NavigationSettings):
    """Chapter 9's runs on 2D navigation, with the paper's settings as defaults (those of
    :class:`NavigationSettings`) and the details the chapter names besides.

    TRPO's conjugate gradient (10 steps, damping 1e-5) and line search (factor 0.8, 15 tries) are
    rllab's, which the reference code uses. The evaluation follows Finn et al. 2017, appendix A.2:
    α for the first test-time step, α/2 for every later one, up to three steps, on 40 new goals (the
    reference code's test script). The Adam rate of the chapter's comparison has no paper value.
    The half-cheetah fields size the chapter's demonstration (the paper: meta-batch 40, 20
    trajectories, T = 200)."""

    iterations: int = 500
    cg_iters: int = 10
    cg_damping: float = 1e-5          # added to F in the conjugate gradient: F + 1e-5 I
    backtrack: float = 0.8            # line search: shrink the step by this factor
    line_search_steps: int = 15
    eval_steps: int = 3               # test-time policy-gradient steps
    eval_later_lr_factor: float = 0.5  # α·factor after the first test-time step (paper, A.2)
    adam_lr: float = 3e-3             # the first-order comparison (the book's choice)
    seed: int = 1
    frames: int = 34                  # frames of the chapter's animation
    cheetah_tasks: int = 40
    cheetah_trajectories: int = 20
    cheetah_horizon: int = 200
    cheetah_iterations: int = 500

    SCALES = {"book": {"iterations": 60, "hidden": (64, 64), "fisher_fraction": 0.25, "cheetah_tasks": 5,
                       "cheetah_trajectories": 5, "cheetah_iterations": 3},
              "quick": {"iterations": 2, "tasks": 5, "trajectories": 5, "hidden": (64, 64), "eval_tasks": 6,
                        "frames": 8, "cheetah_tasks": 2, "cheetah_trajectories": 2, "cheetah_horizon": 20,
                        "cheetah_iterations": 1}}


def adaptation_curves(learner, thetas: dict, tasks: torch.Tensor, schedules: dict, trajectories=None) -> dict:
    """Mean return on every task after 0, 1, ..., k policy-gradient steps, for every policy of
    ``thetas`` ({name: θ}) under every step-size schedule of ``schedules`` ({name: (α_1, ..., α_k)},
    all of one length k): {(policy, schedule): [tasks, k + 1]}.

    Each step samples fresh trajectories of the current policy and takes one step of its
    schedule's size, as :meth:`MAMLRL.adaptation_curve` does with one size for every step. All the
    (policy, schedule) pairs run as one batch of tasks, so the cost is that of k + 1 roll-outs
    whatever their number (a roll-out costs about as much for a few tasks as for a few hundred on
    a CPU). ``schedules={"paper": (α, α/2, α/2)}`` is the evaluation of Finn et al. (2017, A.2)."""
    from ..rl.rollout import rollout

    lengths = {len(rates) for rates in schedules.values()}
    if len(lengths) != 1:
        raise ValueError(f"every schedule must have the same number of steps, got {sorted(lengths)}.")
    steps, n = lengths.pop(), learner.trajectories if trajectories is None else trajectories
    pairs = [(name, schedule) for name in thetas for schedule in schedules]
    per = tasks.shape[0]
    params = {k: torch.cat([thetas[name][k].detach().expand(per, *thetas[name][k].shape) for name, _ in pairs])
              for k in next(iter(thetas.values()))}
    rates = torch.tensor([[schedules[schedule][j] for _, schedule in pairs] for j in range(steps)],
                         dtype=tasks.dtype, device=tasks.device).repeat_interleave(per, dim=1)
    all_tasks = tasks.repeat(len(pairs), *([1] * (tasks.dim() - 1)))
    curve = []
    for j in range(steps + 1):
        traj = rollout(learner.env, learner.policy, params, all_tasks, n, per_task=True)
        curve.append(traj.returns.mean(1))
        if j < steps:  # φ + α_j ∇V̂(φ), with one α_j per task: the step of size 1 gives ∇V̂
            moved = learner.inner_step(params, traj, per_task=True, lr=1.0)
            params = {k: (v + rates[j].view(-1, *([1] * (v.dim() - 1))) * (moved[k] - v)).detach()
                      for k, v in params.items()}
    curve = torch.stack(curve, 1)
    return {pair: curve[i * per:(i + 1) * per] for i, pair in enumerate(pairs)}


def evaluation_rates(settings: ChapterSettings, steps: int | None = None, halve: bool = True) -> tuple:
    """The test-time step sizes: α, then α·eval_later_lr_factor (``halve``) or α again."""
    steps = settings.eval_steps if steps is None else steps
    later = settings.inner_lr * (settings.eval_later_lr_factor if halve else 1.0)
    return tuple([settings.inner_lr] + [later] * (steps - 1))[:steps]


def _metric(values: torch.Tensor, paper=None, unit="return") -> dict:
    mean, half = mean_ci95(values.detach().cpu())
    return {"value": float(mean), "ci95": float(half), "paper": paper, "unit": unit}


def make_learner(env, settings: NavigationSettings, inner_steps: int = 1):
    """MAML-TRPO's learner and its TRPO meta-optimiser, from the settings."""
    from ..rl.maml_rl import MAMLRL
    from ..rl.policy import GaussianPolicy
    from ..rl.trpo import TRPO

    s = settings
    policy = GaussianPolicy(env.obs_dim, env.act_dim, hidden=s.hidden).to(env.device)
    learner = MAMLRL(env, policy, inner_lr=s.inner_lr, trajectories=s.trajectories, gamma=s.gamma,
                     gae_lambda=s.gae_lambda, estimator=s.estimator, inner_steps=inner_steps)
    return learner, TRPO(max_kl=s.max_kl, fisher_fraction=s.fisher_fraction)


def train(env, settings: NavigationSettings, inner_steps: int = 1, progress: bool = False, desc: str = "MAML-TRPO",
          graph: bool = False):
    """Meta-train θ with MAML-TRPO (inner_steps=0: multi-task TRPO, the pretrained baseline);
    ``graph``: replay each meta-iteration as a CUDA graph on a GPU (environments written in torch)."""
    learner, trpo = make_learner(env, settings, inner_steps)
    theta = learner.init_params()
    state = {"theta": theta, "env": env} if hasattr(env, "state_dict") else {"theta": theta}
    history = fit(lambda it: learner.step(theta, trpo, env.sample_tasks(distributed.share(settings.tasks))),
                  settings.iterations, log_every=max(1, settings.iterations // 20), progress=progress, desc=desc,
                  state=state, graph=graph)
    return learner, theta, history


def _run(env, settings: NavigationSettings, paper_after: float, baselines: bool, graph: bool = False) -> dict:
    learner, theta, history = train(env, settings, graph=graph)
    eval_goals = env.sample_tasks(settings.eval_tasks)
    curve = learner.adaptation_curve(theta, eval_goals, steps=1)
    metrics = {"return_after_1_step": _metric(curve[:, 1], paper_after),
               "return_before_adaptation": _metric(curve[:, 0])}
    if baselines:
        _, pretrained, _ = train(env, settings, inner_steps=0, graph=graph)
        random_init = learner.init_params()
        metrics["pretrained_after_1_step"] = _metric(learner.adaptation_curve(pretrained, eval_goals, steps=1)[:, 1])
        metrics["random_init_after_1_step"] = _metric(learner.adaptation_curve(random_init, eval_goals, steps=1)[:, 1])
    its, after = history.curve("return_after")
    return {"metrics": metrics,
            "curve": {"iteration": its.tolist(), "return_after": after.tolist(),
                      "return_before": history.curve("return_before")[1].tolist()}}


@experiment("maml-rl-navigation", title="MAML-TRPO on 2D navigation: return after one policy-gradient step",
            paper="raghu2020anil", gpu_minutes=4, settings=NavigationSettings)
def navigation(settings: NavigationSettings, device) -> dict:
    from ..rl.navigation import Navigation2D

    env = Navigation2D(horizon=settings.horizon, device=device)
    result = _run(env, settings, paper_after=-20.3, baselines=True, graph=True)
    result["notes"] = ("Evaluation on new goals, 20 trajectories each, one step α = 0.1; 95% interval over tasks. "
                       "Baselines: multi-task TRPO on the same task distribution (pretrained) and the random "
                       "initialisation, each adapted with the same step. Paper value: the MAML re-run of "
                       "Raghu et al. (2020), -20.3 ± 3.2; Finn et al. (2017) show the curve only.")
    return result


def _cheetah(kind: str, settings: CheetahSettings, device, paper_after: float) -> dict:
    from ..rl.cheetah import HalfCheetahTasks

    env = HalfCheetahTasks(kind, horizon=settings.horizon, device=device)
    try:
        result = _run(env, settings, paper_after=paper_after, baselines=False)
    finally:
        env.close()
    result["notes"] = (f"Half-cheetah {kind} (gymnasium HalfCheetah-v5, reward of Finn et al. 2017). MuJoCo runs "
                       "on the CPU through a SyncVectorEnv: at the paper's scale one meta-iteration simulates "
                       "320,000 steps, about a minute on one core, so the run takes hours whatever the GPU; "
                       "it needs gymnasium[mujoco] on the machine. Paper value: the MAML re-run of Raghu et al. (2020).")
    return result


@experiment("maml-rl-cheetah-velocity", title="MAML-TRPO on half-cheetah goal velocity: return after one step",
            paper="raghu2020anil", gpu_minutes=540, settings=CheetahSettings)
def cheetah_velocity(settings: CheetahSettings, device) -> dict:
    return _cheetah("velocity", settings, device, -139.0)


@experiment("maml-rl-cheetah-direction", title="MAML-TRPO on half-cheetah goal direction: return after one step",
            paper="raghu2020anil", gpu_minutes=540, settings=CheetahSettings)
def cheetah_direction(settings: CheetahSettings, device) -> dict:
    return _cheetah("direction", settings, device, 170.4)
