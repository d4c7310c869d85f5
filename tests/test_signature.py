"""A checkpoint never stands in for another run: what "the same run" means, and the messages that say so."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import helpers.run_checkpoint
from helpers import (
    DeviceLoader,
    ImageRecipe,
)
from helpers.datasets import make_synthetic_data
from helpers.loaders import get_dataloaders
from tests.support import (
    TinyNet,
    refused,
    run,
    tiny_loaders,
    tiny_model,
)

LR_SCHEDULER = torch.optim.lr_scheduler


# ----------------------------------------------------------------- the model


def model_with(part: str, index: int, module: nn.Module) -> nn.Module:
    model = tiny_model()
    getattr(model, part)[index] = module
    return model


@pytest.mark.parametrize("num_epochs", [1, 2], ids=["finished", "unfinished"])
def test_another_activation_is_another_run(saved_run, num_epochs):
    message = refused(saved_run, num_epochs, model=model_with("features", 2, nn.Tanh()))
    assert "model / layers / features.2: checkpoint has 'ReLU()', this run has 'Tanh()'" in message


def test_another_dropout_rate_is_another_run(saved_run):
    message = refused(saved_run, model=model_with("classifier", 1, nn.Dropout(0.5)))
    assert ("model / layers / classifier.1: checkpoint has 'Dropout(p=0.2, inplace=False)', "
            "this run has 'Dropout(p=0.5, inplace=False)'") in message


def test_checkpoint_of_another_model_is_refused(saved_run):
    other = TinyNet(num_classes=10, channels=1)
    other.features[0] = nn.Conv2d(1, 6, 3, stride=2, padding=1)
    other.features[1] = nn.BatchNorm2d(6)
    other.features[3] = nn.Conv2d(6, 8, 3, stride=2, padding=1)
    other(torch.zeros(1, 1, 28, 28))
    refused(saved_run, match="another run(.|\n)*model / parameters / features.0.weight: checkpoint has "
                        "\\[4, 1, 3, 3\\], this run has \\[6, 1, 3, 3\\]", model=other)


def forward_doubled(self, x):
    return 2 * self.classifier(self.features(x))


def network_with(forward) -> type:
    """A TinyNet whose forward is the given function; every such class has the same name."""

    class Network(TinyNet):
        pass

    Network.forward = forward
    return Network


def test_a_model_whose_code_changed_is_another_run(tmp_path):
    path = tmp_path / "run.pt"
    run(num_epochs=1, checkpoint_path=path, model=built(network_with(plain_forward())))
    message = refused(path, model=built(network_with(forward_doubled)))
    assert "model / code / network_with.<locals>.Network: checkpoint has 'code " in message


def test_a_refused_code_edit_shows_which_class_and_which_lines_changed(tmp_path):
    path = tmp_path / "run.pt"
    run(num_epochs=1, checkpoint_path=path, model=built(network_with(plain_forward())))
    message = refused(path, model=built(network_with(forward_doubled)))
    assert "model / code / network_with.<locals>.Network" in message
    assert "-    return self.classifier(self.features(x))" in message  # the source as saved with the run...
    assert "+    return 2 * self.classifier(self.features(x))" in message  # ...and as it is now


SCALE = 1.0  # read by ScaledNet.forward: a global that a model's code reads is part of the run


class ScaledNet(TinyNet):
    offset = 0.0  # a class attribute that forward reads

    def forward(self, x):
        return SCALE * self.classifier(self.features(x)) + self.offset


@pytest.mark.parametrize("change", ["global", "class attribute"])
def test_a_global_or_class_attribute_read_by_the_model_is_part_of_the_run(tmp_path, monkeypatch, change):
    path = tmp_path / "run.pt"
    run(num_epochs=1, checkpoint_path=path, model=built(ScaledNet))
    if change == "global":
        monkeypatch.setitem(globals(), "SCALE", 2.0)
        expected = "ScaledNet.forward reads SCALE: checkpoint has 1.0, this run has 2.0"
    else:
        monkeypatch.setattr(ScaledNet, "offset", 0.5)
        expected = "ScaledNet.offset: checkpoint has 0.0, this run has 0.5"
    assert expected in refused(path, model=built(ScaledNet))


class ActivatedNet(TinyNet):
    def __init__(self, act=torch.relu):
        super().__init__()
        self.act = act  # a function kept as an attribute, not a module

    def forward(self, x):
        return self.classifier(self.act(self.features(x)))


def test_an_activation_function_kept_as_an_attribute_is_part_of_the_run(tmp_path):
    path = tmp_path / "run.pt"
    run(num_epochs=1, checkpoint_path=path, model=built(ActivatedNet))
    message = refused(path, model=built(functools.partial(ActivatedNet, act=torch.tanh)))
    assert "'act': 'torch.relu'" in message and "'act': 'torch.tanh'" in message


def test_a_class_without_source_is_checked_by_its_compiled_code(tmp_path, capsys):
    """A class made with exec() has no source file; its bytecode still tells one forward from another."""
    def exec_network(expression: str) -> type:
        namespace = {"TinyNet": TinyNet}
        exec(f"class ExecNet(TinyNet):\n    def forward(self, x):\n        return {expression}\n", namespace)
        return namespace["ExecNet"]

    path = tmp_path / "run.pt"
    run(num_epochs=1, checkpoint_path=path, model=built(exec_network("self.classifier(self.features(x))")))
    assert "compared as compiled code, not checked across Python versions" in capsys.readouterr().out
    run(num_epochs=2, checkpoint_path=path, model=built(exec_network("self.classifier(self.features(x))")))
    refused(path, num_epochs=3, match="model / code / ExecNet",
            model=built(exec_network("self.classifier(self.features(x)) * 2")))


def test_stochastic_depth_probability_is_part_of_the_run(tmp_path):
    from torchvision.ops import StochasticDepth

    def with_stochastic_depth(p):
        model = tiny_model()
        model.classifier.insert(1, StochasticDepth(p, "row"))
        return model

    path = tmp_path / "run.pt"
    run(num_epochs=1, checkpoint_path=path, model=with_stochastic_depth(0.0))
    refused(path, match="StochasticDepth\\(p=0.0(.|\n)*StochasticDepth\\(p=0.5", model=with_stochastic_depth(0.5))


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


def tensor_loaders(seed: int):
    """A plain DataLoader over a TensorDataset, as a student might build one; validation from the tiny data."""
    images = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    labels = torch.arange(64) % 10
    _, valid_loader, test_loader = tiny_loaders()
    dataset = torch.utils.data.TensorDataset(images, labels)
    dataset.classes = valid_loader.classes
    return torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=True), valid_loader, test_loader


def test_other_tensors_in_a_plain_dataloader_are_another_run(tmp_path):
    path = tmp_path / "run.pt"
    run(num_epochs=1, checkpoint_path=path, loaders=tensor_loaders(seed=1))
    run(num_epochs=2, checkpoint_path=path, loaders=tensor_loaders(seed=1))  # the same tensors continue
    refused(path, num_epochs=3, match="data / training / content: checkpoint has 'values ", loaders=tensor_loaders(2))


def test_what_cannot_be_checked_is_said_when_the_checkpoint_is_first_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(helpers.run_checkpoint, "_NOTES_SAID", set())  # as in a fresh notebook kernel
    class Shapes(torch.utils.data.Dataset):  # a dataset of one's own: only its length can be seen
        classes = tuple(str(digit) for digit in range(10))

        def __len__(self):
            return 64

        def __getitem__(self, index):
            return torch.full((1, 28, 28), index / 64), index % 10

    _, valid_loader, test_loader = tiny_loaders()
    loaders = (torch.utils.data.DataLoader(Shapes(), batch_size=16), valid_loader, test_loader)
    run(num_epochs=1, checkpoint_path=tmp_path / "run.pt", loaders=loaders)
    output = capsys.readouterr().out
    assert "these parts of this run cannot be checked against the checkpoint" in output
    assert "data / training / content: not checked (a Shapes is described by its length only)" in output
    run(num_epochs=2, checkpoint_path=tmp_path / "run.pt", loaders=loaders)
    assert "cannot be checked" not in capsys.readouterr().out  # said once, when the file is first written
    run(num_epochs=1, checkpoint_path=tmp_path / "another network.pt", loaders=loaders)
    assert "cannot be checked" not in capsys.readouterr().out  # and once per session, not once per network


def test_the_worker_count_of_the_classic_pipeline_is_part_of_the_run(tmp_path):
    data = make_synthetic_data("mnist", num_train=80, num_test=16)

    def classic(workers):
        return get_dataloaders("mnist", 16, data=data, pipeline="classic", num_workers=workers, device="cpu")

    path = tmp_path / "run.pt"
    run(num_epochs=1, checkpoint_path=path, loaders=classic(0))
    refused(path, match="num_workers: checkpoint has 0, this run has 1", loaders=classic(1))


def test_another_recipe_is_another_run(saved_run):
    message = refused(saved_run, loaders=tiny_loaders(recipe=ImageRecipe(hflip=True)))
    assert "data / training / recipe / hflip: checkpoint has False, this run has True" in message



# ----------------------------------------------------------------- optimizer, scheduler and loss


def test_checkpoint_of_another_optimizer_is_refused(saved_run):
    refused(saved_run, match="another run(.|\n)*optimizer / type: checkpoint has 'SGD', this run has 'Adam'",
             optimizer_class=torch.optim.Adam)


def test_checkpoint_with_other_hyperparameters_is_refused(saved_run):
    refused(saved_run, match="optimizer / groups / 0 / lr: checkpoint has 0.05, this run has 0.5", lr=0.5)


def test_another_weight_decay_is_another_run(saved_run):
    def with_weight_decay(params, lr):
        return torch.optim.SGD(params, lr=lr, weight_decay=5e-4)

    message = refused(saved_run, optimizer_class=with_weight_decay)
    assert "optimizer / groups / 0 / weight_decay: checkpoint has 0, this run has 0.0005" in message


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


def test_one_cycle_resumed_with_more_epochs_is_another_run(tmp_path):
    path, batches = tmp_path / "run.pt", len(tiny_loaders()[0])

    def one_cycle(epochs):
        return lambda opt: LR_SCHEDULER.OneCycleLR(opt, max_lr=0.1, epochs=epochs, steps_per_epoch=batches)

    run(num_epochs=3, checkpoint_path=path, scheduler_factory=one_cycle(3))
    message = refused(path, num_epochs=4, scheduler_factory=one_cycle(4))
    assert f"scheduler / total_steps: checkpoint has {3 * batches}, this run has {4 * batches}" in message


def test_a_lambda_schedule_with_another_function_is_another_run(tmp_path):
    path = tmp_path / "run.pt"
    def decaying(optimizer):
        return LR_SCHEDULER.LambdaLR(optimizer, lambda epoch: 0.9 ** epoch)

    def decaying_faster(optimizer):
        return LR_SCHEDULER.LambdaLR(optimizer, lambda epoch: 0.5 ** epoch)

    run(num_epochs=1, checkpoint_path=path, scheduler_factory=decaying)
    message = refused(path, scheduler_factory=decaying_faster)
    assert "scheduler / functions" in message


def test_class_weights_of_the_loss_are_part_of_the_run(saved_run):
    weights = torch.linspace(0.5, 1.5, 10)
    message = refused(saved_run, loss_fn=nn.CrossEntropyLoss(weight=weights))
    run(num_epochs=1, checkpoint_path=saved_run.with_name("weighted.pt"), loss_fn=nn.CrossEntropyLoss(weight=weights))
    refused(saved_run.with_name("weighted.pt"), match="buffers values", loss_fn=nn.CrossEntropyLoss(weight=2 * weights))
    assert "CrossEntropyLoss" in message


class SmoothedLoss:
    """A loss of one's own: an object with a setting, called like a function."""

    def __init__(self, smoothing):
        self.smoothing = smoothing

    def __call__(self, logits, targets):
        return F.cross_entropy(logits, targets, label_smoothing=self.smoothing)


def test_the_setting_of_a_callable_loss_object_is_part_of_the_run(tmp_path):
    path = tmp_path / "run.pt"
    run(num_epochs=1, checkpoint_path=path, loss_fn=SmoothedLoss(0.0))
    refused(path, match="'smoothing': 0.0(.|\n)*'smoothing': 0.5", loss_fn=SmoothedLoss(0.5))


def test_another_loss_is_another_run(saved_run):
    message = refused(saved_run, loss_fn=functools.partial(F.cross_entropy, label_smoothing=0.1))
    assert "loss: checkpoint has 'torch.nn.functional.cross_entropy', this run has \"partial(" in message
    assert "'label_smoothing': 0.1" in message



# ----------------------------------------------------------------- the message


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
