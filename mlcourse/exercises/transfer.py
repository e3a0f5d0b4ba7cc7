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
