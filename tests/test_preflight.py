"""train_model's checks: what is wrong before the first step fails before it, clearly; a run that diverges
stops at once, keeps its last good epoch, and says what to do."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

from helpers import (
    DeviceLoader,
    ImageRecipe,
    NonFiniteLossError,
    train_model,
)
from helpers.checkpoint import (
    load_checkpoint,
)
from tests.support import (
    run,
    snapshot,
    tiny_loaders,
    tiny_model,
    unchanged,
)

LR_SCHEDULER = torch.optim.lr_scheduler


# ----------------------------------------------------------------- numbers and arguments


@pytest.mark.parametrize("num_epochs, error", [(0, ValueError), (-1, ValueError), (2.5, TypeError), ("3", TypeError),
                                               (True, TypeError)])
def test_epoch_count_that_is_no_whole_number_of_at_least_one_is_an_error(num_epochs, error):
    with pytest.raises(error, match="num_epochs must be a whole number of at least 1"):
        run(num_epochs=num_epochs)


def test_a_numpy_integer_is_a_number_of_epochs():
    _, history = run(num_epochs=np.int64(2))
    assert history.num_epochs == 2


@pytest.mark.parametrize("value", ["10", 2.5, None])
def test_a_logging_interval_that_is_no_whole_number_is_an_error(value):
    with pytest.raises(TypeError, match=f"logging_interval must be a whole number of at least 1, e.g. 50 "
                                        f"\\(got {value!r}, a {type(value).__name__}\\)"):
        run(num_epochs=1, logging_interval=value)


def test_missing_validation_loader_is_an_error():
    train_loader, _, _ = tiny_loaders()
    model = tiny_model()
    with pytest.raises(ValueError, match="needs a valid_loader"):
        train_model(model, 1, train_loader, None, None, torch.optim.SGD(model.parameters(), lr=0.1))


@pytest.mark.parametrize("role", ["train_loader", "valid_loader", "test_loader"])
def test_an_empty_loader_is_named_before_training(role, tmp_path):
    loaders = dict(zip(("train_loader", "valid_loader", "test_loader"), tiny_loaders()))
    loaders[role] = DeviceLoader(torch.zeros(0, 1, 28, 28, dtype=torch.uint8), torch.zeros(0, dtype=torch.long), 32,
                                 ImageRecipe(), loaders["valid_loader"].classes, device="cpu")
    model = tiny_model()
    with pytest.raises(ValueError, match=f"The {role} gives no batches: its dataset is empty"):
        train_model(model, 1, *loaders.values(), torch.optim.SGD(model.parameters(), lr=0.1), "cpu",
                    checkpoint_path=tmp_path / "run.pt")
    assert not (tmp_path / "run.pt").exists()  # found before the first epoch, not after it


def test_the_optimizer_is_a_required_argument():
    train_loader, valid_loader, test_loader = tiny_loaders()
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'optimizer'"):
        train_model(tiny_model(), 1, train_loader, valid_loader, test_loader)
    with pytest.raises(TypeError, match="optimizer must be a torch optimizer, e.g. torch.optim.SGD"):
        train_model(tiny_model(), 1, train_loader, valid_loader, test_loader, None)


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



# ----------------------------------------------------------------- schedulers


def test_a_plateau_scheduler_in_min_mode_is_refused_before_training():
    model = tiny_model()
    before = snapshot(model)
    with pytest.raises(ValueError, match="mode='max'"):
        run(num_epochs=1, model=model, scheduler_factory=lambda opt: LR_SCHEDULER.ReduceLROnPlateau(opt, mode="min"))
    assert unchanged(model, before)


def test_a_scheduler_of_another_optimizer_is_refused():
    other = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="scheduler was built for another optimizer"):
        run(num_epochs=1, scheduler_factory=lambda opt: LR_SCHEDULER.StepLR(other, 1))


def test_one_cycle_planned_for_fewer_epochs_is_refused_before_training():
    batches = len(tiny_loaders()[0])
    model = tiny_model()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with pytest.raises(ValueError, match=f"plans {3 * batches} steps, but the run takes {4 * batches}"):
        run(num_epochs=4, model=model, scheduler_factory=lambda opt: LR_SCHEDULER.OneCycleLR(
            opt, max_lr=0.1, epochs=3, steps_per_epoch=batches))
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())



# ----------------------------------------------------------------- the model and the data


def test_output_size_other_than_the_number_of_classes_is_an_error():
    with pytest.raises(ValueError, match="outputs \\(5,\\) values per image, but the data has 10 classes"):
        run(model=tiny_model(num_classes=5))


def test_images_too_small_for_the_network_is_an_error():
    deep = nn.Sequential(*[nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.MaxPool2d(2)) for _ in range(6)],
                         nn.Flatten(), nn.Linear(1, 10))
    with pytest.raises(ValueError, match="cannot process images of shape \\(1, 28, 28\\)(.|\n)*too small"):
        run(model=deep)


@pytest.mark.parametrize("name", ["features.0.weight", "features.1.running_var"])
def test_non_finite_weights_or_buffers_are_refused_before_training(name):
    model = tiny_model()
    model.state_dict()[name].view(-1)[0] = float("nan") if name.endswith("weight") else float("inf")
    with pytest.raises(ValueError) as error:
        run(num_epochs=1, model=model)
    message = str(error.value)
    assert f"The model's {name} is NaN or infinite before training" in message
    assert "rerun the cell that builds the model" in message



# ----------------------------------------------------------------- precision


@pytest.mark.parametrize("amp", [True, torch.float16, torch.bfloat16])
def test_mixed_precision_on_a_cpu_is_a_clear_error(amp):
    with pytest.raises(ValueError, match=f"amp={amp} needs a CUDA GPU; this run is on cpu"):
        run(num_epochs=1, amp=amp)


def test_an_unknown_amp_setting_is_a_clear_error():
    with pytest.raises(ValueError, match="amp must be None \\(automatic\\), True, False, torch.float16 or "
                                         "torch.bfloat16 \\(got 'fp16'\\)"):
        run(num_epochs=1, amp="fp16")



# ----------------------------------------------------------------- divergence


def test_non_finite_loss_stops_at_once_and_keeps_the_last_good_checkpoint(tmp_path):
    path = tmp_path / "run.pt"

    def explode_in_epoch_two(optimizer):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0 if epoch == 0 else 1e30)

    with pytest.raises(NonFiniteLossError) as error:
        run(num_epochs=3, lr=0.05, scheduler_factory=explode_in_epoch_two, checkpoint_path=path,
            logging_interval=1)
    message = str(error.value)
    assert "epoch 2, batch" in message and "learning rate 5e+28" in message and "smaller learning rate" in message
    assert "still holds epoch 1" in message and "rerun the cell that builds the model" in message
    state = load_checkpoint(path)
    assert len(state["history"]["valid_acc"]) == 1
    assert all(torch.isfinite(tensor).all() for tensor in state["model"].values())


def test_a_huge_learning_rate_is_stopped_even_without_a_nan(tmp_path):
    path = tmp_path / "run.pt"
    with pytest.raises(NonFiniteLossError, match="The loss (reached|became) .* in epoch 1, batch .* \\(learning rate "
                                                 "1e\\+06\\)(.|\n)*No checkpoint of this run was written"):
        run(num_epochs=2, lr=1e6, checkpoint_path=path)
    assert not path.exists()


class BrokenStatistics(nn.Module):
    """Passes images through, but its running statistic overflows in training: BatchNorm's, diverged."""

    def __init__(self):
        super().__init__()
        self.register_buffer("running_var", torch.ones(1))

    def forward(self, x):
        if self.training:
            self.running_var.mul_(1e30)
        return x


def test_a_buffer_that_became_infinite_is_never_saved_as_a_finished_run(tmp_path):
    path = tmp_path / "run.pt"
    model = tiny_model()
    model.features.insert(0, BrokenStatistics())
    with pytest.raises(NonFiniteLossError, match="After epoch 1 .* NaN or infinite: features.0.running_var"):
        run(num_epochs=1, model=model, checkpoint_path=path)
    assert not path.exists()



def foreign_loader(images, labels, classes, **options) -> DataLoader:
    """A plain DataLoader over a TensorDataset, as a student might build one, telling its classes."""
    dataset = TensorDataset(images, labels)
    dataset.classes = classes
    return DataLoader(dataset, batch_size=32, **options)


def test_a_nan_in_an_image_is_blamed_on_the_data_not_the_learning_rate(tmp_path):
    train_loader, valid_loader, test_loader = tiny_loaders()
    images = train_loader.images.float() / 255  # what the tiny loaders serve: the default recipe only scales
    images[37, 0, 3, 3] = float("nan")  # one pixel of one image
    broken = foreign_loader(images, train_loader.labels, train_loader.classes, drop_last=True)
    with pytest.raises(NonFiniteLossError) as error:
        run(num_epochs=2, loaders=(broken, valid_loader, test_loader), checkpoint_path=tmp_path / "run.pt",
            logging_interval=1)
    message = str(error.value)
    assert "An image of batch 2 in epoch 1 holds NaN or infinite values: the data is broken" in message
    assert "smaller learning rate" not in message and not (tmp_path / "run.pt").exists()


# ----------------------------------------------------------------- labels of loaders built elsewhere


def test_a_bad_label_in_a_foreign_test_loader_only_is_refused_before_training(tmp_path):
    train_loader, valid_loader, test_loader = tiny_loaders()
    labels = test_loader.labels.clone()
    labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(4))[0]] = 10
    foreign_test = foreign_loader(test_loader.images.float() / 255, labels, test_loader.classes)
    with pytest.raises(ValueError, match="The labels of the test_loader include class 10, but there are 10 classes"):
        run(num_epochs=2, loaders=(train_loader, valid_loader, foreign_test), checkpoint_path=tmp_path / "run.pt")
    assert not (tmp_path / "run.pt").exists()  # found before the first epoch, not after the last


@pytest.mark.parametrize("fraction", [0.25, 1.0])
def test_labels_of_minus_100_are_refused_not_ignored_by_the_loss(fraction, tmp_path):
    """cross_entropy skips -100: a quarter of them gave 75% accuracy, all of them a NaN blamed on the learning rate."""
    train_loader, valid_loader, test_loader = tiny_loaders()
    labels = train_loader.labels.clone()
    labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(5))[:int(fraction * len(labels))]] = -100
    foreign_train = foreign_loader(train_loader.images.float() / 255, labels, train_loader.classes, shuffle=True)
    with pytest.raises(ValueError, match="The labels of the train_loader include -100.*ignore_index"):
        run(num_epochs=1, loaders=(foreign_train, valid_loader, test_loader), checkpoint_path=tmp_path / "run.pt")
    assert not (tmp_path / "run.pt").exists()


def test_the_targets_of_a_subset_are_checked_unless_a_target_transform_changes_them():
    class Targets(TensorDataset):  # a torchvision-style dataset: targets as a list, a target_transform
        def __init__(self, images, targets, target_transform=None):
            super().__init__(images)
            self.targets, self.target_transform = targets, target_transform

        def __getitem__(self, index):
            target = self.targets[index]
            return self.tensors[0][index], target if self.target_transform is None else self.target_transform(target)

    train_loader, valid_loader, _ = tiny_loaders()
    images, targets = valid_loader.images.float() / 255, valid_loader.labels.tolist()
    targets[-1] = 11  # outside the subset below, then inside it
    for indices, refused in ((range(32), False), (range(64), True)):
        dataset = Subset(Targets(images, targets), indices)
        dataset.classes = valid_loader.classes
        loader = DataLoader(dataset, batch_size=32)
        if refused:
            with pytest.raises(ValueError, match="The labels of the valid_loader include class 11"):
                run(num_epochs=1, loaders=(train_loader, loader, None))
        else:
            run(num_epochs=1, loaders=(train_loader, loader, None))
    counted_from_one = Targets(images, [label + 1 for label in valid_loader.labels.tolist()], lambda t: t - 1)
    counted_from_one.classes = valid_loader.classes
    _, history = run(num_epochs=1, loaders=(train_loader, DataLoader(counted_from_one, batch_size=32), None))
    assert history.num_epochs == 1  # served labels are 0 to 9: a target_transform's input is not judged
