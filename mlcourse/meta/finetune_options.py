"""The options of fine-tuning (see :mod:`mlcourse.meta.finetune`), checked, and the training plan
they imply: which parameters train at each step, and the learning-rate multiplier of each.

Layer groups are named by parameter-name prefixes, from input to output. By default a parameter
``a.b.c.weight`` belongs to group ``a.b`` (a block of a Sequential) and ``head.weight`` to ``head``;
pass ``groups=[...]`` for another network (e.g. the stages of a torchvision ResNet).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..checks import check_count, check_positive
from ..nets import Params

OPTIONS = ("lr", "steps", "layer_lr", "freeze", "unfreeze_every", "head", "init", "select", "folds", "groups")
HEADS = ("random", "zero", "keep")
INITS = ("pretrained", "scratch")


@dataclass(frozen=True)
class Options:
    """The fine-tuning options (see the module docstring); make them with :func:`options`."""

    lr: float = 0.1
    steps: int = 20
    layer_lr: float | dict | None = None
    freeze: tuple = ()
    unfreeze_every: int | None = None
    head: str = "random"
    init: str = "pretrained"
    select: dict | None = None
    folds: int = 3
    groups: tuple | None = None


def options(base: Options | None = None, **kwargs) -> Options:
    """Checked :class:`Options`: unknown names and bad values fail with what is allowed."""
    unknown = sorted(set(kwargs) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown fine-tuning option(s) {unknown}; allowed: {', '.join(OPTIONS)}.")
    o = replace(base or Options(), **kwargs)
    check_positive("lr (α)", o.lr)
    check_count("steps", o.steps, minimum=0)
    if o.unfreeze_every is not None:
        check_count("unfreeze_every", o.unfreeze_every)
    if o.head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {o.head!r}.")
    if o.init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {o.init!r}.")
    if isinstance(o.layer_lr, (int, float)) and not isinstance(o.layer_lr, bool):
        if not 0 < o.layer_lr <= 1:
            raise ValueError(f"layer_lr as a decay factor must lie in (0, 1], got {o.layer_lr!r}.")
    elif isinstance(o.layer_lr, dict):
        for name, m in o.layer_lr.items():
            check_positive(f"layer_lr[{name!r}]", m)
    elif o.layer_lr is not None:
        raise ValueError(f"layer_lr must be None, a decay factor in (0, 1] or a dict {{group: multiplier}}, got {o.layer_lr!r}.")
    if isinstance(o.freeze, str):
        o = replace(o, freeze=(o.freeze,))
    o = replace(o, freeze=tuple(o.freeze), groups=None if o.groups is None else tuple(o.groups))
    if o.select is not None:
        if not isinstance(o.select, dict) or not o.select or set(o.select) - {"lr", "steps"}:
            raise ValueError(f"select must be a dict with keys 'lr' and/or 'steps' (lists of candidates), got {o.select!r}.")
        for v in o.select.get("lr", []):
            check_positive("select['lr'] candidate", v)
        for v in o.select.get("steps", []):
            check_count("select['steps'] candidate", v)
        if any(len(v) == 0 for v in o.select.values()):
            raise ValueError(f"select lists need at least one candidate, got {o.select!r}.")
        check_count("folds", o.folds, minimum=2)
    return o


# --- layer groups and the training plan -----------------------------------------------------------
def layer_groups(params: Params, groups=None) -> list[tuple[str, list[str]]]:
    """[(group, parameter names)] from input to output (the order of ``params``)."""
    names = list(params)
    if groups is None:
        keys = [".".join(n.split(".")[:2]) if n.count(".") >= 2 else n.split(".")[0] for n in names]
        ordered = list(dict.fromkeys(keys))
        return [(g, [n for n, k in zip(names, keys) if k == g]) for g in ordered]
    out = []
    for g in groups:
        members = [n for n in names if n == g or n.startswith(g + ".")]
        if not members:
            raise ValueError(f"group {g!r} matches no parameter; parameters are {names[:6]}{'...' if len(names) > 6 else ''}.")
        out.append((g, members))
    covered = [n for _, m in out for n in m]
    missing = [n for n in names if n not in covered]
    if missing or len(covered) != len(set(covered)):
        raise ValueError(f"groups must cover every parameter once; uncovered {missing[:4]}.")
    return out


def _match(groups, spec: str, what: str) -> set[str]:
    """Parameter names of the group or prefix ``spec``; an unknown name is an error."""
    names = {n for g, members in groups if g == spec or g.startswith(spec + ".") for n in members}
    names |= {n for _, members in groups for n in members if n == spec or n.startswith(spec + ".")}
    if not names:
        raise ValueError(f"{what} names a layer {spec!r} that the network does not have; "
                         f"its layer groups are {[g for g, _ in groups]}.")
    return names


def plan(params: Params, o: Options) -> tuple[list[set[str]], dict[str, float]]:
    """(trainable names at each step, lr multiplier of each name), from the options."""
    groups = layer_groups(params, o.groups)
    frozen = set().union(*[_match(groups, f, "freeze") for f in o.freeze]) if o.freeze else set()
    last = len(groups) - 1
    scale = {}
    for index, (g, members) in enumerate(groups):
        m = 1.0
        if isinstance(o.layer_lr, (int, float)):
            m = float(o.layer_lr) ** (last - index)
        for n in members:
            scale[n] = m
    if isinstance(o.layer_lr, dict):
        for spec, m in o.layer_lr.items():
            for n in _match(groups, spec, "layer_lr"):
                scale[n] = float(m)
    schedule = []
    for step in range(o.steps):
        top = 0 if o.unfreeze_every is None else max(0, last - step // o.unfreeze_every)
        schedule.append({n for g, members in groups[top:] for n in members} - frozen)
    return schedule, scale
