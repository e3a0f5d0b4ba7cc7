"""Meta-learning methods: each is a pair (θ, Alg), an adaptation procedure and a meta-update."""

from .functional import sgd_steps, task_loss, task_metrics
from .maml import MAML

__all__ = ["MAML", "sgd_steps", "task_loss", "task_metrics"]
