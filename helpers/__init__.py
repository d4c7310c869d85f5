"""Shared helpers for the residual-network and VGG notebooks: data, training, evaluation, plots."""

from .checkpoint import CheckpointError
from .data import (
    DatasetUnavailableError,
    DeviceLoader,
    ImageRecipe,
    compute_channel_stats,
    get_dataloaders,
    get_dataloaders_cifar10,
    get_dataloaders_fashion_mnist,
    get_dataloaders_mnist,
    load_dataset,
    unnormalize,
)
from .diagrams import draw_residual_block
from .environment import checkpoint_dir, get_device, in_colab, is_smoke_test, print_run_mode, run_checkpoint_path
from .evaluation import compute_accuracy, compute_confusion_matrix, evaluate
from .plotting import plot_accuracy, plot_confusion_matrix, plot_training_loss, show_examples
from .reproducibility import set_all_seeds, set_deterministic
from .summary import count_flops, count_parameters, layer_summary
from .training import History, NonFiniteLossError, train_model

__all__ = [
    "CheckpointError", "DatasetUnavailableError", "DeviceLoader", "History", "ImageRecipe",
    "NonFiniteLossError", "checkpoint_dir", "compute_accuracy", "compute_channel_stats",
    "compute_confusion_matrix", "count_flops", "count_parameters", "draw_residual_block", "evaluate",
    "get_dataloaders", "get_dataloaders_cifar10", "get_dataloaders_fashion_mnist", "get_dataloaders_mnist",
    "get_device", "in_colab", "is_smoke_test", "layer_summary", "load_dataset", "plot_accuracy",
    "plot_confusion_matrix", "plot_training_loss", "print_run_mode", "run_checkpoint_path",
    "set_all_seeds", "set_deterministic", "show_examples", "train_model", "unnormalize",
]
