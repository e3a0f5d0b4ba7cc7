"""The settings and helpers of the transfer-learning chapter: scales that exist and shrink, the
sweep's choice (the first of equals), the table the chapter glues."""

import pytest
import torch

from mlcourse.experiments.transfer import TransferSettings, best, mean_accuracy, summary, sweep, table


def test_scales_shrink_and_keep_the_papers_maml_setting():
    paper, book, quick = (TransferSettings.at(s) for s in ("paper", "book", "quick"))
    assert (paper.maml_inner_lr, paper.maml_batch, paper.maml_iterations, paper.maml_test_steps) == (0.4, 32, 60_000, 3)
    assert quick.maml_iterations < book.maml_iterations < paper.maml_iterations
    assert quick.pretrain_steps < book.pretrain_steps and quick.tasks < book.tasks
    for s in (paper, book, quick):
        assert all(k + s.queries <= 20 for k in s.shots)       # Omniglot has 20 images a class
        assert s.val_shots + s.queries <= 20
        assert 0.0 in s.trunk_multipliers and list(s.alphas) == sorted(s.alphas)
        assert all(0 < d <= 1 for d in s.decays)
    assert book.unfreeze_every == 4 and quick.unfreeze_every == 1


def test_best_takes_the_highest_mean_and_the_first_of_equals():
    results = {0.01: torch.tensor([0.5, 0.7]), 0.1: torch.tensor([0.8, 0.8]), 1.0: torch.tensor([0.9, 0.7])}
    assert best(results) == 0.1                                 # 0.8 = 0.8: the smaller value
    results[1.0] = torch.tensor([0.9, 0.8])
    assert best(results) == 1.0


def test_sweep_and_summary_in_grid_order():
    calls = []

    def evaluate_one(value):
        calls.append(value)
        return {"accuracy": torch.full((4,), value)}

    out = sweep(evaluate_one, (0.3, 0.1))
    assert calls == [0.3, 0.1] and list(out) == [0.3, 0.1]
    mean, half = summary(out)
    torch.testing.assert_close(mean, torch.tensor([0.3, 0.1], dtype=torch.float64))
    assert torch.all(half == 0)


def test_table_has_a_row_per_name_and_marks_missing_cells():
    results = {("a", 1): torch.tensor([0.5, 1.0]), ("a", 5): torch.tensor([1.0, 1.0]), ("b", 5): torch.tensor([0.2, 0.4])}
    text = table(results, ["a", "b"], (1, 5), missing="n/a")
    lines = text.splitlines()
    assert lines[0] == "| | $K = 1$ | $K = 5$ |" and len(lines) == 4
    assert lines[2].startswith("| a | 75.0 ± ") and lines[3].startswith("| b | n/a | 30.0 ± ")
    assert mean_accuracy(results, "b", 5) == pytest.approx(0.3)
