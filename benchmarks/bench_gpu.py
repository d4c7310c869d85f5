"""Training speed on a CUDA GPU: VGG16 and ResNet-34 at 64x64, mixed precision and channels-last on and off.

Each configuration trains torchvision's model (num_classes=10) through helpers.train_model, on the
notebooks' recipe (70x70 uint8 images cropped to 64x64 and normalised on the GPU), batch 256, SGD with
momentum. The images are random, of CIFAR-10's shape: the speed does not depend on what they show.
Epoch 1 warms up (cuDNN chooses its kernels, memory is allocated); epoch 2 is timed, and includes the
validation of one batch. "mixed precision on" is train_model's default: bf16 on Ampere or newer, fp16
with a gradient scaler on older GPUs such as Colab's T4.

Run: make gpu-check   (or: .venv/bin/python benchmarks/bench_gpu.py). Without CUDA it refuses.
"""

from __future__ import annotations

import contextlib
import io
import itertools

import torch
import torchvision

from helpers import DeviceLoader, ImageRecipe, set_all_seeds, train_model

BATCH_SIZE = 256
TRAIN_BATCHES = 40  # per epoch: 10,240 images
RECIPE = ImageRecipe(resize=70, crop=64, mean=(0.5,) * 3, std=(0.5,) * 3)
MODELS = {"VGG16": torchvision.models.vgg16, "ResNet-34": torchvision.models.resnet34}
NUM_CLASSES = 10


def loaders(device: torch.device) -> tuple[DeviceLoader, DeviceLoader]:
    """Random 70x70 images with random labels: TRAIN_BATCHES batches to train on, one to validate."""
    generator = torch.Generator().manual_seed(0)
    classes = [str(label) for label in range(NUM_CLASSES)]

    def loader(count: int, train: bool) -> DeviceLoader:
        images = torch.randint(0, 256, (count, 3, 70, 70), dtype=torch.uint8, generator=generator)
        labels = torch.randint(0, NUM_CLASSES, (count,), generator=generator)
        return DeviceLoader(images, labels, BATCH_SIZE, RECIPE, classes, train=train, shuffle=train,
                            drop_last=train, seed=0, device=device)

    return loader(TRAIN_BATCHES * BATCH_SIZE, train=True), loader(BATCH_SIZE, train=False)


def images_per_second(name: str, device: torch.device, amp: bool, channels_last: bool, data) -> float:
    """Training images/s of the second epoch."""
    set_all_seeds(0)
    model = MODELS[name](num_classes=NUM_CLASSES)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    with contextlib.redirect_stdout(io.StringIO()):  # the per-epoch lines; the table says it all
        history = train_model(model, 2, *data, None, optimizer, device, amp=amp, channels_last=channels_last)
    del model, optimizer
    torch.cuda.empty_cache()
    return TRAIN_BATCHES * BATCH_SIZE / history.epoch_times[1]


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py measures training speed on a CUDA GPU, and this machine has none "
                         "(torch.cuda.is_available() is False). Run it on a machine with one, e.g. Colab with "
                         "a T4 runtime: make gpu-check.")
    device = torch.device("cuda", torch.cuda.current_device())
    mixed = "bf16" if torch.cuda.get_device_capability(device) >= (8, 0) else "fp16 + gradient scaler"
    print(f"GPU: {torch.cuda.get_device_name(device)}; torch {torch.__version__}, torchvision "
          f"{torchvision.__version__}; mixed precision here: {mixed}")
    print(f"Batch {BATCH_SIZE}, {TRAIN_BATCHES} batches per epoch, 3x64x64 crops of 70x70 images.\n")
    data = loaders(device)
    print(f"{'model':<11}{'mixed precision':>17}{'channels-last':>15}{'images/s':>11}")
    for name, amp, channels_last in itertools.product(MODELS, (False, True), (False, True)):
        speed = images_per_second(name, device, amp, channels_last, data)
        print(f"{name:<11}{'on' if amp else 'off':>17}{'on' if channels_last else 'off':>15}{speed:>11,.0f}",
              flush=True)


if __name__ == "__main__":
    main()
