"""train_model: what a run records, how schedulers step, and speed switches that change nothing else."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

import helpers.checkpoint
import helpers.training
from helpers import (
    ImageRecipe,
    compute_accuracy,
    set_deterministic,
)
from helpers.checkpoint import (
    load_checkpoint,
)
from helpers.evaluation import Precision
from tests.support import (
    run,
    same_run,
    same_weights,
    tiny_loaders,
    tiny_model,
)

LR_SCHEDULER = torch.optim.lr_scheduler


# ----------------------------------------------------------------- what a run records


def test_history_has_one_entry_per_epoch_and_batch():
    _, history = run(num_epochs=3)
    batches = len(tiny_loaders()[0])
    assert history.iter_per_epoch == batches
    assert len(history.batch_losses) == 3 * batches
    for values in (history.train_loss, history.train_acc, history.valid_acc, history.valid_loss,
                   history.learning_rates, history.epoch_times):
        assert len(values) == 3
    assert history.test_acc is not None and 0 <= history.test_acc <= 100


def test_history_counts_the_images_trained_on_and_whether_they_were_augmented():
    # 250 images in batches of 32 with drop_last: 7 full batches, 224 images, not 250 and not 8 x 32.
    _, history = run(num_epochs=2, loaders=tiny_loaders(num_train=250))
    assert history.train_images == [224, 224] and history.augmented is False
    _, cropped = run(num_epochs=1, loaders=tiny_loaders(recipe=ImageRecipe(resize=32, crop=28)))
    assert cropped.augmented is True and cropped.train_images == [256]


def test_training_learns_the_synthetic_classes():
    _, history = run(num_epochs=4, lr=0.1)
    assert history.valid_acc[-1] > 80
    assert history.train_loss[-1] < history.train_loss[0]


def test_best_epoch_weights_are_restored_and_tested(tmp_path):
    model, history = run(num_epochs=3, checkpoint_path=tmp_path / "run.pt")
    assert history.best_epoch == 1 + max(range(3), key=lambda i: (history.valid_acc[i], -i))
    best = load_checkpoint(tmp_path / "run.pt")["best_model"]
    assert all(torch.equal(model.state_dict()[k], best[k]) for k in best)
    _, _, test_loader = tiny_loaders()
    assert history.test_acc == pytest.approx(compute_accuracy(model, test_loader))


def test_the_final_test_pass_leaves_the_last_epoch_in_the_checkpoint(tmp_path, monkeypatch):
    """The test pass runs on the best epoch's weights; the checkpoint must keep the last epoch's,
    so that a finished run extended to more epochs continues exactly where it stopped."""
    import helpers.training

    real_evaluate, calls = helpers.training.evaluate, []

    def worse_every_epoch(model, loader, *args):
        loss, accuracy = real_evaluate(model, loader, *args)
        if loader is loaders[1]:  # validation: make epoch 1 the best, whatever the weights
            calls.append(loader)
            accuracy = 100.0 - len(calls)
        return loss, accuracy

    monkeypatch.setattr(helpers.training, "evaluate", worse_every_epoch)
    loaders = tiny_loaders()
    _, history = run(num_epochs=2, loaders=loaders, checkpoint_path=tmp_path / "tested.pt")
    calls.clear()
    loaders = (*tiny_loaders()[:2], None)
    run(num_epochs=2, loaders=loaders, checkpoint_path=tmp_path / "untested.pt")
    assert history.best_epoch == 1 and history.test_acc is not None
    tested, untested = load_checkpoint(tmp_path / "tested.pt"), load_checkpoint(tmp_path / "untested.pt")
    assert all(torch.equal(tested["model"][k], untested["model"][k]) for k in untested["model"])
    assert tested["history"]["test_acc"] == history.test_acc


def test_an_error_in_the_final_test_keeps_the_last_epoch_and_a_rerun_only_tests(tmp_path, monkeypatch, capsys):
    """The last epoch is saved before the final test: whatever fails there, it is never trained again."""
    real_evaluate, loaders = helpers.training.evaluate, tiny_loaders()

    def failing_test(model, loader, *args):
        if loader is loaders[2]:
            raise RuntimeError("the test data could not be read")
        return real_evaluate(model, loader, *args)

    monkeypatch.setattr(helpers.training, "evaluate", failing_test)
    with pytest.raises(RuntimeError, match="the test data could not be read"):
        run(num_epochs=2, loaders=loaders, checkpoint_path=tmp_path / "run.pt")
    saved = load_checkpoint(tmp_path / "run.pt")
    assert len(saved["history"]["valid_acc"]) == 2 and saved["history"]["test_acc"] is None
    monkeypatch.setattr(helpers.training, "evaluate", real_evaluate)
    capsys.readouterr()
    model, history = run(num_epochs=2, loaders=loaders, checkpoint_path=tmp_path / "run.pt")
    out = capsys.readouterr().out
    assert "Epoch 001/002" not in out and "Epoch 002/002" not in out and "Test accuracy" in out  # tested, not trained
    assert history.num_epochs == 2 and history.test_acc == pytest.approx(compute_accuracy(model, loaders[2]))
    assert load_checkpoint(tmp_path / "run.pt")["history"]["test_acc"] == history.test_acc


def test_exact_train_accuracy_is_an_eval_mode_pass():
    model, history = run(num_epochs=1, exact_train_accuracy=True)
    train_loader, _, _ = tiny_loaders()
    assert history.train_acc[0] == pytest.approx(compute_accuracy(model, train_loader))


def test_exact_train_accuracy_uses_the_precision_and_layout_of_validation(monkeypatch):
    real_evaluate, calls = helpers.training.evaluate, []

    def spy(model, loader, precision=None):
        calls.append((loader, precision))
        return real_evaluate(model, loader, precision)

    monkeypatch.setattr(helpers.training, "evaluate", spy)
    loaders = tiny_loaders()
    run(num_epochs=1, loaders=(*loaders[:2], None), channels_last=True, exact_train_accuracy=True)
    assert [loader for loader, _ in calls] == list(loaders[:2])
    assert calls[0][1] == calls[1][1] == Precision(amp_dtype=None, channels_last=True)


def test_an_exact_training_accuracy_pass_changes_nothing_about_the_training():
    """The extra pass runs with every random state put back: the same losses, the same weights."""
    model_plain, plain = run(num_epochs=2)
    model_exact, exact = run(num_epochs=2, exact_train_accuracy=True)
    assert plain.batch_losses == exact.batch_losses and plain.valid_acc == exact.valid_acc
    assert same_weights(model_plain, model_exact) and plain.train_acc != exact.train_acc


def test_smoke_mode_leaves_the_number_of_epochs_to_the_caller(monkeypatch, capsys):
    monkeypatch.setenv("SMOKE_TEST", "1")
    _, history = run(num_epochs=3)
    assert history.num_epochs == 3
    assert "Smoke" not in capsys.readouterr().out



# ----------------------------------------------------------------- schedulers


class SpyStepLR(torch.optim.lr_scheduler.StepLR):
    calls: list = []

    def step(self, *args, **kwargs):
        SpyStepLR.calls.append(args)
        super().step(*args, **kwargs)


def test_a_rate_that_would_train_nothing_is_not_announced(capsys):
    """After the last epoch the new rate trains nothing: a one-epoch run says nothing of "0.1 -> 0.001"."""
    run(num_epochs=1, lr=0.1, scheduler_factory=lambda opt: torch.optim.lr_scheduler.MultiStepLR(opt, [1, 1]))
    assert "Learning rate" not in capsys.readouterr().out


def test_step_lr_steps_once_per_epoch_without_a_metric(capsys):
    SpyStepLR.calls = []
    _, history = run(num_epochs=3, lr=0.1, scheduler_factory=lambda opt: SpyStepLR(opt, step_size=1, gamma=0.5))
    # Construction steps once; then once per epoch, never with the accuracy as an epoch number.
    assert SpyStepLR.calls == [()] * 4
    assert history.learning_rates == pytest.approx([0.1, 0.05, 0.025])
    assert "Learning rate 0.1 -> 0.05" in capsys.readouterr().out


class SpyPlateau(torch.optim.lr_scheduler.ReduceLROnPlateau):
    calls: list = []

    def step(self, metrics, *args, **kwargs):
        SpyPlateau.calls.append(metrics)
        super().step(metrics, *args, **kwargs)


def test_plateau_scheduler_reads_validation_accuracy():
    SpyPlateau.calls = []
    _, history = run(num_epochs=3, scheduler_factory=lambda opt: SpyPlateau(opt, mode="max", patience=0))
    assert SpyPlateau.calls == history.valid_acc


def test_one_cycle_steps_after_every_batch_as_documented():
    batches = len(tiny_loaders()[0])

    def one_cycle(optimizer):
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, epochs=3, steps_per_epoch=batches)

    reference = one_cycle(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1))
    expected = []
    for _ in range(3):
        expected.append(reference.get_last_lr()[0])
        for _ in range(batches):
            reference.optimizer.step()
            reference.step()
    _, history = run(num_epochs=3, lr=0.1, scheduler_factory=one_cycle)  # a step too many would raise
    assert history.learning_rates == pytest.approx(expected)


def test_lambda_schedule_steps_once_per_epoch():
    def one_cycle(opt):
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: [1.0, 0.5, 0.25][min(epoch, 2)])

    _, history = run(num_epochs=3, lr=0.1, scheduler_factory=one_cycle)
    assert history.learning_rates == pytest.approx([0.1, 0.05, 0.025])



# ----------------------------------------------------------------- repeatable runs


def test_same_seed_gives_identical_histories_and_weights(deterministic_settings_restored):
    set_deterministic()
    model_a, history_a = run(num_epochs=2)
    model_b, history_b = run(num_epochs=2)
    assert same_run(history_a, history_b)
    assert same_weights(model_a, model_b)


def test_set_deterministic_works_on_cpu_and_sets_cublas_workspace(deterministic_settings_restored):
    set_deterministic(allow_tf32=False)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.allow_tf32
    set_deterministic(allow_tf32=True)
    assert torch.backends.cudnn.allow_tf32



# ----------------------------------------------------------------- speed switches that run on a CPU


def test_channels_last_trains_to_the_same_result():
    _, history_plain = run(num_epochs=1, channels_last=False)
    _, history_channels_last = run(num_epochs=1, channels_last=True)
    assert history_channels_last.batch_losses == pytest.approx(history_plain.batch_losses, rel=1e-4, abs=1e-5)


@pytest.mark.slow
def test_compiled_model_trains_to_the_same_result():
    def without_dropout():
        model = tiny_model()
        model.classifier[1].p = 0.0  # compiled dropout draws from its own random stream
        return model

    _, history_plain = run(num_epochs=1, model=without_dropout())
    _, history_compiled = run(num_epochs=1, model=without_dropout(), compile_model=True)
    assert history_compiled.batch_losses == pytest.approx(history_plain.batch_losses, rel=1e-3, abs=1e-4)
