"""The MAML and first-order MAML experiments of the chapters, at three scales.

The chapters call the training and evaluation functions here at the book's scale; the
reproduction command runs the same functions at the papers' scale. The settings classes below
are the one place where each experiment's numbers are written down.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import distributed, train
from ..evaluation import evaluate
from ..graphs import fast_step
from ..meta.maml import MAML
from ..nets import MLP, Conv4
from ..settings import Settings
from ..stats import mean_ci95
from ..tasks import EpisodeSampler, SinusoidFamily, TaskBatch, load_omniglot
from . import experiment

# --- sinusoid regression -----------------------------------------------------------------------


@dataclass(frozen=True)
class SinusoidSettings(Settings):
    """Finn et al. 2017, §5.1: MLP 1-40-40-1, K = 10, one inner step α = 0.01, meta-batch 25,
    Adam with β = 0.001 for 70,000 meta-iterations; evaluated by fine-tuning with K points for up
    to 10 steps of size α on new tasks, judged on 100 query points each."""

    tasks: int = 25            # meta-batch: tasks per meta-iteration
    shots: int = 10            # K, points in D^tr
    inner_lr: float = 0.01     # α
    inner_steps: int = 1       # gradient steps in meta-training
    outer_lr: float = 1e-3     # β, Adam
    iterations: int = 70_000   # meta-iterations
    test_tasks: int = 600      # new tasks for the evaluation
    test_queries: int = 100    # query points per test task
    test_steps: int = 10       # the paper's figure shows up to 10 fine-tuning steps

    SCALES = {"book": {"iterations": 10_000}, "quick": {"iterations": 100, "test_tasks": 100}}


def train_sinusoid(method: str, settings: SinusoidSettings, device, seed: int = 0, progress: bool = True):
    """Meta-train on the sinusoid family. method: "maml", "fomaml" or "pretrained" (one θ trained
    on all tasks by plain regression, the paper's baseline). Returns (learner, θ, history); the
    learner's adaptation_curve evaluates θ."""
    if method not in ("maml", "fomaml", "pretrained"):
        raise ValueError(f"method must be 'maml', 'fomaml' or 'pretrained', got {method!r}.")
    if not isinstance(settings, SinusoidSettings):
        raise TypeError(f"settings must be SinusoidSettings (e.g. SinusoidSettings.at()), got {settings!r}.")
    s = settings
    torch.manual_seed(seed)
    family = SinusoidFamily()
    learner = MAML(MLP(), "mse", inner_lr=s.inner_lr, inner_steps=s.inner_steps, first_order=method == "fomaml",
                   test_steps=s.test_steps)
    theta = learner.init_params(device)
    optimizer = torch.optim.Adam(theta.values(), lr=s.outer_lr, capturable=torch.device(device).type == "cuda")

    if method == "pretrained":
        def step():
            # Plain regression on the pooled points of many tasks: min_θ Σ_i L(θ, D_i).
            batch = family.sample(s.tasks, s.shots, device=device)
            optimizer.zero_grad(set_to_none=True)
            loss = learner.loss(theta, batch.x_tr.reshape(-1, 1), batch.y_tr.reshape(-1, 1))
            loss.backward()
            optimizer.step()
            return {"loss": loss.detach()}
    else:
        def step():
            return learner.step(theta, optimizer, family.sample(distributed.share(s.tasks), s.shots, device=device))
    run = fast_step(step, torch.device(device))
    history = train.fit(lambda it: run(), s.iterations, log_every=max(1, s.iterations // 50), progress=progress,
                        desc=f"{method} on sinusoids", hint=learner.divergence_hint(),
                        state={"theta": theta, "optimizer": optimizer})
    return learner, theta, history


def sinusoid_test_tasks(settings: SinusoidSettings, shots: int, device, seed: int = 1000):
    """A fixed set of new test tasks: ``shots`` points to adapt on, ``test_queries`` to judge."""
    return SinusoidFamily().sample(settings.test_tasks, shots, settings.test_queries, device=device,
                                   generator=torch.Generator().manual_seed(seed))


@experiment("maml-sinusoid", title="MAML, sinusoid regression, K = 10", paper="finn2017maml", gpu_minutes=2,
            settings=SinusoidSettings)
def maml_sinusoid(settings: SinusoidSettings, device) -> dict:
    learner, theta, _ = train_sinusoid("maml", settings, device, progress=settings.scale != "quick")
    test = sinusoid_test_tasks(settings, settings.shots, device)
    curve = learner.adaptation_curve(theta, test, settings.test_steps)["loss"]
    metrics = {}
    for steps in (1, settings.test_steps):
        mean, half = mean_ci95(curve[:, steps].cpu())
        metrics[f"mse_after_{steps}_step{'s' if steps > 1 else ''}"] = {
            "value": float(mean), "ci95": float(half), "paper": None, "unit": "MSE"}
    return {"metrics": metrics, "test_tasks": test.num_tasks,
            "notes": "The paper reports this result as a plot (its Figure 3), not a number."}


# --- Omniglot ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OmniglotSettings(Settings):
    """Finn et al. 2017, §5.2 and their reference code, 5-way Omniglot: Conv4 with strided
    convolutions, meta-batch 32, α = 0.4, one inner step in training and three at test, Adam with
    β = 0.001, 60,000 meta-iterations, K queries per class, 600 test episodes."""

    ways: int = 5              # N
    shots: int = 1             # K
    queries: int = 1           # Q per class (the reference code: as many as K)
    tasks: int = 32            # meta-batch
    inner_lr: float = 0.4      # α
    inner_steps: int = 1       # in meta-training
    test_steps: int = 3        # at test time
    outer_lr: float = 1e-3     # β, Adam
    iterations: int = 60_000
    test_episodes: int = 600
    first_order: bool = False
    downsample: str = "stride"  # the reference code's Conv4 for Omniglot
    rotations: str = "per_class"  # the reference code: N characters, then a random quarter turn per class
    channels: int = 64         # Conv4's width
    # Model selection (the book's choice; used when a validation sampler is given): every
    # ``eval_every`` meta-iterations, the accuracy on ``val_episodes`` fixed episodes of the
    # meta-validation characters; the θ of the best evaluation is kept.
    val_episodes: int = 100
    eval_every: int = 1000

    SCALES = {"book": {"iterations": 600, "tasks": 16, "test_episodes": 300, "eval_every": 50},
              "quick": {"iterations": 3, "tasks": 4, "test_episodes": 20, "val_episodes": 10, "eval_every": 1}}


@dataclass(frozen=True)
class Omniglot5ShotSettings(OmniglotSettings):
    shots: int = 5
    queries: int = 5


@dataclass(frozen=True)
class FirstOrderOmniglotSettings(OmniglotSettings):
    first_order: bool = True


def omniglot_samplers(ways: int, shots: int, queries: int, device, omniglot=None, rotations: str = "per_class"):
    """Episode samplers for meta-training and meta-testing on the disjoint character splits of
    the MAML code, with rotations by multiples of 90° as new classes (``rotations``: "per_class"
    as in the MAML and iMAML code, "as_classes" as in the Reptile code; see
    :class:`mlcourse.tasks.EpisodeSampler`)."""
    omniglot = load_omniglot(device=device) if omniglot is None else omniglot
    split = omniglot.split("maml")
    return tuple(EpisodeSampler(omniglot.images[split[part]], ways, shots, queries, rotations=rotations, device=device)
                 for part in ("train", "test"))


def omniglot_learner(settings: OmniglotSettings) -> MAML:
    s = settings
    return MAML(Conv4(s.ways, channels=s.channels, downsample=s.downsample), "cross_entropy", inner_lr=s.inner_lr,
                inner_steps=s.inner_steps, first_order=s.first_order, test_steps=s.test_steps)


def omniglot_split_samplers(ways: int, shots: int, queries: int, device, omniglot=None,
                            rotations: str | bool = "per_class", labels: str = "shuffled",
                            characters: int | None = None) -> dict[str, EpisodeSampler]:
    """Episode samplers of the meta-train, meta-validation and meta-test characters of the MAML
    code's split (1,100 / 100 / 423 characters), as a dict with keys "train", "val", "test".
    ``labels`` applies to meta-training only ("fixed": one label per class across episodes, the
    non-mutually-exclusive tasks of Yin et al. 2020); validation and test episodes always shuffle
    their labels. ``characters`` keeps only the first that many meta-training characters."""
    omniglot = load_omniglot(device=device) if omniglot is None else omniglot
    split = omniglot.split("maml")
    train_chars = split["train"] if characters is None else split["train"][:characters]
    if characters is not None and not 1 <= characters <= len(split["train"]):
        raise ValueError(f"characters must be 1..{len(split['train'])} (the meta-training split), got {characters}.")
    chars = {"train": train_chars, "val": split["val"], "test": split["test"]}
    return {part: EpisodeSampler(omniglot.images[index], ways, shots, queries, rotations=rotations, device=device,
                                 labels=labels if part == "train" else "shuffled")
            for part, index in chars.items()}


def validation_accuracy(learner: MAML, validation: EpisodeSampler, episodes: int, seed: int = 0, chunk: int = 50):
    """evaluate(iteration) for train.fit: the mean query accuracy after the test-time steps on the
    same ``episodes`` episodes of the meta-validation characters at every call (fixed episodes, so
    that two evaluations differ by θ only)."""
    generator = torch.Generator(device=validation.device).manual_seed(seed)
    batch = validation.sample(episodes, generator=generator)

    def evaluate_theta(theta):
        correct = [learner.evaluate(theta, batch[i:i + chunk])["accuracy"].sum() for i in range(0, episodes, chunk)]
        return {"accuracy": float(sum(correct)) / episodes}
    return evaluate_theta


def train_omniglot_maml(settings: OmniglotSettings, device, sampler=None, seed: int = 0, progress: bool = True,
                        use_graph: bool | None = None, validation: EpisodeSampler | None = None):
    """MAML (or first-order MAML) on N-way K-shot Omniglot; returns (learner, θ, history).

    With a ``validation`` sampler (meta-validation characters, never meta-test), θ is evaluated
    every ``settings.eval_every`` meta-iterations on ``settings.val_episodes`` fixed episodes and
    the θ of the highest validation accuracy is returned; ``history.selected`` names its
    iteration and ``history.eval`` holds the validation curve."""
    s = settings
    torch.manual_seed(seed)
    sampler = sampler or omniglot_samplers(s.ways, s.shots, s.queries, device, rotations=s.rotations)[0]
    learner = omniglot_learner(s)
    theta = learner.init_params(device)
    optimizer = torch.optim.Adam(theta.values(), lr=s.outer_lr, capturable=torch.device(device).type == "cuda")
    run = fast_step(lambda: learner.step(theta, optimizer, sampler.sample(distributed.share(s.tasks))),
                    torch.device(device), use_graph)
    selection = {}
    if validation is not None:
        accuracy = validation_accuracy(learner, validation, s.val_episodes, seed=seed)
        selection = dict(evaluate=lambda it: accuracy(theta), eval_every=s.eval_every, select=("accuracy", "max"))
    history = train.fit(lambda it: run(), s.iterations, log_every=max(1, min(100, s.iterations // 20)),
                        progress=progress, desc=f"{'FO-' if s.first_order else ''}MAML {s.shots}-shot Omniglot",
                        hint=learner.divergence_hint(), state={"theta": theta, "optimizer": optimizer}, **selection)
    return learner, theta, history


# The papers' accuracies (%). Batch norm with batch statistics makes evaluation transductive (the
# query set is normalised together), as in MAML's code; so Reptile is compared with its transductive
# numbers (Nichol et al. Table 2; non-transductive: 95.39 and 98.90). First-order MAML on Omniglot is
# not in Finn et al. (they report it on MiniImagenet only); 98.3% is Nichol et al.'s run of it with
# MAML's code (their Omniglot table).
PAPER_ACCURACY = {("maml", 1): 98.7, ("maml", 5): 99.9, ("fomaml", 1): 98.3, ("reptile", 1): 97.68,
                  ("reptile", 5): 99.48}
PAPER_SOURCE = {"maml": "finn2017maml", "fomaml": "nichol2018reptile"}


def _omniglot_record(method: str, settings: OmniglotSettings, device) -> dict:
    device = torch.device(device)
    s = settings
    omniglot = load_omniglot(device=device)
    train_sampler, test = omniglot_samplers(s.ways, s.shots, s.queries, device, omniglot=omniglot,
                                            rotations=s.rotations)
    learner, theta, _ = train_omniglot_maml(s, device, sampler=train_sampler, progress=s.scale != "quick")
    mean, half = mean_ci95(evaluate(learner, theta, test, s.test_episodes)["accuracy"])
    return {"metrics": {"accuracy": {"value": 100 * float(mean), "ci95": 100 * float(half),
                                     "paper": PAPER_ACCURACY.get((method, s.shots)), "unit": "%"}},
            "test_tasks": s.test_episodes,
            "notes": "Meta-test characters are disjoint from meta-training ones (split of the MAML code). Batch "
                     "norm uses batch statistics, so evaluation is transductive, as in the MAML code."
                     + (" The paper value is Nichol et al.'s (2018) run of first-order MAML with MAML's code."
                        if method == "fomaml" else "")}


# GPU minutes at the paper's scale, measured on an H200 with CUDA graphs.
for _method, _shots, _minutes, _settings in [("maml", 1, 4, OmniglotSettings), ("maml", 5, 8, Omniglot5ShotSettings),
                                             ("fomaml", 1, 3, FirstOrderOmniglotSettings)]:
    _title = {"maml": "MAML", "fomaml": "first-order MAML"}[_method]
    experiment(f"{_method}-omniglot-5w{_shots}s", title=f"{_title}, Omniglot 5-way {_shots}-shot",
               paper=PAPER_SOURCE[_method], gpu_minutes=_minutes, settings=_settings)(
        lambda settings, device, m=_method: _omniglot_record(m, settings, device))


# --- the memorisation problem (Yin et al. 2020) ----------------------------------------------------


@dataclass(frozen=True)
class MemorisationSettings(OmniglotSettings):
    """MAML of Finn et al. 2017 (§5.2: 5-way 1-shot, α = 0.4, one inner step, three at test,
    meta-batch 32, Adam with β = 0.001) meta-trained twice on Omniglot: with labels shuffled per
    episode (the usual, mutually exclusive tasks) and with one label per class for good (the
    non-mutually-exclusive tasks of Yin et al. 2020). The two differ in nothing else.

    No rotation augmentation: a class is one character in one orientation, so that a fixed label
    names one thing to remember. ``characters`` limits the meta-training characters: memorising
    all 1,100 of them takes far more meta-iterations than a CPU can give in minutes, while
    memorising a few dozen shows the same failure quickly (Yin et al. show it on all of them).
    """

    rotations: bool | str = False
    characters: int = 1100     # meta-training characters used (the split has 1,100)
    test_episodes: int = 600   # per evaluation condition

    SCALES = {"book": {"iterations": 600, "tasks": 8, "channels": 32, "characters": 20, "test_episodes": 200},
              "quick": {"iterations": 40, "tasks": 4, "channels": 8, "characters": 20, "test_episodes": 40}}


REGIMES = ("shuffled", "fixed")
# How D^tr is given to the adapted learner at evaluation: as sampled; with every support label
# replaced by a wrong one (y + s mod N, one s in 1..N−1 per episode); or not at all (φ = θ).
CONDITIONS = ("real", "wrong labels", "no D^tr")


def wrong_support_labels(batch: TaskBatch, generator: torch.Generator | None = None) -> TaskBatch:
    """The same episodes with every support label shifted to a wrong one, (y + s) mod N with one
    s ∈ {1, ..., N−1} per episode; the queries keep their true labels. A learner that reads D^tr
    follows the support labels and misclassifies the queries; one that ignores D^tr does not notice."""
    ways = int(batch.y_tr.max()) + 1
    if ways < 2:
        raise ValueError("wrong labels need episodes of at least 2 ways.")
    shift = torch.randint(1, ways, (batch.num_tasks, 1), device=batch.device, generator=generator)
    return TaskBatch(batch.x_tr, (batch.y_tr + shift) % ways, batch.x_ts, batch.y_ts, dict(batch.params))


def _accuracy(learner: MAML, theta, batch: TaskBatch, steps: int, chunk: int = 50) -> torch.Tensor:
    return torch.cat([learner.evaluate(theta, batch[i:i + chunk], steps=steps)["accuracy"].detach().cpu()
                      for i in range(0, batch.num_tasks, chunk)])


def memorisation(settings: MemorisationSettings, device, omniglot=None, seed: int = 0,
                 progress: bool = True) -> dict:
    """Meta-train MAML with shuffled and with fixed labels, then measure whether it uses D^tr.

    Returns ``{"accuracy": {regime: {condition: per-episode accuracy [episodes]}}, "new": {regime:
    per-episode accuracy on meta-test characters}, "history": {regime: History}, "settings": ...}``
    with regimes :data:`REGIMES` and conditions :data:`CONDITIONS`. The conditions are measured on
    the same episodes of the meta-training characters, labelled as in that regime's training;
    "new" on episodes of the meta-test characters (labels shuffled, D^tr as sampled)."""
    if not isinstance(settings, MemorisationSettings):
        raise TypeError(f"settings must be MemorisationSettings (e.g. MemorisationSettings.at()), got {settings!r}.")
    s = settings
    omniglot = load_omniglot(device=device) if omniglot is None else omniglot
    out = {"accuracy": {}, "new": {}, "history": {}, "settings": s}
    for regime in REGIMES:
        samplers = omniglot_split_samplers(s.ways, s.shots, s.queries, device, omniglot=omniglot,
                                           rotations=s.rotations, labels=regime, characters=s.characters)
        learner, theta, history = train_omniglot_maml(s, device, sampler=samplers["train"], seed=seed,
                                                      progress=progress)
        generator = torch.Generator(device=samplers["train"].device).manual_seed(seed + 1)
        episodes = samplers["train"].sample(s.test_episodes, generator=generator)
        wrong = wrong_support_labels(episodes, generator)
        out["accuracy"][regime] = {
            "real": _accuracy(learner, theta, episodes, s.test_steps),
            "wrong labels": _accuracy(learner, theta, wrong, s.test_steps),
            "no D^tr": _accuracy(learner, theta, episodes, 0),
        }
        new = samplers["test"].sample(s.test_episodes, generator=generator)
        out["new"][regime] = _accuracy(learner, theta, new, s.test_steps)
        out["history"][regime] = history
    return out


def memorisation_table(result: dict) -> str:
    """A Markdown table of :func:`memorisation`'s accuracies (%, mean ± 95% interval)."""
    def cell(values):
        mean, half = mean_ci95(values)
        return f"{100 * float(mean):.1f} ± {100 * float(half):.1f}"

    head = ["meta-training labels", "D^tr as sampled", "D^tr with wrong labels", "no D^tr (φ = θ)",
            "new characters, D^tr as sampled"]
    rows = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for regime in REGIMES:
        acc = result["accuracy"][regime]
        rows.append(f"| {regime} | " + " | ".join(cell(acc[c]) for c in CONDITIONS) + f" | {cell(result['new'][regime])} |")
    return "\n".join(rows)
