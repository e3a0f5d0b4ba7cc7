"""The gradient check of the sequence learners' tests catches one wrong entry among thousands."""

import pytest
import torch

from finite_differences import assert_gradient_matches_finite_differences

D = torch.float64


class _OffInOneEntry(torch.autograd.Function):
    """sum(sin(w)) whose backward is 10% off in entry 1234 (``torch.func`` needs a staticmethod
    setup_context and vmap=True to batch it)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(w):
        return torch.sin(w).sum(-1)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad):
        (w,) = ctx.saved_tensors
        g = torch.cos(w)
        g[..., 1234] *= 1.1
        return grad.unsqueeze(-1) * g


@pytest.mark.parametrize("vectorise", [True, False])
def test_one_wrong_entry_in_5000_is_found(vectorise):
    params = {"w": torch.rand(5000, dtype=D), "b": torch.rand(3, dtype=D)}

    def right(p):
        return torch.sin(p["w"]).sum() + p["b"].pow(2).sum()

    def wrong(p):
        return _OffInOneEntry.apply(p["w"]) + p["b"].pow(2).sum()

    assert_gradient_matches_finite_differences(right, params, vectorise=vectorise)
    with pytest.raises(AssertionError, match=r"1 of 5003 gradient entries .* worst in w"):
        assert_gradient_matches_finite_differences(wrong, params, vectorise=vectorise)


def test_float32_is_refused():
    with pytest.raises(TypeError, match="float64"):
        assert_gradient_matches_finite_differences(lambda p: p["w"].sum(), {"w": torch.ones(3)})
