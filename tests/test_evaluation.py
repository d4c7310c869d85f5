"""Accuracy and the confusion matrix, checked against brute-force counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from helpers import DeviceLoader, ImageRecipe, compute_accuracy, compute_confusion_matrix, evaluate
from helpers.evaluation import Precision
from tests.support import tiny_loaders, tiny_model


class FixedGuesses(nn.Module):
    """Predicts, for image i, the class stored in the image's first pixel: a model with known answers."""

    def __init__(self, num_classes):
        super().__init__()
        self.num_classes = num_classes
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        guesses = (x[:, 0, 0, 0] * 255).round().long()
        return nn.functional.one_hot(guesses, self.num_classes).float() + 0 * self.unused


def loader_with(labels, guesses, num_classes=4, batch_size=3):
    images = torch.zeros(len(labels), 1, 2, 2, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.tensor(guesses, dtype=torch.uint8)
    return DeviceLoader(images, torch.tensor(labels), batch_size, ImageRecipe(), [str(k) for k in range(num_classes)])


def test_accuracy_counts_correct_guesses():
    loader = loader_with([0, 1, 2, 3, 1, 1, 0], [0, 1, 2, 0, 0, 1, 3])
    assert compute_accuracy(FixedGuesses(4), loader) == pytest.approx(100 * 4 / 7)


def test_evaluate_returns_mean_cross_entropy_and_accuracy():
    labels, guesses = [0, 1, 2, 3, 1], [0, 1, 1, 3, 2]
    loss, accuracy = evaluate(FixedGuesses(4), loader_with(labels, guesses))
    logits = nn.functional.one_hot(torch.tensor(guesses), 4).float()
    assert loss == pytest.approx(nn.functional.cross_entropy(logits, torch.tensor(labels)).item())
    assert accuracy == pytest.approx(60.0)


def test_confusion_matrix_equals_a_brute_force_count_with_absent_classes():
    generator = np.random.default_rng(0)
    labels = generator.choice([0, 2, 3], size=50).tolist()  # class 1 never appears as a label...
    guesses = generator.choice([0, 2, 4], size=50).tolist()  # ...and class 1 and 3 are never guessed
    matrix = compute_confusion_matrix(FixedGuesses(5), loader_with(labels, guesses, num_classes=5))
    expected = np.zeros((5, 5), dtype=np.int64)
    for true, guess in zip(labels, guesses):
        expected[true, guess] += 1
    assert matrix.shape == (5, 5)
    np.testing.assert_array_equal(matrix, expected)


def test_evaluation_restores_training_mode():
    model = FixedGuesses(4).train()
    compute_accuracy(model, loader_with([0, 1], [0, 1]))
    assert model.training


def test_empty_loader_is_an_error():
    empty = DeviceLoader(torch.zeros(0, 1, 2, 2, dtype=torch.uint8), torch.zeros(0, dtype=torch.long), 4,
                         ImageRecipe(), ["a"])
    with pytest.raises(ValueError, match="empty"):
        compute_accuracy(FixedGuesses(1), empty)


def test_a_confusion_matrix_too_small_for_the_classes_is_an_error():
    loader = loader_with([0, 1, 3, 2], [0, 1, 3, 2])
    with pytest.raises(ValueError, match="num_classes=3 is too small: the labels or the model's predictions reach "
                                         "class 3. Pass num_classes=4 or more"):
        compute_confusion_matrix(FixedGuesses(4), loader, num_classes=3)


def test_evaluation_in_channels_last_gives_the_same_numbers():
    labels, guesses = [0, 1, 2, 3, 1], [0, 1, 1, 3, 2]
    plain = evaluate(FixedGuesses(4), loader_with(labels, guesses))
    channels_last = evaluate(FixedGuesses(4), loader_with(labels, guesses), Precision(channels_last=True))
    assert channels_last == pytest.approx(plain)


def test_a_device_other_than_the_models_is_an_error():
    with pytest.raises(ValueError, match="The model's weights are on cpu, not cuda"):
        compute_accuracy(FixedGuesses(4), loader_with([0], [0]), device="cuda")


def test_evaluation_puts_every_module_back_in_its_own_mode():
    model = tiny_model()
    model.train()
    model.features[1].eval()  # a frozen BatchNorm kept in eval mode inside a training model
    _, valid_loader, _ = tiny_loaders()
    compute_accuracy(model, valid_loader)
    assert model.training and model.classifier.training
    assert not model.features[1].training


@pytest.mark.parametrize("ignored", [-1, -100])
def test_negative_labels_are_refused_not_counted_as_class_0(ignored):
    generator = np.random.default_rng(1)
    labels = generator.choice([0, 1, 2, ignored], size=30).tolist()  # ignore_index marks among real labels
    guesses = generator.choice([1, 2, 3], size=30).tolist()  # never class 0: a count in cell (0, 0) is wrong
    with pytest.raises(ValueError, match=rf"labels include {ignored}.*ignore_index.*leave those images out"):
        compute_confusion_matrix(FixedGuesses(4), loader_with(labels, guesses))


def test_float_labels_are_a_clear_error():
    generator = np.random.default_rng(2)
    labels = generator.integers(0, 4, size=10).astype(float).tolist()  # 0.0, 3.0, ...: whole, but floats
    with pytest.raises(ValueError, match=r"labels are torch.float32.*whole class numbers.*\.long\(\)"):
        compute_confusion_matrix(FixedGuesses(4), loader_with(labels, [0] * 10))
