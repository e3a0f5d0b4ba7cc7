"""A memory-augmented neural network (Santoro et al. 2016) and its LSTM baseline.

Black-box adaptation with a recurrent learner: the network reads an episode as a sequence of
pairs (x_t, y_{t−1}) and predicts y_t. Its state after reading part of the episode plays the role
of φ_i = f_θ(D_i^tr); the prediction for the next input is g_{φ_i}(x_t). Labels are shuffled in
every episode, so the only way to predict y_t is to have bound earlier images to the labels that
came one step after them.

The MANN is an LSTM controller with an external memory M of N rows (slots) of width W.

- Read (content addressing): each of R heads emits a key k_t; its read weights are a softmax over
  the cosine similarities K(k_t, M_t(i)), and it reads r_t = Σ_i w^r_t(i) M_t(i).
- Write (least-recently-used access, LRUA): usage w^u_t = γ w^u_{t−1} + w^r_t + w^w_t; the least
  used slots w^lu_{t−1} come from w^u_{t−1}; the write weights interpolate between the slots read
  last and a least-used slot, w^w_t = σ(α) w^r_{t−1} + (1 − σ(α)) w^lu_{t−1}; before writing,
  the least-used slot is set to zero; then M_t(i) = M_{t−1}(i) + w^w_t(i) k_t.

Everything is batched over episodes: a meta-batch of sequences is one computation, and only the
time steps are a Python loop.
"""

from __future__ import annotations

import torch
from torch import nn

from ..checks import check_count, check_positive

# The paper's Omniglot settings. γ is not given in the paper; 0.95 is the usual choice.
PAPER = {"controller": 200, "slots": 128, "width": 40, "heads": 4, "gamma": 0.95, "image_size": 20,
         "classes": 5, "instances": 10, "meta_batch": 16, "episodes": 100_000}


# --- memory addressing (pure functions, batched over any leading dimensions) ----------------------
def cosine_similarity(keys: torch.Tensor, memory: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """K(k, M(i)) for every head and slot: keys [..., R, W], memory [..., N, W] -> [..., R, N].

    ε inside the square roots keeps the value and its gradient finite for all-zero rows.
    """
    dots = keys @ memory.transpose(-1, -2)
    key_norm = (keys.pow(2).sum(-1) + eps).sqrt()
    row_norm = (memory.pow(2).sum(-1) + eps).sqrt()
    return dots / (key_norm.unsqueeze(-1) * row_norm.unsqueeze(-2))


def read_weights(keys: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """w^r: softmax over slots of the cosine similarities, [..., R, N]; each row sums to one."""
    return torch.softmax(cosine_similarity(keys, memory), dim=-1)


def least_used(usage: torch.Tensor, heads: int) -> torch.Tensor:
    """w^lu: one-hot rows of the ``heads`` least-used slots, [..., heads, N], least used first.

    Ties (e.g. the all-zero usage at the start) go to the lower slot index, so the choice is
    deterministic and identical for every episode of a batch.
    """
    order = torch.sort(usage, dim=-1, stable=True).indices[..., :heads]
    # One-hot by comparison: F.one_hot checks its input on the host, a sync per step on a GPU.
    return (order.unsqueeze(-1) == torch.arange(usage.shape[-1], device=usage.device)).to(usage.dtype)


def write_weights(prev_read: torch.Tensor, prev_least_used: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """w^w_t = σ(α) w^r_{t−1} + (1 − σ(α)) w^lu_{t−1}; alpha [..., R], weights [..., R, N]."""
    gate = torch.sigmoid(alpha).unsqueeze(-1)
    return gate * prev_read + (1 - gate) * prev_least_used


def update_usage(usage: torch.Tensor, read: torch.Tensor, write: torch.Tensor, gamma: float) -> torch.Tensor:
    """w^u_t = γ w^u_{t−1} + Σ_heads w^r_t + Σ_heads w^w_t, [..., N]."""
    return gamma * usage + read.sum(-2) + write.sum(-2)


def write_memory(memory: torch.Tensor, slot_to_clear: torch.Tensor, write: torch.Tensor,
                 values: torch.Tensor) -> torch.Tensor:
    """Zero the least-used slot (one-hot [..., N]), then M(i) += Σ_heads w^w(i) v_head."""
    cleared = memory * (1 - slot_to_clear).unsqueeze(-1)
    return cleared + write.transpose(-1, -2) @ values


# --- the networks -----------------------------------------------------------------------------
def lstm_cell(gates: torch.Tensor, cell: torch.Tensor):
    """One LSTM update from pre-activations [..., 4H] (input, forget, cell, output): (h, c)."""
    i, f, g, o = gates.chunk(4, dim=-1)
    cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(cell), cell


class _SequenceNet(nn.Module):
    """Shared input checks. Inputs are [episodes, T, input_size]; outputs [episodes, T, classes]."""

    input_size: int

    def _check(self, inputs: torch.Tensor) -> None:
        if not isinstance(inputs, torch.Tensor) or inputs.dim() != 3 or inputs.shape[-1] != self.input_size:
            got = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
            raise ValueError(f"{type(self).__name__} expects inputs [episodes, T, {self.input_size}] "
                             f"(image pixels and the previous one-hot label), got {got}.")
        if inputs.shape[1] < 1:
            raise ValueError("the sequences are empty (T = 0); an episode needs at least one step.")


class LSTMLearner(_SequenceNet):
    """The LSTM baseline: the same controller without external memory."""

    def __init__(self, input_size: int, classes: int, hidden: int = PAPER["controller"]):
        super().__init__()
        self.input_size = check_count("input_size", input_size)
        self.classes = check_count("classes", classes)
        self.hidden = check_count("hidden", hidden)
        self.input = nn.Linear(input_size, 4 * hidden)
        self.recurrent = nn.Linear(hidden, 4 * hidden, bias=False)
        self.output = nn.Linear(hidden, classes)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        self._check(inputs)
        b, steps, _ = inputs.shape
        # The input projection of all steps in one matrix product; unbind (not indexing) so that
        # the backward pass stacks the step gradients once instead of filling a zero tensor per step.
        gates_in = self.input(inputs).unbind(1)
        h = c = inputs.new_zeros(b, self.hidden)
        states = []
        for t in range(steps):
            h, c = lstm_cell(gates_in[t] + self.recurrent(h), c)
            states.append(h)
        return self.output(torch.stack(states, 1))


class MANN(_SequenceNet):
    """LSTM controller + memory of ``slots`` × ``width`` with ``heads`` read heads and LRUA writes.

    The controller reads [x_t, y_{t−1}, r_{t−1}] (the previous reads feed the next state); the
    classifier reads [h_t, r_t]. ``trace(inputs)`` also returns the read and write weights, the
    usage and the memory at every step, for figures.
    """

    def __init__(self, input_size: int, classes: int, hidden: int = PAPER["controller"],
                 slots: int = PAPER["slots"], width: int = PAPER["width"], heads: int = PAPER["heads"],
                 gamma: float = PAPER["gamma"]):
        super().__init__()
        self.input_size = check_count("input_size", input_size)
        self.classes = check_count("classes", classes)
        self.hidden = check_count("hidden", hidden)
        self.slots = check_count("slots", slots)
        self.width = check_count("width", width)
        self.heads = check_count("heads", heads)
        if heads > slots:
            raise ValueError(f"heads={heads} need as many least-used slots, but the memory has slots={slots}.")
        self.gamma = check_positive("gamma", gamma)
        if self.gamma > 1:
            raise ValueError(f"gamma (the usage decay γ) must lie in (0, 1], got {gamma!r}.")
        self.input = nn.Linear(input_size, 4 * hidden)
        self.recurrent = nn.Linear(hidden + heads * width, 4 * hidden, bias=False)
        self.head = nn.Linear(hidden, heads * (width + 1))  # per head: a key and the write gate α
        self.output = nn.Linear(hidden + heads * width, classes)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self._run(inputs, keep=False)[0]

    def trace(self, inputs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(logits, {"read", "write": [B, T, R, N], "usage": [B, T, N], "memory": [B, T, N, W]})."""
        return self._run(inputs, keep=True)

    def _run(self, inputs: torch.Tensor, keep: bool):
        self._check(inputs)
        b, steps, _ = inputs.shape
        n, w, r = self.slots, self.width, self.heads
        gates_in = self.input(inputs).unbind(1)
        state = inputs.new_zeros(b, self.hidden + r * w)  # [h_{t−1}, r_{t−1}]
        c = inputs.new_zeros(b, self.hidden)
        memory = inputs.new_zeros(b, n, w)
        usage = inputs.new_zeros(b, n)
        read_w = inputs.new_zeros(b, r, n)
        states, kept = [], {"read": [], "write": [], "usage": [], "memory": []}
        for t in range(steps):
            h, c = lstm_cell(gates_in[t] + self.recurrent(state), c)
            out = self.head(h).view(b, r, -1)
            key, alpha = torch.tanh(out[..., :w]), out[..., w]
            lu = least_used(usage, r)
            write_w = write_weights(read_w, lu, alpha)  # from w^r_{t−1} and w^lu_{t−1}
            memory = write_memory(memory, lu[:, 0], write_w, key)
            # Reading after the write, with the key just written, finds that slot again (and the
            # slots of earlier images like x_t): the next step's write to "the slots read last"
            # then stores y_t, which arrives with x_{t+1}, beside x_t.
            read_w = read_weights(key, memory)
            read = (read_w @ memory).flatten(1)
            # Usage only picks slots (a discrete choice): it needs no gradient.
            usage = update_usage(usage, read_w.detach(), write_w.detach(), self.gamma)
            state = torch.cat([h, read], dim=-1)
            states.append(state)
            if keep:
                for name, value in (("read", read_w), ("write", write_w), ("usage", usage), ("memory", memory)):
                    kept[name].append(value.detach())
        logits = self.output(torch.stack(states, 1))
        return logits, ({k: torch.stack(v, 1) for k, v in kept.items()} if keep else {})
