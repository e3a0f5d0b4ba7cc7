"""The package's build adds two folders of the book to the installed package, so that a pip
install (e.g. on Colab, from a release tag) has them without a checkout:

- ``mlcourse/chapters``: the chapter notebooks, which ``python -m mlcourse.assign --all`` turns
  into student notebooks;
- ``mlcourse/stored_results``: the reproduced records and trained θ of ``book/results``, which
  the chapters load through :mod:`mlcourse.records`.

Everything else about the package is in pyproject.toml. In a checkout (and an editable install)
the package reads ``chapters/`` and ``book/results/`` directly.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
BOOK_DATA = {"chapters": (ROOT / "chapters", "*.ipynb"), "stored_results": (ROOT / "book" / "results", "*")}


class BuildWithBookData(build_py):
    def run(self):
        super().run()
        for target, (source, pattern) in BOOK_DATA.items():
            if not source.is_dir():
                continue
            destination = Path(self.build_lib) / "mlcourse" / target
            destination.mkdir(parents=True, exist_ok=True)
            for path in sorted(source.glob(pattern)):
                if path.is_file():
                    shutil.copy2(path, destination / path.name)


setup(cmdclass={"build_py": BuildWithBookData})
