"""The networks of notebooks/01_residual_blocks_mnist.ipynb: their shapes and sizes, and that they learn.

The networks come from the notebook's own cells, not a copy. MNIST cannot be downloaded here, so the
learning test uses real Fashion-MNIST (same image shape, 10 classes; Debian's dataset-fashion-mnist):
one epoch of the notebook's recipe (seed 123, batch 128, Adam lr 0.01) on the CPU, with one thread so that
the result does not depend on the number of cores (measured: 82.69% and 86.62% test accuracy).
"""

import pytest
import torch

from helpers import count_parameters, get_dataloaders_fashion_mnist, set_all_seeds, train_model
from tests.notebook_code import notebook_namespace

NOTEBOOK = "01_residual_blocks_mnist.ipynb"
RANDOM_SEED = 123
BATCH_SIZE = 128
LEARNING_RATE = 0.01

# (network class, parameters, minimal test accuracy in % after one epoch on Fashion-MNIST)
NETWORKS = [("IdentityResidualNet", 7_960, 80.0), ("ProjectionResidualNet", 17_986, 84.0)]


@pytest.fixture(scope="module")
def notebook() -> dict:
    return notebook_namespace(NOTEBOOK)


@pytest.fixture
def fashion_mnist():
    # smoke_test=False: the real, complete data even under SMOKE_TEST=1. No download in tests.
    return get_dataloaders_fashion_mnist(BATCH_SIZE, smoke_test=False, download=False, seed=RANDOM_SEED)


@pytest.fixture
def one_cpu_thread():
    # The order of floating-point sums, and so the trained weights, depends on the thread count;
    # one thread also keeps a busy machine from stalling the threads on each other.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name, num_params, _", NETWORKS)
def test_parameter_count(notebook, name, num_params, _):
    assert count_parameters(notebook[name]()) == num_params


@pytest.mark.parametrize("name", [name for name, _, _ in NETWORKS])
def test_output_is_one_score_per_class(notebook, name):
    model = notebook[name]().eval()
    with torch.no_grad():
        assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_identity_block_keeps_the_shape(notebook):
    block = notebook["IdentityResidualBlock"]().eval()
    with torch.no_grad():
        assert block(torch.rand(2, 1, 28, 28)).shape == (2, 1, 28, 28)


@pytest.mark.parametrize("channels, in_size, out_shape", [
    ([1, 4, 8], 28, (8, 14, 14)),
    ([8, 16, 32], 14, (32, 7, 7)),
    ([3, 5, 6], 7, (6, 4, 4)),  # an odd size: the main path and the shortcut still agree
])
def test_residual_block_halves_the_resolution(notebook, channels, in_size, out_shape):
    block = notebook["ResidualBlock"](channels=channels).eval()
    with torch.no_grad():
        assert block(torch.rand(2, channels[0], in_size, in_size)).shape == (2, *out_shape)


def test_residual_block_output_passes_a_relu(notebook):
    block = notebook["ResidualBlock"](channels=[1, 4, 8]).eval()
    with torch.no_grad():
        assert block(torch.randn(4, 1, 28, 28)).min() >= 0


@pytest.mark.parametrize("name, _, min_accuracy", NETWORKS)
def test_one_epoch_on_real_fashion_mnist(notebook, fashion_mnist, one_cpu_thread, name, _, min_accuracy):
    train_loader, valid_loader, test_loader = fashion_mnist
    set_all_seeds(RANDOM_SEED)
    model = notebook[name]()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    history = train_model(model, 1, train_loader, valid_loader, test_loader, optimizer, "cpu")
    print(f"{name}: test accuracy {history.test_acc:.2f}% after one epoch on Fashion-MNIST")
    assert history.test_acc >= min_accuracy
