"""A checkpoint never stands in for another run: what "the same run" means, and the messages that say so."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import CheckpointError, compute_accuracy, train_model
from helpers.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from helpers.loaders import DeviceLoader, ImageRecipe
from tests.support import TinyNet, tiny_loaders, tiny_model
from tests.test_training import run, same_run, same_weights

LR_SCHEDULER = torch.optim.lr_scheduler


def refused(path, num_epochs=2, **run_options) -> str:
    """The refusal message; the checkpoint must come out byte for byte as it went in."""
    before = path.read_bytes()
    with pytest.raises(CheckpointError) as error:
        run(num_epochs=num_epochs, checkpoint_path=path, **run_options)
    assert path.read_bytes() == before, "a checkpoint of another run must never be overwritten"
    message = str(error.value)
    assert "delete" not in message.lower(), "never advise deleting a checkpoint that holds finished epochs"
    return message


@pytest.fixture
def saved_run(tmp_path):
    """One finished epoch of the tiny run."""
    path = tmp_path / "run.pt"
    run(num_epochs=1, checkpoint_path=path)
    return path


def model_with(part: str, index: int, module: nn.Module) -> nn.Module:
    model = tiny_model()
    getattr(model, part)[index] = module
    return model


# ----------------------------------------------------------------- the model


@pytest.mark.parametrize("num_epochs", [1, 2], ids=["finished", "unfinished"])
def test_another_activation_is_another_run(saved_run, num_epochs):
    message = refused(saved_run, num_epochs, model=model_with("features", 2, nn.Tanh()))
    assert "model / layers / features.2: checkpoint has 'ReLU()', this run has 'Tanh()'" in message


def test_another_dropout_rate_is_another_run(saved_run):
    message = refused(saved_run, model=model_with("classifier", 1, nn.Dropout(0.5)))
    assert ("model / layers / classifier.1: checkpoint has 'Dropout(p=0.2, inplace=False)', "
            "this run has 'Dropout(p=0.5, inplace=False)'") in message


def forward_doubled(self, x):
    return 2 * self.classifier(self.features(x))


def network_with(forward) -> type:
    """A TinyNet whose forward is the given function; every such class has the same name."""

    class Network(TinyNet):
        pass

    Network.forward = forward
    return Network


def commented_forward():
    def forward(self, x):
        # Why: a comment changes no computation.
        return self.classifier(self.features(x))  # nor does this one

    return forward


def plain_forward():
    def forward(self, x):
        return self.classifier(self.features(x))

    return forward


def built(network_class) -> nn.Module:
    torch.manual_seed(0)
    model = network_class()
    model(torch.zeros(1, 1, 28, 28))
    return model


def test_a_model_whose_code_changed_is_another_run(tmp_path):
    path = tmp_path / "run.pt"
    run(num_epochs=1, checkpoint_path=path, model=built(network_with(plain_forward())))
    message = refused(path, model=built(network_with(forward_doubled)))
    assert "model / code / network_with.<locals>.Network: checkpoint has 'code " in message


def test_comments_in_the_model_code_do_not_make_another_run(tmp_path):
    path = tmp_path / "run.pt"
    run(num_epochs=1, checkpoint_path=path, model=built(network_with(plain_forward())))
    _, history = run(num_epochs=2, checkpoint_path=path, model=built(network_with(commented_forward())))
    assert history.num_epochs == 2


# ----------------------------------------------------------------- the data


def test_other_images_of_the_same_shape_are_another_run(saved_run):
    train, valid, test = tiny_loaders()
    other = DeviceLoader(255 - train.images, train.labels, train.batch_size, train.recipe, train.classes,
                         train=True, shuffle=True, drop_last=True, seed=0, device="cpu")
    message = refused(saved_run, loaders=(other, valid, test))
    assert "data / training / content: checkpoint has '" in message
    assert "data / validation" not in message


def test_another_recipe_is_another_run(saved_run):
    message = refused(saved_run, loaders=tiny_loaders(recipe=ImageRecipe(hflip=True)))
    assert "data / training / recipe / hflip: checkpoint has False, this run has True" in message


def test_a_finished_run_tested_on_other_data_is_tested_again(tmp_path):
    path = tmp_path / "run.pt"
    _, trained = run(num_epochs=1, checkpoint_path=path)
    train, valid, test = tiny_loaders()
    flipped = DeviceLoader(test.images.flip(-1), (test.labels + 1) % 10, test.batch_size, test.recipe, test.classes,
                           device="cpu")
    model, loaded = run(num_epochs=1, checkpoint_path=path, loaders=(train, valid, flipped))
    assert loaded.test_acc == pytest.approx(compute_accuracy(model, flipped)) and loaded.test_acc != trained.test_acc


# ----------------------------------------------------------------- the optimizer, scheduler and loss


@pytest.mark.parametrize("first, second, line", [
    (lambda opt: LR_SCHEDULER.CosineAnnealingLR(opt, T_max=3), lambda opt: LR_SCHEDULER.CosineAnnealingLR(opt, T_max=6),
     "scheduler / T_max: checkpoint has 3, this run has 6"),
    (lambda opt: LR_SCHEDULER.StepLR(opt, 1, gamma=0.5), lambda opt: LR_SCHEDULER.StepLR(opt, 1, gamma=0.9),
     "scheduler / gamma: checkpoint has 0.5, this run has 0.9"),
    (lambda opt: LR_SCHEDULER.StepLR(opt, 1), None, "scheduler / type: checkpoint has 'StepLR', this run has None"),
], ids=["cosine T_max", "step gamma", "scheduler removed"])
def test_other_scheduler_settings_are_another_run(tmp_path, first, second, line):
    path = tmp_path / "run.pt"
    run(num_epochs=1, checkpoint_path=path, scheduler_factory=first)
    assert line in refused(path, scheduler_factory=second)


def test_one_cycle_planned_for_fewer_epochs_is_refused_before_training():
    batches = len(tiny_loaders()[0])
    model = tiny_model()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with pytest.raises(ValueError, match=f"plans {3 * batches} steps, but the run takes {4 * batches}"):
        run(num_epochs=4, model=model, scheduler_factory=lambda opt: LR_SCHEDULER.OneCycleLR(
            opt, max_lr=0.1, epochs=3, steps_per_epoch=batches))
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


def test_one_cycle_resumed_with_more_epochs_is_another_run(tmp_path):
    path, batches = tmp_path / "run.pt", len(tiny_loaders()[0])

    def one_cycle(epochs):
        return lambda opt: LR_SCHEDULER.OneCycleLR(opt, max_lr=0.1, epochs=epochs, steps_per_epoch=batches)

    run(num_epochs=3, checkpoint_path=path, scheduler_factory=one_cycle(3))
    message = refused(path, num_epochs=4, scheduler_factory=one_cycle(4))
    assert f"scheduler / total_steps: checkpoint has {3 * batches}, this run has {4 * batches}" in message


def test_another_loss_is_another_run(saved_run):
    message = refused(saved_run, loss_fn=functools.partial(F.cross_entropy, label_smoothing=0.1))
    assert "loss: checkpoint has 'torch.nn.functional.cross_entropy', this run has \"partial(" in message
    assert "'label_smoothing': 0.1" in message


def test_another_weight_decay_is_another_run(saved_run):
    def with_weight_decay(params, lr):
        return torch.optim.SGD(params, lr=lr, weight_decay=5e-4)

    message = refused(saved_run, optimizer_class=with_weight_decay)
    assert "optimizer / groups / 0 / weight_decay: checkpoint has 0, this run has 0.0005" in message


# ----------------------------------------------------------------- what the message says


def test_every_difference_is_listed_in_full(saved_run):
    class Described(nn.Identity):
        """A layer whose description is long and differs only at its very end."""

        def __init__(self, ending):
            super().__init__()
            self.note = "x" * 300 + ending

    model = model_with("features", 2, nn.Tanh())
    model.features.append(Described("A"))
    saved_path = saved_run.with_name("long.pt")
    run(num_epochs=1, checkpoint_path=saved_path, model=model)
    other = model_with("classifier", 1, nn.Dropout(0.5))
    other.features[2] = nn.Tanh()
    other.features.append(Described("B"))
    message = refused(saved_path, model=other, lr=0.5)
    assert "differs from it in 3 place(s)" in message
    assert repr(f"Described() {{'note': '{'x' * 300}A'}}") in message
    assert repr(f"Described() {{'note': '{'x' * 300}B'}}") in message
    assert "classifier.1: checkpoint has 'Dropout(p=0.2, inplace=False)'" in message
    assert "optimizer / groups / 0 / lr: checkpoint has 0.05, this run has 0.5" in message


def test_the_message_names_a_free_checkpoint_path_beside_the_old_one(saved_run):
    saved_run.with_name("run-2.pt").write_bytes(b"taken")
    message = refused(saved_run, lr=0.5)
    assert f"checkpoint_path='{saved_run.with_name('run-3.pt')}'" in message


def test_a_finished_run_says_how_to_train_again_without_deleting_it(saved_run, capsys):
    run(num_epochs=1, checkpoint_path=saved_run)
    output = capsys.readouterr().out
    assert "holds a finished run" in output and "delete" not in output.lower()
    assert f"checkpoint_path='{saved_run.with_name('run-2.pt')}'" in output


# ----------------------------------------------------------------- the same run goes on


def test_more_epochs_of_the_same_run_continue_exactly(tmp_path):
    def step_lr(opt):
        return LR_SCHEDULER.StepLR(opt, step_size=1, gamma=0.5)

    model_straight, history_straight = run(num_epochs=3, checkpoint_path=tmp_path / "straight.pt",
                                           scheduler_factory=step_lr)
    run(num_epochs=1, checkpoint_path=tmp_path / "extended.pt", scheduler_factory=step_lr)
    model_extended, history_extended = run(num_epochs=3, checkpoint_path=tmp_path / "extended.pt",
                                           scheduler_factory=step_lr)
    assert same_run(history_straight, history_extended)
    assert same_weights(model_straight, model_extended)


# ----------------------------------------------------------------- the checkpoint format


def rewritten(path, change) -> None:
    state = load_checkpoint(path)
    change(state)
    save_checkpoint(state, path)


def test_a_newer_format_is_refused_and_never_rewritten(saved_run):
    rewritten(saved_run, lambda state: state.update(format=CHECKPOINT_FORMAT + 1))
    message = refused(saved_run)
    assert f"newer version of these helpers (checkpoint format {CHECKPOINT_FORMAT + 1}" in message
    assert torch.load(saved_run, weights_only=True)["format"] == CHECKPOINT_FORMAT + 1


def test_an_older_format_is_refused(saved_run):
    rewritten(saved_run, lambda state: state.update(format=1))
    assert "older version of these helpers (checkpoint format 1)" in refused(saved_run)


@pytest.mark.parametrize("part", ["rng", "signature", "history"])
def test_a_restructured_checkpoint_is_refused_clearly(saved_run, part):
    rewritten(saved_run, lambda state: state.pop(part))
    assert f"lacks {part}" in refused(saved_run)


def test_a_history_in_another_layout_is_refused_clearly(saved_run):
    rewritten(saved_run, lambda state: state["history"].update(accuracy=[1.0]))
    assert "The history in" in refused(saved_run)


# ----------------------------------------------------------------- objects that are not fresh


def test_an_optimizer_of_another_model_is_refused_before_training():
    train_loader, valid_loader, _ = tiny_loaders()
    model, other = tiny_model(), tiny_model(seed=1)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with pytest.raises(ValueError, match="not this model's parameters: it was built for another model"):
        train_model(model, 1, train_loader, valid_loader, None, torch.optim.SGD(other.parameters(), lr=0.1), "cpu")
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


def test_rerunning_only_the_training_call_is_refused(tmp_path):
    train_loader, valid_loader, _ = tiny_loaders()
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    train_model(model, 1, train_loader, valid_loader, None, optimizer, "cpu")
    with pytest.raises(ValueError, match="already trained(.|\n)*rerun the cell that builds the model"):
        train_model(model, 2, train_loader, valid_loader, None, optimizer, "cpu")
