"""A memory-augmented neural network (Santoro et al. 2016) and its LSTM baseline.

Black-box adaptation with a recurrent learner: the network reads an episode as a sequence of
pairs (x_t, y_{t−1}) and predicts y_t (:mod:`mlcourse.meta.sequences`). Its state after reading
D^tr is φ_i = f_θ(D_i^tr); a query is one more step from that state. Labels are shuffled in every
episode, so the only way to predict y_t is to have bound earlier images to the labels that came
one step after them.

The MANN is an LSTM controller with an external memory M of N rows (slots) of width W. At step t
the controller emits, for each of R heads, a key k_t, a write gate g_t and (optionally) a key
strength β_t; then, in this order:

- Write (least-recently-used access, LRUA): the write weights interpolate between the rows read at
  the previous step and the least-used row, w^w_t = σ(g_t) w^r_{t−1} + (1 − σ(g_t)) w^lu_{t−1},
  where w^lu_{t−1} marks the least used rows of the usage w^u_{t−1}; the least-used row is set to
  zero, then M_t(i) = M_{t−1}(i) + w^w_t(i) k_t.
- Read (content addressing) from M_t with the same key: w^r_t(i) = softmax_i(β_t cos(k_t, M_t(i))),
  r_t = Σ_i w^r_t(i) M_t(i). The paper's softmax has β = 1; ``key_strength=True`` lets the
  controller emit β_t = 1 + softplus(b_t) ≥ 1, as the Neural Turing Machine does (Graves et al.
  2014): with 128 rows and cosines in [−1, 1], β = 1 gives a perfect match at most e / (e + 127)
  ≈ 2% of the weight.
- Usage: w^u_t = γ w^u_{t−1} + Σ_heads (w^r_t + w^w_t).

The classifier reads [h_t, r_t]; the next controller step reads r_t too. Everything is batched
over episodes: only the time steps are a Python loop.
"""

from __future__ import annotations

import torch
from torch import nn

from ..checks import check_count, check_positive
from .sequences import ImageEncoder, SequenceNet

# The paper's Omniglot settings. γ is not given in the paper; 0.95 is the usual choice.
PAPER = {"controller": 200, "slots": 128, "width": 40, "heads": 4, "gamma": 0.95, "image_size": 20,
         "classes": 5, "instances": 10, "meta_batch": 16, "episodes": 100_000}


# --- memory addressing (pure functions, batched over any leading dimensions) ----------------------
def cosine_similarity(keys: torch.Tensor, memory: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """cos(k, M(i)) for every head and slot: keys [..., R, W], memory [..., N, W] -> [..., R, N].

    ε inside the square roots keeps the value and its gradient finite for all-zero rows.
    """
    dots = keys @ memory.transpose(-1, -2)
    key_norm = torch.rsqrt(keys.pow(2).sum(-1, keepdim=True) + eps)
    return dots * key_norm * torch.rsqrt(memory.pow(2).sum(-1) + eps).unsqueeze(-2)


def read_weights(keys: torch.Tensor, memory: torch.Tensor, strength: torch.Tensor | None = None) -> torch.Tensor:
    """w^r: softmax over slots of β · cos, [..., R, N]; each row sums to one. strength β: [..., R], or
    None for β = 1 (the paper's read)."""
    similarity = cosine_similarity(keys, memory)
    if strength is not None:
        similarity = similarity * strength.unsqueeze(-1)
    return torch.softmax(similarity, dim=-1)


def least_used(usage: torch.Tensor, heads: int) -> torch.Tensor:
    """w^lu: one-hot rows of the ``heads`` least-used slots, [..., heads, N], least used first.

    Ties (e.g. the all-zero usage at the start) go to the lower slot index, so the choice is
    deterministic and identical for every episode of a batch.
    """
    order = torch.sort(usage, dim=-1, stable=True).indices[..., :heads]
    # One-hot by comparison: F.one_hot checks its input on the host, a sync per step on a GPU.
    return (order.unsqueeze(-1) == torch.arange(usage.shape[-1], device=usage.device)).to(usage.dtype)


def write_weights(prev_read: torch.Tensor, prev_least_used: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """w^w_t = σ(g) w^r_{t−1} + (1 − σ(g)) w^lu_{t−1}; gate g [..., R], weights [..., R, N]."""
    s = torch.sigmoid(gate).unsqueeze(-1)
    return s * prev_read + (1 - s) * prev_least_used


def update_usage(usage: torch.Tensor, read: torch.Tensor, write: torch.Tensor, gamma: float) -> torch.Tensor:
    """w^u_t = γ w^u_{t−1} + Σ_heads w^r_t + Σ_heads w^w_t, [..., N]."""
    return gamma * usage + read.sum(-2) + write.sum(-2)


def write_memory(memory: torch.Tensor, slot_to_clear: torch.Tensor, write: torch.Tensor,
                 values: torch.Tensor) -> torch.Tensor:
    """Zero the least-used slot (one-hot [..., N]), then M(i) += Σ_heads w^w(i) v_head."""
    cleared = memory * (1 - slot_to_clear).unsqueeze(-1)
    return cleared + write.transpose(-1, -2) @ values


def lstm_cell(gates: torch.Tensor, cell: torch.Tensor):
    """One LSTM update from pre-activations [..., 4H] (input, forget, cell, output): (h, c)."""
    i, f, g, o = gates.chunk(4, dim=-1)
    cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(cell), cell


def _repeat(state: dict[str, torch.Tensor], times: int) -> dict[str, torch.Tensor]:
    """Each episode's state once per query: [B, ...] -> [B·times, ...]."""
    return {k: v.repeat_interleave(times, dim=0) for k, v in state.items()}


# --- the networks -----------------------------------------------------------------------------
class LSTMLearner(SequenceNet):
    """The LSTM baseline: an LSTM reads [e(x_t), y_{t−1}] and a linear layer predicts y_t.

    pixels: image size once flattened (400 for 20 × 20). encoder: ``"pixels"`` (the paper) or
    ``"mlp"`` (see :class:`~mlcourse.meta.sequences.ImageEncoder`). forget_bias: added to the
    forget gate's bias at initialisation (1 is the usual advice for LSTMs; the paper does not say).
    φ = the state (h, c) after D^tr and the last label; a query is one more step from it.
    """

    def __init__(self, pixels: int, classes: int, hidden: int = PAPER["controller"], encoder: str = "pixels",
                 embedding: int = 64, forget_bias: float = 0.0, previous_image: bool = False):
        super().__init__()
        self.classes = check_count("classes", classes)
        self.hidden = check_count("hidden", hidden)
        self.encoder = ImageEncoder(pixels, encoder, embedding)
        self.previous_image = bool(previous_image)
        # torch's fused LSTM: one call for the whole sequence instead of a Python loop over steps.
        self.lstm = nn.LSTM(self.input_size, hidden, batch_first=True)
        self.output = nn.Linear(hidden, classes)
        with torch.no_grad():
            self.lstm.bias_hh_l0.zero_()  # one bias per gate is enough; the fused kernel has two
            self.lstm.bias_ih_l0[hidden:2 * hidden] += forget_bias

    def read(self, x_tr, y_tr):
        h, (h_last, c_last) = self.lstm(self.step_inputs(x_tr, y_tr))
        return self.output(h), {"h": h_last[0], "c": c_last[0], **self.last_step(x_tr, y_tr)}

    def answer(self, state, x_ts):
        b, q = x_ts.shape[:2]
        inputs = self.query_inputs(state, x_ts)
        start = _repeat({"h": state["h"], "c": state["c"]}, q)
        h, _ = self.lstm(inputs.reshape(b * q, 1, -1), (start["h"].unsqueeze(0), start["c"].unsqueeze(0)))
        return self.output(h.view(b, q, -1))


class MANN(SequenceNet):
    """LSTM controller + memory of ``slots`` × ``width`` with ``heads`` read heads and LRUA writes.

    The controller reads [e(x_t), y_{t−1}, r_{t−1}]; the classifier reads [h_t, r_t].
    ``key_strength``: the controller also emits β_t (see the module docstring). ``trace(x, y)``
    returns the online logits and the read and write weights, the usage and the memory at every
    step, for figures.
    """

    def __init__(self, pixels: int, classes: int, hidden: int = PAPER["controller"], slots: int = PAPER["slots"],
                 width: int = PAPER["width"], heads: int = PAPER["heads"], gamma: float = PAPER["gamma"],
                 key_strength: bool = False, encoder: str = "pixels", embedding: int = 64,
                 previous_image: bool = False, read_first: bool = False):
        super().__init__()
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
        self.key_strength = bool(key_strength)
        self.encoder = ImageEncoder(pixels, encoder, embedding)
        self.previous_image, self.read_first = bool(previous_image), bool(read_first)
        self.input = nn.Linear(self.input_size, 4 * hidden)
        self.recurrent = nn.Linear(hidden + heads * width, 4 * hidden, bias=False)
        # Per head: a key, the write gate g and, with key_strength, the strength's pre-activation.
        self.head = nn.Linear(hidden, heads * (width + 1 + self.key_strength))
        self.output = nn.Linear(hidden + heads * width, classes)

    def start(self, batch: int, like: torch.Tensor) -> dict[str, torch.Tensor]:
        """The state before the first step: empty memory, zero usage, no previous read."""
        n, w, r = self.slots, self.width, self.heads
        return {"h": like.new_zeros(batch, self.hidden), "c": like.new_zeros(batch, self.hidden),
                "read": like.new_zeros(batch, r * w), "read_weights": like.new_zeros(batch, r, n),
                "memory": like.new_zeros(batch, n, w), "usage": like.new_zeros(batch, n)}

    def step(self, gates_in: torch.Tensor, state: dict[str, torch.Tensor]):
        """One step from the input's gate pre-activations [B, 4H]: (the classifier's input [h, r], the
        new state, the write weights)."""
        b, w, r = gates_in.shape[0], self.width, self.heads
        h, c = lstm_cell(gates_in + self.recurrent(torch.cat([state["h"], state["read"]], -1)), state["c"])
        out = self.head(h).view(b, r, -1)
        key, gate = torch.tanh(out[..., :w]), out[..., w]
        strength = 1 + nn.functional.softplus(out[..., w + 1]) if self.key_strength else None
        with torch.no_grad():  # the least-used slots are a discrete choice: no gradient
            lu = least_used(state["usage"], r)
        write_w = write_weights(state["read_weights"], lu, gate)  # from w^r_{t−1} and w^lu_{t−1}
        if self.read_first:
            read_w = read_weights(key, state["memory"], strength)
            read = (read_w @ state["memory"]).flatten(1)
        memory = write_memory(state["memory"], lu[:, 0], write_w, key)
        # Reading after the write, with the key just written, finds that row again (and the rows
        # of earlier images like x_t): the next step's write to "the rows read last" then stores
        # what y_t, which arrives with x_{t+1}, makes of the controller's state beside x_t.
        if not self.read_first:
            read_w = read_weights(key, memory, strength)
            read = (read_w @ memory).flatten(1)
        with torch.no_grad():  # usage only picks slots
            usage = update_usage(state["usage"], read_w, write_w, self.gamma)
        new = {"h": h, "c": c, "read": read, "read_weights": read_w, "memory": memory, "usage": usage}
        return torch.cat([h, read], -1), new, write_w

    def _run(self, x_tr, y_tr, keep: bool):
        gates_in = self.input(self.step_inputs(x_tr, y_tr)).unbind(1)  # every step's input projection at once
        state = self.start(x_tr.shape[0], x_tr)
        features, kept = [], {"read": [], "write": [], "usage": [], "memory": []}
        for g in gates_in:
            out, state, write_w = self.step(g, state)
            features.append(out)
            if keep:
                for name, value in (("read", state["read_weights"]), ("write", write_w), ("usage", state["usage"]),
                                    ("memory", state["memory"])):
                    kept[name].append(value.detach())
        state.update(self.last_step(x_tr, y_tr))
        return self.output(torch.stack(features, 1)), state, kept

    def read(self, x_tr, y_tr):
        logits, state, _ = self._run(x_tr, y_tr, keep=False)
        return logits, state

    def answer(self, state, x_ts):
        b, q = x_ts.shape[:2]
        gates_in = self.input(self.query_inputs(state, x_ts)).reshape(b * q, -1)
        start = _repeat({k: v for k, v in state.items() if k not in ("label", "image")}, q)
        out, _, _ = self.step(gates_in, start)
        return self.output(out).view(b, q, -1)

    @torch.no_grad()
    def trace(self, x_tr: torch.Tensor, y_tr: torch.Tensor):
        """(online logits, {"read", "write": [B, T, R, N], "usage": [B, T, N], "memory": [B, T, N, W]})."""
        self.check(x_tr, y_tr)
        logits, _, kept = self._run(x_tr, y_tr, keep=True)
        return logits, {k: torch.stack(v, 1) for k, v in kept.items()}
