"""In-context learning: a small causal transformer that reads an episode as a prompt.

A large language model learns from its prompt: given "x_1 → y_1, x_2 → y_2, ..., x →", it answers
for x without any change of its weights. That is black-box adaptation, φ_i = f_θ(D_i^tr), with
the transformer as f_θ and the prompt as D^tr; meta-training on many episodes is how the network
learns to do it. This module is the smallest such learner for the episodes of
:mod:`mlcourse.meta.sequences`.

Tokens. Every labelled example s of D^tr is a *pair token* p_s = W e(x_s) + E[y_s], every
prediction a *query token* q = W e(x) + E[?] (E[?]: a learned "label unknown" row). There are no
position embeddings: the only order is the causal mask, so the prompt is read as a set.

Attention (pre-norm blocks: attention, then an MLP, each with a residual connection):

- pair s attends to the pairs s' ≤ s (causal self-attention over the prompt);
- the online query of step t attends to the pairs s < t and to itself: it never sees its own label
  y_t, nor anything later;
- a query of D^ts attends to every pair of D^tr and to itself, never to another query.

Queries never feed the pairs, so the pairs' keys and values at every layer are computed once:
they are φ_i (what a language model keeps as its "KV cache" for a prompt), and every query is
answered from them. Reading the same information as the recurrent learners — at step t, x_1..x_t
and y_1..y_{t−1} — the transformer does not have to squeeze D^tr into a fixed-size state: a query
can look up the earlier image most like it, and :meth:`InContextTransformer.trace` shows which.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..checks import check_count, check_positive
from .sequences import ImageEncoder, SequenceNet


class Block(nn.Module):
    """A pre-norm transformer block whose tokens attend to given keys and values (and to themselves)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} must be a multiple of heads={heads}.")
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def _split(self, z: torch.Tensor) -> torch.Tensor:  # [B, L, D] -> [B, heads, L, D / heads]
        b, n, d = z.shape
        return z.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def keys_values(self, tokens: torch.Tensor):
        """The keys and values [B, heads, L, D / heads] that other tokens read from ``tokens``."""
        normed = self.norm1(tokens)
        return self._split(self.key(normed)), self._split(self.value(normed))

    def forward(self, tokens, keys, values, visible: torch.Tensor | None, attend_self: bool, keep: list | None = None):
        """tokens [B, L, D] attend to keys/values [B, heads, S, d] where ``visible`` [L, S] is True (all
        if None), and to their own key and value if ``attend_self``. ``keep`` collects the weights."""
        normed = self.norm1(tokens)
        q = self._split(self.query(normed))
        scale = 1 / math.sqrt(q.shape[-1])
        scores = (q @ keys.transpose(-1, -2)) * scale  # [B, heads, L, S]
        if visible is not None:
            scores = scores.masked_fill(~visible, float("-inf"))
        if attend_self:
            own_k, own_v = self._split(self.key(normed)), self._split(self.value(normed))
            scores = torch.cat([scores, (q * own_k).sum(-1, keepdim=True) * scale], -1)
        weights = torch.softmax(scores, -1)
        if keep is not None:
            keep.append(weights.detach())
        s = keys.shape[-2]
        out = weights[..., :s] @ values
        if attend_self:
            out = out + weights[..., s:] * own_v
        b, _, n, _ = out.shape
        tokens = tokens + self.proj(out.transpose(1, 2).reshape(b, n, -1))
        return tokens + self.mlp(self.norm2(tokens))


class InContextTransformer(SequenceNet):
    """The causal transformer of the module docstring.

    pixels: flattened image size. dim, heads, layers: the transformer's width, attention heads and
    blocks. encoder: the image encoder e (``"mlp"`` or ``"pixels"``). label_std: the scale of the
    label embeddings E at initialisation (small, as for the token embeddings of GPT-2: with unit
    scale the label would swamp the image in every pair token, and keys would match labels, not
    images).
    """

    def __init__(self, pixels: int, classes: int, dim: int = 64, heads: int = 4, layers: int = 1,
                 encoder: str = "mlp", embedding: int = 64, mlp_ratio: int = 2, label_std: float = 0.02):
        super().__init__()
        self.classes = check_count("classes", classes)
        self.dim = check_count("dim", dim)
        check_count("layers", layers)
        self.encoder = ImageEncoder(pixels, encoder, embedding)
        self.image = nn.Linear(self.encoder.dim, dim)
        self.label = nn.Embedding(classes + 1, dim)  # row `classes` is "label unknown", the queries'
        with torch.no_grad():
            self.label.weight.normal_(0.0, check_positive("label_std", label_std))
        self.blocks = nn.ModuleList(Block(dim, check_count("heads", heads), check_count("mlp_ratio", mlp_ratio))
                                    for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.output = nn.Linear(dim, classes)

    def _tokens(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        image = self.image(self.encoder(x))
        return image + (self.label.weight[self.classes] if y is None else self.label(y))

    def _read(self, x_tr, y_tr, keep: list | None):
        pairs, queries = self._tokens(x_tr, y_tr), self._tokens(x_tr, None)
        t = x_tr.shape[1]
        steps = torch.arange(t, device=x_tr.device)
        causal = steps.unsqueeze(0) <= steps.unsqueeze(1)   # pair s sees pairs s' ≤ s
        earlier = steps.unsqueeze(0) < steps.unsqueeze(1)   # online query t sees pairs s < t
        cache = []
        for block in self.blocks:
            keys, values = block.keys_values(pairs)
            cache.append((keys, values))
            queries = block(queries, keys, values, earlier, attend_self=True, keep=keep)
            pairs = block(pairs, keys, values, causal, attend_self=False)
        return self.output(self.norm(queries)), {"cache": cache}

    def read(self, x_tr, y_tr):
        return self._read(x_tr, y_tr, None)

    def answer(self, state, x_ts):
        queries = self._tokens(x_ts, None)
        for block, (keys, values) in zip(self.blocks, state["cache"]):
            queries = block(queries, keys, values, None, attend_self=True)
        return self.output(self.norm(queries))

    @torch.no_grad()
    def trace(self, x_tr: torch.Tensor, y_tr: torch.Tensor):
        """(online logits, attention weights of the online queries per layer, each [B, heads, T, T + 1]:
        column s < T is pair s (zero where s ≥ t), the last column the query itself)."""
        self.check(x_tr, y_tr)
        weights: list = []
        logits, _ = self._read(x_tr, y_tr, weights)
        return logits, weights
