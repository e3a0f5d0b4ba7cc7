"""Meta-reinforcement learning: task distributions of MDPs, Gaussian policies, policy gradients, MAML-RL.

    navigation  2D navigation (Finn et al. 2017), batched over tasks × trajectories in torch
    cheetah     half-cheetah goal velocity / direction on gymnasium's MuJoCo HalfCheetah-v5 (lazy import)
    gym         2D navigation through the gymnasium API ("mlcourse/Navigation2D-v0")
    policy      the Gaussian MLP policy π_θ(a|s) as a function of a parameter dict
    rollout     trajectories of a meta-batch, [tasks, trajectories, time, ...]
    returns     discounted returns, GAE, the linear feature baseline
    trpo        the KL-constrained step (its conjugate gradient is mlcourse.linalg's)
    maml_rl     MAML for RL: the inner policy-gradient step, the DiCE meta-gradient, the TRPO meta-step
"""

from .maml_rl import MAMLRL, MetaBatch, inner_objective, magic_box
from .navigation import Navigation2D
from .policy import GaussianPolicy
from .rollout import Trajectories, rollout
from .trpo import TRPO

__all__ = ["MAMLRL", "MetaBatch", "Navigation2D", "GaussianPolicy", "TRPO", "Trajectories", "inner_objective",
           "magic_box", "rollout"]
