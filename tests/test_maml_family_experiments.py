"""The MAML-family chapter's experiments: settings at every scale, the registered reproductions,
the instability recorder, linear CKA against its kernel definition, the representations it
compares, the MAML++ ablation's variants, and the comparison run end to end through the learner
interface at the quick scale."""

import math

import pytest
import torch

from mlcourse import reproduce
from mlcourse.experiments import maml_family as E
from mlcourse.meta.anil import ANIL
from mlcourse.meta.learner import GradientLearner, MetaGradient
from mlcourse.meta.maml import MAML
from mlcourse.nets import MLP, Conv4, forward
from mlcourse.settings import SCALES
from mlcourse.tasks import EpisodeSampler, SinusoidFamily

SETTINGS = [E.InstabilitySettings, E.CostSettings, E.SinusoidComparisonSettings, E.OmniglotComparisonSettings,
            E.ContextSettings, E.MAMLPlusPlusOmniglotSettings]


@pytest.mark.parametrize("kind", SETTINGS, ids=lambda k: k.__name__)
def test_settings_exist_at_every_scale(kind):
    for scale in SCALES:
        settings = kind.at(scale)
        assert settings.scale == scale and settings.table().startswith("| setting |")
    assert kind.at("paper") == kind()


def test_the_reproductions_are_listed_with_their_gpu_minutes(capsys):
    reproduce.main(["--list"])
    out = capsys.readouterr().out
    for name in ("metasgd-omniglot-5w1s", "cavia-omniglot-5w1s", "anil-omniglot-5w1s", "mamlpp-omniglot-5w1s",
                 "cavia-sinusoid"):
        line = next(line for line in out.splitlines() if line.startswith(name))
        assert "GPU-min" in line
    assert reproduce.settings_for("mamlpp-omniglot-5w1s", "paper").iterations == 75_000


def test_instability_run_records_the_losses_and_where_training_diverged():
    settings = E.InstabilitySettings.at("quick", iterations=6)
    calm = E.instability_run(0.01, 1, 1e-3, settings, "cpu")
    assert calm["diverged_at"] is None and len(calm["outer"]) == 6
    assert all(math.isfinite(v) for key in ("inner_before", "inner_after", "outer") for v in calm[key])
    # one step from θ reduces the support loss (α small enough): the inner loop does its job
    assert sum(calm["inner_after"]) < sum(calm["inner_before"])
    wild = E.instability_run(100.0, 3, 1e-3, settings, "cpu")
    assert wild["diverged_at"] is not None and len(wild["outer"]) == wild["diverged_at"] + 1


def hsic(k, m):
    n = k.shape[0]
    h = torch.eye(n, dtype=k.dtype) - 1 / n
    return torch.trace(k @ h @ m @ h)


def test_linear_cka_against_its_kernel_definition_and_invariances():
    torch.manual_seed(0)
    x, y = torch.randn(30, 8, dtype=torch.float64), torch.randn(30, 5, dtype=torch.float64)
    k, m = x @ x.T, y @ y.T
    expected = hsic(k, m) / torch.sqrt(hsic(k, k) * hsic(m, m))
    torch.testing.assert_close(E.linear_cka(x, y), expected)
    torch.testing.assert_close(E.linear_cka(x, x), torch.tensor(1.0, dtype=torch.float64))
    rotation, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))
    torch.testing.assert_close(E.linear_cka(x, 3.0 * x @ rotation + 2.0), torch.tensor(1.0, dtype=torch.float64))
    with pytest.raises(ValueError, match="same n examples"):
        E.linear_cka(x, y[:10])


def test_conv4_representations_end_in_the_network_output():
    net = Conv4(3, channels=4)
    params = ANIL(net, "cross_entropy").init_params("cpu")
    x = torch.rand(6, 1, 28, 28)
    layers = E.conv4_representations(net, params, x)
    assert len(layers) == 5 and all(h.shape[0] == 6 for h in layers)
    torch.testing.assert_close(layers[-1], forward(net, params, x))


def test_anil_leaves_the_trunk_representations_unchanged():
    torch.manual_seed(1)
    images = (torch.rand(10, 6, 28, 28) * 255).to(torch.uint8)
    batch = EpisodeSampler(images, ways=3, shots=1, queries=3, device="cpu").sample(2)
    anil = ANIL(Conv4(3, channels=4), "cross_entropy", inner_lr=0.4, inner_steps=2)
    similarity = E.representation_similarity(anil, anil.init_params("cpu"), batch)
    assert similarity.shape == (2, 5)
    torch.testing.assert_close(similarity[:, :4], torch.ones(2, 4), rtol=1e-5, atol=1e-5)
    assert (similarity[:, 4] < 1 - 1e-4).all()     # the head does adapt
    maml = MAML(Conv4(3, channels=4), "cross_entropy", inner_lr=0.4, inner_steps=2)
    moved = E.representation_similarity(maml, maml.init_params("cpu"), batch)
    assert (moved[:, :4] < 1 - 1e-6).any()         # MAML adapts its trunk too


@pytest.mark.parametrize("variant", E.ABLATION)
def test_each_ablation_variant_switches_on_exactly_its_changes(variant):
    settings = E.OmniglotComparisonSettings.at("quick", iterations=30)
    learner = E.mamlpp_variant(variant, settings)
    on = {"MSL": learner.multi_step_loss, "LSLR": learner.per_step_rates, "BNWB": learner.per_step_bn,
          "DA": learner.first_order_iterations > 0, "CA": learner.cosine_iterations is not None}
    expected = set(on) if variant == "MAML++" else ({variant[2:]} if variant.startswith("+ ") else set())
    assert {k for k, v in on.items() if v} == expected
    assert learner.inner_steps == settings.mamlpp_steps and learner.inner_lr == settings.mamlpp_lr
    if learner.first_order_iterations:
        assert learner.first_order_iterations == round(30 * 80 / 150)
    with pytest.raises(ValueError, match="variant must be one of"):
        E.mamlpp_variant("+ everything", settings)


class Centroid(GradientLearner):
    """A learner unknown to the experiments: θ is one vector, φ_i = θ + mean of D_i^tr's targets."""

    loss_kind = "mse"

    def init_params(self, device=None, dtype=None):
        return {"w": torch.zeros(1, device=device, dtype=dtype, requires_grad=True)}

    def adapt(self, theta, batch, steps=None):
        return {"w": theta["w"] + batch.y_tr.mean(dim=(1, 2)).unsqueeze(-1)}

    def _loss(self, theta, batch):
        return (self.adapt(theta, batch)["w"].unsqueeze(1) - batch.y_ts).pow(2).mean(dim=(1, 2))

    def meta_gradient(self, theta, batch):
        loss = self._loss(theta, batch)
        grads = dict(zip(theta, torch.autograd.grad(loss.mean(), list(theta.values()))))
        return MetaGradient(grads, {"loss": loss.detach()})

    def evaluate(self, theta, batch, steps=None):
        return {"loss": self._loss(theta, batch).detach()}

    def adaptation_curve(self, theta, batch, steps):
        return {"loss": self._loss(theta, batch).detach().unsqueeze(1).expand(-1, steps + 1)}


def test_training_and_cost_use_the_learner_interface_only():
    learner = Centroid()
    family = SinusoidFamily()
    run = E.meta_train("centroid", learner, lambda: family.sample(4, 5, device="cpu"), 5, 0.1, "cpu")
    assert run.history.train and run.theta["w"].shape == (1,)
    seconds, memory = E.measure_cost(learner, run.theta, family.sample(4, 5, device="cpu"), "cpu", repeats=1)
    assert seconds > 0 and (memory is None or memory >= 0)


def test_sinusoid_comparison_end_to_end_at_the_quick_scale():
    settings = E.SinusoidComparisonSettings.at("quick")
    rows, trained = E.compare_sinusoid(settings, "cpu", methods=("maml", "cavia", "anil"))
    assert [r.method for r in rows] == ["maml", "cavia", "anil"] and trained.keys() == {"maml", "cavia", "anil"}
    for r in rows:
        assert math.isfinite(r.mean) and r.ci95 > 0 and r.seconds > 0 and r.paper[2]
    text = E.table(rows, "MSE")
    assert text.count("\n") == len(rows) + 1 and "CAVIA" in text and "{cite:p}`zintgraf2019cavia`" in text
    sweep = E.context_sweep(E.ContextSettings.at("quick"), settings, "cpu", reuse=trained["cavia"])
    assert sweep[settings.cavia_context]["theta"] is trained["cavia"].theta and set(sweep) == {1, 5}
    contexts, amplitude, phase = E.context_probe(sweep[1]["learner"], sweep[1]["theta"], 7, 10, "cpu")
    assert contexts.shape == (7, 1) and amplitude.shape == phase.shape == (7,)


def test_every_method_has_a_learner_and_a_paper_line():
    sinusoid, omniglot = E.SinusoidComparisonSettings.at("quick"), E.OmniglotComparisonSettings.at("quick")
    for method in E.GRADIENT_METHODS:
        assert isinstance(E.sinusoid_learner(method, sinusoid), GradientLearner)
        assert isinstance(E.omniglot_learner(method, omniglot), GradientLearner)
        assert method in E.PAPER_OMNIGLOT and method in E.PAPER_SINUSOID and method in E.LABELS
    with pytest.raises(ValueError, match="method must be one of"):
        E.sinusoid_learner("protonet", sinusoid)
    with pytest.raises(TypeError, match="settings must be OmniglotComparisonSettings"):
        E.omniglot_learner("maml", sinusoid)


def test_omniglot_comparison_and_ablation_at_the_quick_scale(omniglot):
    settings = E.OmniglotComparisonSettings.at("quick")
    rows, trained = E.compare_omniglot(settings, "cpu", methods=("anil", "mamlpp"), omniglot=omniglot)
    assert [r.method for r in rows] == ["anil", "mamlpp"]
    assert all(0 <= r.mean <= 100 for r in rows) and rows[1].paper[0] == 99.47
    ablation = E.ablation(settings, "cpu", variants=("MAML", "MAML++"), omniglot=omniglot,
                          reuse={"MAML++": trained["mamlpp"]})
    assert [r.variant for r in ablation] == ["MAML", "MAML++"]
    assert ablation[1].history is trained["mamlpp"].history
    assert E.ablation_table(ablation).count("\n") == 3


def test_cost_curves_at_the_quick_scale():
    curves = E.cost_curves(E.CostSettings.at("quick"), "cpu")
    assert set(curves) == {(m, s) for m in ("maml", "fomaml") for s in ("sinusoid", "omniglot")}
    steps = [k for k, _, _ in curves["maml", "sinusoid"]]
    assert steps == list(E.CostSettings.at("quick").sinusoid_steps)
    assert all(seconds > 0 for points in curves.values() for _, seconds, _ in points)


def test_mlp_learner_for_sinusoids_is_the_papers_network():
    learner = E.sinusoid_learner("maml", E.SinusoidComparisonSettings())
    assert isinstance(learner.net, MLP) and learner.net.sizes == (1, 40, 40, 1) and learner.inner_lr == 0.01


# Deliberately wrong answers to the chapter's exercises: each must fail its check.
WRONG = {
    "maml_family.linear_cka": lambda x, y: (y.T @ x).pow(2).sum() / ((x.T @ x).norm() * (y.T @ y).norm()),
    "maml_family.msl_weights": lambda steps, progress: [1 / steps] * steps,          # never annealed
    "maml_family.cavia_mse": lambda context, iterations, seed: 4.2,                   # predicting zero
}


@pytest.mark.parametrize("exercise_id", sorted(WRONG))
def test_the_chapters_checks_fail_wrong_answers(exercise_id):
    from mlcourse import exercises

    verdict = exercises.check(exercise_id, WRONG[exercise_id], show=False)
    assert verdict.status == "failed" and verdict.passed < verdict.total and "✗" in str(verdict)
