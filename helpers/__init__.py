"""Shared helpers for the residual-network and VGG notebooks: data, training, evaluation, plots."""

from .versions import check_versions

check_versions()  # before anything imports torch: a too-old torch gets one sentence, not a deep failure

from .checkpoint import CheckpointError
from .comparison import (
    ModelMismatchError,
    check_against_torchvision,
    convolution_kinds,
    count_weighted_layers,
    parameters_per_part,
    part_outputs,
    print_parameter_table,
    print_parts,
    with_running_stats,
)
from .datasets import DatasetUnavailableError, ImageData, load_dataset
from .device_pipeline import DeviceLoader
from .diagrams import draw_residual_block
from .environment import (
    checkpoint_dir,
    dataset_dir,
    describe_hardware,
    get_device,
    in_colab,
    is_smoke_test,
    print_run_mode,
    run_checkpoint_path,
)
from .evaluation import compute_accuracy, compute_confusion_matrix, evaluate
from .exercises import (
    check_answer,
    check_block_dropout,
    check_bottleneck,
    check_exercise,
    check_fix,
    check_quiz,
    exercise_names,
    expect_error,
    show_solution,
)
from .explain import (
    most_confused_pairs,
    show_confident_mistakes,
    show_feature_maps,
    show_first_layer_filters,
    show_grad_cam,
)
from .figure_style import accuracy_text, apply_style, print_smoke_banner, smoke_banner, smoke_banner_says
from .gradcam import grad_cam
from .history import History
from .loaders import get_dataloaders, get_dataloaders_cifar10, get_dataloaders_fashion_mnist, get_dataloaders_mnist
from .plotting import plot_accuracy, plot_confusion_matrix, plot_runs, plot_training_loss, show_examples
from .recipe import ImageRecipe, compute_channel_stats, unnormalize
from .reproducibility import set_all_seeds, set_deterministic
from .scheduling import describe_step_schedule
from .summary import count_multiply_adds, count_parameters, layer_summary, multiply_adds_text
from .trained_models import (
    TrainedModelUnavailableError,
    TrainedWeights,
    available_trained_depths,
    load_trained_cifar_resnet,
)
from .training import NonFiniteLossError, train_model

apply_style()  # one figure style for the helpers' figures and the notebooks' own

__all__ = [
    "accuracy_text", "apply_style", "describe_step_schedule", "multiply_adds_text", "print_smoke_banner",
    "smoke_banner", "smoke_banner_says",
    "grad_cam", "most_confused_pairs", "show_confident_mistakes", "show_feature_maps",
    "show_first_layer_filters", "show_grad_cam",
    "ModelMismatchError", "check_against_torchvision", "check_answer", "check_block_dropout", "check_bottleneck",
    "check_exercise", "check_fix", "check_quiz",
    "convolution_kinds", "count_weighted_layers", "exercise_names", "expect_error", "parameters_per_part",
    "part_outputs",
    "print_parameter_table", "print_parts", "show_solution", "with_running_stats",
    "CheckpointError", "DatasetUnavailableError", "DeviceLoader", "History", "ImageData", "ImageRecipe",
    "dataset_dir", "describe_hardware",
    "NonFiniteLossError", "checkpoint_dir", "compute_accuracy", "compute_channel_stats",
    "compute_confusion_matrix", "count_multiply_adds", "count_parameters", "draw_residual_block", "evaluate",
    "get_dataloaders", "get_dataloaders_cifar10", "get_dataloaders_fashion_mnist", "get_dataloaders_mnist",
    "get_device", "in_colab", "is_smoke_test", "layer_summary", "load_dataset", "plot_accuracy",
    "plot_confusion_matrix", "plot_runs", "plot_training_loss", "print_run_mode", "run_checkpoint_path",
    "set_all_seeds", "set_deterministic", "show_examples", "train_model", "unnormalize",
    "TrainedModelUnavailableError", "TrainedWeights", "available_trained_depths", "load_trained_cifar_resnet",
]
