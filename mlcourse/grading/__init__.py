"""The bulk grader: submissions run in sandboxes, scores come only from the grader's own code.

- :mod:`.submissions` reads the untrusted notebooks (answer cells only, metadata ignored);
- :mod:`.sandbox` runs one worker per submission under bubblewrap (or a weaker fallback);
- :mod:`.worker` is what runs inside: it executes the answer cells and calls their functions;
- :mod:`.protocol` is the plain-data channel between the two (tensors as bytes, never pickle);
- :mod:`.grader` computes the references, judges the replies and writes the CSV and feedback;
- :mod:`.integrity` flags answers that call the package's own implementation;
- :mod:`.assignment` is the teacher's list of exercises, written by ``mlcourse.assign``.

``python -m mlcourse.grade`` is the command line.
"""
