"""mlcourse: the tested code behind the meta-learning course book."""

from . import runtime

# The release: pyproject.toml reads it, the chapters' Colab set-up cells install its tag v<version>.
__version__ = "0.2.0"
__all__ = ["runtime", "__version__"]
