"""train_model: what it records, how schedulers step, resuming exactly, and failing clearly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers import (
    CheckpointError,
    ImageRecipe,
    NonFiniteLossError,
    compute_accuracy,
    set_all_seeds,
    set_deterministic,
    train_model,
)
from helpers.checkpoint import load_checkpoint, save_checkpoint
from tests.support import TinyNet, tiny_loaders, tiny_model

JOB = Path(__file__).resolve().parent / "resume_job.py"


def run(num_epochs=2, lr=0.05, scheduler_factory=None, optimizer_class=torch.optim.SGD, model=None,
        loaders=None, **options):
    """Train the tiny net from a fixed seed; returns (model, history)."""
    set_all_seeds(0)
    train_loader, valid_loader, test_loader = loaders or tiny_loaders()
    model = model or tiny_model()
    optimizer = optimizer_class(model.parameters(), lr=lr)
    scheduler = scheduler_factory(optimizer) if scheduler_factory else None
    history = train_model(model, num_epochs, train_loader, valid_loader, test_loader, optimizer, "cpu",
                          scheduler=scheduler, **options)
    return model, history


def same_run(history_a, history_b) -> bool:
    a, b = asdict(history_a), asdict(history_b)
    a.pop("epoch_times"), b.pop("epoch_times")
    return a == b


def same_weights(model_a, model_b) -> bool:
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    return state_a.keys() == state_b.keys() and all(torch.equal(state_a[k], state_b[k]) for k in state_a)


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


def test_exact_train_accuracy_is_an_eval_mode_pass():
    model, history = run(num_epochs=1, exact_train_accuracy=True)
    train_loader, _, _ = tiny_loaders()
    assert history.train_acc[0] == pytest.approx(compute_accuracy(model, train_loader))


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


class SpyPlateau(torch.optim.lr_scheduler.ReduceLROnPlateau):
    calls: list = []

    def step(self, metrics, *args, **kwargs):
        SpyPlateau.calls.append(metrics)
        super().step(metrics, *args, **kwargs)


def test_step_lr_steps_once_per_epoch_without_a_metric(capsys):
    SpyStepLR.calls = []
    _, history = run(num_epochs=3, lr=0.1, scheduler_factory=lambda opt: SpyStepLR(opt, step_size=1, gamma=0.5))
    # Construction steps once; then once per epoch, never with the accuracy as an epoch number.
    assert SpyStepLR.calls == [()] * 4
    assert history.learning_rates == pytest.approx([0.1, 0.05, 0.025])
    assert "Learning rate 0.1 -> 0.05" in capsys.readouterr().out


def test_plateau_scheduler_reads_validation_accuracy():
    SpyPlateau.calls = []
    _, history = run(num_epochs=3, scheduler_factory=lambda opt: SpyPlateau(opt, mode="max", patience=0))
    assert SpyPlateau.calls == history.valid_acc


def test_plateau_scheduler_in_min_mode_is_an_error():
    with pytest.raises(ValueError, match="mode='max'"):
        run(num_epochs=1, scheduler_factory=lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt))


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


# ----------------------------------------------------------------- reproducibility


@pytest.fixture
def deterministic_settings_restored(monkeypatch):
    """set_deterministic changes process-wide switches; put them back for the tests that follow."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
     torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) = saved[2:]


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


# ----------------------------------------------------------------- checkpoints and resume


def test_stopping_and_resuming_gives_the_same_run(tmp_path):
    model_straight, history_straight = run(num_epochs=4, checkpoint_path=tmp_path / "straight.pt")
    run(num_epochs=2, checkpoint_path=tmp_path / "stopped.pt")
    model_resumed, history_resumed = run(num_epochs=4, checkpoint_path=tmp_path / "stopped.pt")
    assert same_run(history_straight, history_resumed)
    assert same_weights(model_straight, model_resumed)


def test_a_finished_run_loads_without_training(tmp_path, capsys):
    model_trained, history_trained = run(num_epochs=2, checkpoint_path=tmp_path / "run.pt")
    model_loaded, history_loaded = run(num_epochs=2, checkpoint_path=tmp_path / "run.pt")
    assert "holds a finished run" in capsys.readouterr().out
    assert same_run(history_trained, history_loaded)
    assert same_weights(model_trained, model_loaded)


@pytest.mark.parametrize("kill", ["mid-epoch", "mid-save"])
def test_a_run_killed_part_way_resumes_to_the_same_result(kill, tmp_path):
    def job(checkpoint, result, mode):
        return subprocess.run([sys.executable, str(JOB), str(checkpoint), str(result), mode],
                              capture_output=True, text=True, timeout=300)

    straight = job(tmp_path / "straight.pt", tmp_path / "straight.result", "none")
    assert straight.returncode == 0, straight.stderr
    killed = job(tmp_path / "killed.pt", tmp_path / "unused.result", kill)
    assert killed.returncode == -signal.SIGKILL
    assert load_checkpoint(tmp_path / "killed.pt")["history"]["valid_acc"].__len__() == 1
    resumed = job(tmp_path / "killed.pt", tmp_path / "resumed.result", "none")
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming from" in resumed.stdout
    expected, actual = torch.load(tmp_path / "straight.result"), torch.load(tmp_path / "resumed.result")
    expected["history"].pop("epoch_times"), actual["history"].pop("epoch_times")
    assert expected["history"] == actual["history"]
    assert all(torch.equal(expected["model"][k], actual["model"][k]) for k in expected["model"])


def test_an_interrupted_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    save_checkpoint({"format": 1, "epoch": 1}, path)
    before = path.read_bytes()

    def broken_save(obj, file, *args, **kwargs):
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint({"format": 1, "epoch": 2}, path)
    assert path.read_bytes() == before


def test_ctrl_c_keeps_the_checkpoint_and_says_how_to_resume(tmp_path, capsys):
    path = tmp_path / "run.pt"
    model_straight, history_straight = run(num_epochs=3, checkpoint_path=tmp_path / "straight.pt")
    loaders = tiny_loaders()
    prepare, calls = loaders[0].prepare, [0]

    def interrupt_in_epoch_two(images, *args):
        calls[0] += 1
        if calls[0] == 1 + len(loaders[0]) + 2:
            raise KeyboardInterrupt
        return prepare(images, *args)

    loaders[0].prepare = interrupt_in_epoch_two
    with pytest.raises(KeyboardInterrupt):
        run(num_epochs=3, loaders=loaders, checkpoint_path=path)
    message = capsys.readouterr().out
    assert "stopped during epoch 2" in message and "keeps epoch 1" in message and "run this cell again" in message
    model_resumed, history_resumed = run(num_epochs=3, checkpoint_path=path)
    assert same_run(history_straight, history_resumed)
    assert same_weights(model_straight, model_resumed)


# ----------------------------------------------------------------- checkpoints that do not fit


@pytest.fixture
def saved_run(tmp_path):
    path = tmp_path / "run.pt"
    run(num_epochs=1, checkpoint_path=path)
    return path


def _refused(path, match, **run_options):
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match=match):
        run(num_epochs=2, checkpoint_path=path, **run_options)
    assert path.read_bytes() == before, "a checkpoint that does not fit must never be overwritten"


def test_truncated_checkpoint_is_refused_and_kept(saved_run):
    saved_run.write_bytes(saved_run.read_bytes()[:1000])
    _refused(saved_run, "cannot be read")


def test_corrupted_checkpoint_is_refused_and_kept(saved_run):
    data = bytearray(saved_run.read_bytes())
    data[100:400] = os.urandom(300)
    saved_run.write_bytes(bytes(data))
    _refused(saved_run, "cannot be read|another run")


def test_checkpoint_of_another_model_is_refused(saved_run):
    other = TinyNet(num_classes=10, channels=1)
    other.features[0] = nn.Conv2d(1, 6, 3, stride=2, padding=1)
    other.features[1] = nn.BatchNorm2d(6)
    other.features[3] = nn.Conv2d(6, 8, 3, stride=2, padding=1)
    other(torch.zeros(1, 1, 28, 28))
    _refused(saved_run, "another run(.|\n)*model / parameters / features.0.weight: checkpoint has "
                        "\\[4, 1, 3, 3\\], this run has \\[6, 1, 3, 3\\]", model=other)


def test_checkpoint_of_another_optimizer_is_refused(saved_run):
    _refused(saved_run, "another run(.|\n)*optimizer / type: checkpoint has 'SGD', this run has 'Adam'",
             optimizer_class=torch.optim.Adam)


def test_checkpoint_with_other_hyperparameters_is_refused(saved_run):
    _refused(saved_run, "optimizer / groups / 0 / lr: checkpoint has 0.05, this run has 0.5", lr=0.5)


def test_a_file_that_is_no_checkpoint_is_refused(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"some": torch.zeros(2)}, path)
    _refused(path, "not a checkpoint written by train_model")


# ----------------------------------------------------------------- numerical faults


def test_non_finite_loss_stops_at_once_and_keeps_the_last_good_checkpoint(tmp_path):
    path = tmp_path / "run.pt"

    def explode_in_epoch_two(optimizer):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0 if epoch == 0 else 1e30)

    with pytest.raises(NonFiniteLossError) as error:
        run(num_epochs=3, lr=0.05, scheduler_factory=explode_in_epoch_two, checkpoint_path=path,
            logging_interval=1)
    message = str(error.value)
    assert "epoch 2, batch" in message and "learning rate 5e+28" in message and "smaller learning rate" in message
    state = load_checkpoint(path)
    assert len(state["history"]["valid_acc"]) == 1
    assert all(torch.isfinite(tensor).all() for tensor in state["model"].values())


# ----------------------------------------------------------------- bad input


@pytest.mark.parametrize("num_epochs, error", [(0, ValueError), (-1, ValueError), (2.5, TypeError), ("3", TypeError),
                                               (True, TypeError)])
def test_epoch_count_that_is_no_whole_number_of_at_least_one_is_an_error(num_epochs, error):
    with pytest.raises(error, match="num_epochs must be a whole number of at least 1"):
        run(num_epochs=num_epochs)


def test_output_size_other_than_the_number_of_classes_is_an_error():
    with pytest.raises(ValueError, match="outputs \\(5,\\) values per image, but the data has 10 classes"):
        run(model=tiny_model(num_classes=5))


def test_images_too_small_for_the_network_is_an_error():
    deep = nn.Sequential(*[nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.MaxPool2d(2)) for _ in range(6)],
                         nn.Flatten(), nn.Linear(1, 10))
    with pytest.raises(ValueError, match="cannot process images of shape \\(1, 28, 28\\)(.|\n)*too small"):
        run(model=deep)


def test_missing_validation_loader_is_an_error():
    train_loader, _, _ = tiny_loaders()
    model = tiny_model()
    with pytest.raises(ValueError, match="needs a valid_loader"):
        train_model(model, 1, train_loader, None, None, torch.optim.SGD(model.parameters(), lr=0.1))


def test_missing_optimizer_is_an_error():
    train_loader, valid_loader, _ = tiny_loaders()
    with pytest.raises(ValueError, match="needs an optimizer"):
        train_model(tiny_model(), 1, train_loader, valid_loader)


# ----------------------------------------------------------------- speed switches that run on a CPU


def test_channels_last_trains_to_the_same_result():
    _, history_plain = run(num_epochs=1, channels_last=False)
    _, history_channels_last = run(num_epochs=1, channels_last=True)
    assert history_channels_last.batch_losses == pytest.approx(history_plain.batch_losses, rel=1e-4, abs=1e-5)


def test_compiled_model_trains_to_the_same_result():
    def without_dropout():
        model = tiny_model()
        model.classifier[1].p = 0.0  # compiled dropout draws from its own random stream
        return model

    _, history_plain = run(num_epochs=1, model=without_dropout())
    _, history_compiled = run(num_epochs=1, model=without_dropout(), compile_model=True)
    assert history_compiled.batch_losses == pytest.approx(history_plain.batch_losses, rel=1e-3, abs=1e-4)


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
