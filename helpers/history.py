"""What a training run recorded, epoch by epoch: what the plots read and what a checkpoint keeps."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class History:
    """What a run recorded: per-batch losses, per-epoch metrics, and the final test accuracy."""

    batch_losses: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    valid_loss: list[float] = field(default_factory=list)
    valid_acc: list[float] = field(default_factory=list)
    learning_rates: list[float] = field(default_factory=list)
    epoch_times: list[float] = field(default_factory=list)
    train_images: list[int] = field(default_factory=list)  # images trained on in each epoch
    iter_per_epoch: int = 0
    augmented: bool | None = None  # were the training batches randomly cropped or flipped (None: unknown)
    best_epoch: int = 0
    test_acc: float | None = None

    @property
    def num_epochs(self) -> int:
        return len(self.valid_acc)

    @property
    def best_valid_acc(self) -> float:
        return self.valid_acc[self.best_epoch - 1] if self.best_epoch else float("nan")
