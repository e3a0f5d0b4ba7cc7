"""Tasks as the lecture defines them, T_i = {p_i(x), p_i(y|x), L_i}, and the families they come from."""

from .batch import Task, TaskBatch
from .episodes import EpisodeSampler
from .omniglot import Omniglot, OmniglotError, load_omniglot
from .sinusoid import SinusoidFamily

__all__ = ["Task", "TaskBatch", "EpisodeSampler", "Omniglot", "OmniglotError", "load_omniglot", "SinusoidFamily"]
