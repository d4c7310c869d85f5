"""One look for every figure, the helpers' and the notebooks' own, and the smoke run's banner.

The style is matplotlib's rcParams, set when the helpers are imported and again when a notebook prints
its run mode: sizes that a lecture hall reads from the back row. In a smoke run, every figure that pyplot
creates and every result table the helpers print carries one banner that says what the run was (its
epochs and training images, once train_model knows them) and that it is not a trained network.
The figures get it through matplotlib's figure.hooks, so a notebook's own figure code needs no change.
"""

from __future__ import annotations

import contextlib

import matplotlib
from matplotlib.transforms import ScaledTranslation

STYLE = {
    "figure.dpi": 120,
    "savefig.dpi": 120,
    "savefig.bbox": "tight",  # a saved figure keeps what the notebook shows, the banner above it too
    "font.size": 13,
    "axes.titlesize": 14,
    "axes.labelsize": 13,
    "xtick.labelsize": 12,
    "ytick.labelsize": 12,
    "legend.fontsize": 12,
    "legend.title_fontsize": 12,
    "figure.titlesize": 15,
}
TEXT_SIZE = STYLE["font.size"]  # for the helpers' own texts (panel titles, notes, cell numbers)
TITLE_SIZE = STYLE["figure.titlesize"]
BANNER_SIZE = 12
BANNER_COLOUR = "#a04000"  # dark orange, as the helpers' other caveats: a warning, not an error
BANNER_HOOK = f"{__name__}:add_smoke_banner"
SMALL_SAMPLE = 100  # below this many images a percentage hides how few they are: say "3 of 19 images" too

_run = {"smoke": False, "epochs": None, "train_images": None, "synthetic": False, "says": None}


def apply_style() -> None:
    """Set the figure style for every figure drawn from now on."""
    matplotlib.rcParams.update(STYLE)


def set_run_mode(smoke: bool) -> None:
    """Remember whether this is a smoke run: from now on, a smoke run's figures and tables carry the banner."""
    apply_style()  # again: a notebook backend may have reset the style since the helpers were imported
    _run.update(smoke=bool(smoke), epochs=None, train_images=None, synthetic=False)
    hooks = [hook for hook in matplotlib.rcParams["figure.hooks"] if hook != BANNER_HOOK]
    matplotlib.rcParams["figure.hooks"] = hooks + [BANNER_HOOK] if smoke else hooks


def note_training(num_epochs: int, train_loader) -> None:
    """What the banner says about the run: its epochs, and the number (and kind) of its training images."""
    _run.update(epochs=num_epochs, train_images=num_images(train_loader),
                synthetic=bool(getattr(train_loader, "synthetic", False)))


def num_images(data_loader) -> int | None:
    """How many images a loader serves per pass (its dataset's length), or None when it cannot tell."""
    count = getattr(data_loader, "num_images", None)
    if count is None:
        dataset = getattr(data_loader, "dataset", None)
        count = len(dataset) if hasattr(dataset, "__len__") else None
    return count


def smoke_banner() -> str:
    """The banner's line in a smoke run, e.g. "SMOKE RUN (1 epoch, 192 training images): not a trained network";
    an empty string in a full run (or before print_run_mode() has said which run this is)."""
    if not _run["smoke"]:
        return ""
    if _run["says"]:
        return f"SMOKE RUN: {_run['says']}"
    parts = []
    if _run["epochs"] is not None:
        parts.append(f"{_run['epochs']} epoch{'' if _run['epochs'] == 1 else 's'}")
    if _run["train_images"] is not None:
        kind = "synthetic training images" if _run["synthetic"] else "training images"
        parts.append(f"{_run['train_images']:,} {kind}")
    if not parts:
        return "SMOKE RUN: a quick check that the code runs, not a trained network"
    return f"SMOKE RUN ({', '.join(parts)}): not a trained network"


@contextlib.contextmanager
def smoke_banner_says(text: str):
    """Inside this block, a smoke run's figures and tables say `text` instead of what the run trained: for
    results that are not the run's own, e.g. trained weights judged on a smoke run's few test images."""
    saved = _run["says"]
    _run["says"] = text
    try:
        yield
    finally:
        _run["says"] = saved


def print_smoke_banner() -> None:
    """Print the banner above a table of results in a smoke run; print nothing in a full run."""
    banner = smoke_banner()
    if banner:
        print(f"[{banner}]")


def add_smoke_banner(fig) -> None:
    """figure.hooks calls this for every figure pyplot creates: in a smoke run, the banner goes above it.

    It sits just above the figure's top edge, where neither constrained nor tight layout places anything;
    the notebook's display (and savefig, with the style's tight bounding box) widens the image to hold it.
    """
    banner = smoke_banner()
    if banner:
        if len(banner) * BANNER_SIZE * 0.6 / 72 > fig.get_size_inches()[0]:  # about its width in inches
            banner = two_lines(banner)  # rather than a narrow figure made wide
        a_gap_above = fig.transFigure + ScaledTranslation(0, 6 / 72, fig.dpi_scale_trans)  # 6 points over the title
        fig.text(0.5, 1.0, banner, transform=a_gap_above, ha="center", va="bottom", fontsize=BANNER_SIZE,
                 fontweight="bold", color=BANNER_COLOUR, gid="smoke-banner",
                 bbox={"boxstyle": "round,pad=0.3", "facecolor": "#fff3e0", "edgecolor": BANNER_COLOUR})


def two_lines(text: str) -> str:
    """The text broken after the ": " or ", " nearest its middle."""
    breaks = [index + 1 for index in range(len(text) - 1) if text[index:index + 2] in (": ", ", ")]
    if not breaks:
        return text
    cut = min(breaks, key=lambda index: abs(index - len(text) / 2))
    return text[:cut] + "\n" + text[cut + 1:]


def accuracy_text(percent: float, num_images: int | None) -> str:
    """An accuracy as "87.12%", and with its count on a small sample, where a percentage hides how few
    images it counts: "15.79% (3 of 19 images)"."""
    text = f"{percent:.2f}%"
    if num_images is not None and num_images < SMALL_SAMPLE:
        text += f" ({round(percent * num_images / 100)} of {num_images} images)"
    return text


def data_report(namespace: dict) -> str:
    """For scripts/run_notebooks.py, run in a notebook's kernel at its end: "synthetic" when the notebook
    trained on, or holds a loader or dataset of, synthetic stand-in images; else "real"."""
    if _run["synthetic"]:
        return "synthetic"
    values = list(namespace.values())
    for value in list(values):
        if isinstance(value, (tuple, list)):
            values.extend(value)
        elif isinstance(value, dict):
            values.extend(value.values())
    return "synthetic" if any(getattr(value, "synthetic", False) is True for value in values) else "real"
