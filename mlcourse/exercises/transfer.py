"""Chapter 3, transfer learning."""

from ..meta.finetune_options import options, plan
from ..nets import MLP, Conv4, init_params
from .core import Case, describe, exercise


@exercise("transfer.discriminative_rates", chapter="03_transfer", title="discriminative (layer-wise) learning rates",
          function="discriminative_rates",
          references=("mlcourse.meta.finetune_options.plan", "mlcourse.meta.finetune_options.options"),
          hint="layer_groups(theta) lists the G groups (name, parameter names) from input to output; a parameter of "
               "group l gets α · decay ** (G − 1 − l), so the last group keeps α.")
def discriminative_rates_cases():
    def reference(theta, alpha, decay):
        _, scale = plan(theta, options(lr=alpha, steps=1, layer_lr=decay))
        return {name: alpha * factor for name, factor in scale.items()}

    def compare(expected, given):
        if not isinstance(given, dict) or set(given) != set(expected):
            got = sorted(given) if isinstance(given, dict) else type(given).__name__
            return f"expected one rate per parameter name, {sorted(expected)}; got {got}"
        try:
            wrong = [k for k in expected if abs(float(given[k]) - expected[k]) > 1e-10]
        except (TypeError, ValueError):
            return f"expected a number per parameter name, got {describe(given)}"
        return f"wrong rates for {wrong[:3]}" if wrong else None

    for net, alpha, decay in [(Conv4(5), 0.2, 0.4), (MLP(), 0.01, 0.5)]:
        theta = init_params(net, "cpu")
        yield Case(f"{type(net).__name__}, α = {alpha}, decay = {decay}", args=(theta, alpha, decay),
                   reference=reference, compare=compare)


@exercise("transfer.one_step_head", chapter="03_transfer", title="one gradient step from a zero head",
          function="one_step_head", references=("mlcourse.meta.finetune.new_head",),
          hint="at W = 0, b = 0 the softmax is uniform, so the logits' gradient of example i is 1/N − e_{y_i}; "
               "sum it against the features and collect the terms of each class: row c of W_1 is "
               "α/N · (μ_c − μ̄) with μ_c the class mean and μ̄ the mean of all features, and b_1 = 0.")
def one_step_head_cases():
    import torch
    import torch.nn.functional as F

    def reference(features, y, ways, alpha):
        start = (torch.zeros(ways, features.shape[1], dtype=features.dtype),
                 torch.zeros(ways, dtype=features.dtype))
        g = torch.func.grad(lambda p: F.cross_entropy(features @ p[0].T + p[1], y))(start)
        return start[0] - alpha * g[0], start[1] - alpha * g[1]

    generator = torch.Generator().manual_seed(3)
    for ways, shots, dim, alpha in [(5, 1, 8, 0.5), (5, 5, 16, 0.1), (3, 4, 6, 2.0)]:
        features = torch.randn(ways * shots, dim, generator=generator, dtype=torch.float64).relu()
        y = torch.arange(ways).repeat(shots)[torch.randperm(ways * shots, generator=generator)]
        yield Case(f"N = {ways}, K = {shots}, {dim} features, α = {alpha}", args=(features, y, ways, alpha),
                   reference=reference, rtol=1e-6, atol=1e-9)
