"""mlcourse: the tested code behind the meta-learning course book."""

from . import runtime

__version__ = "0.1.0"
__all__ = ["runtime", "__version__"]
