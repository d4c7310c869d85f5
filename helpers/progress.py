"""Progress within an epoch that leaves the finished state behind, live and in the saved notebook.

A notebook's progress widget is saved with the text it had when it appeared ("Epoch 1/10: 0%"), which
is what GitHub and nbconvert then show for ever. Here a notebook gets one line of text that is replaced
as the epoch goes on, and at the end by the epoch's summary: the saved notebook shows that summary.
Outside a notebook (a terminal, a script) it is a tqdm bar that disappears, then the summary line.
"""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm

UPDATE_EVERY_S = 0.5  # a busy display costs more than it tells


def in_notebook() -> bool:
    """True inside a Jupyter kernel (Jupyter, JupyterLab, Colab, or a notebook run by nbconvert)."""
    shell = sys.modules.get("IPython")
    get_ipython = getattr(shell, "get_ipython", None)
    return get_ipython is not None and getattr(get_ipython(), "kernel", None) is not None


class EpochProgress:
    """Batches done and the latest loss during an epoch, replaced by `finish(line)` at its end."""

    def __init__(self, total: int, description: str):
        self.total, self.description = total, description
        self._shown_at = 0.0
        if in_notebook():
            from IPython.display import Pretty, display

            self._pretty = Pretty
            self._handle = display(Pretty(f"{description}: starting"), display_id=True)
            self._bar = None
        else:
            self._handle = None
            self._bar = tqdm(total=total, desc=description, leave=False, unit="batch", file=sys.stderr)

    def update(self, batches_done: int, loss: float | None = None) -> None:
        """Say how far the epoch is; in a notebook at most every UPDATE_EVERY_S seconds."""
        if self._bar is not None:
            self._bar.update(batches_done - self._bar.n)
            if loss is not None:
                self._bar.set_postfix(loss=f"{loss:.4f}")
            return
        now = time.monotonic()
        if now - self._shown_at >= UPDATE_EVERY_S or batches_done == self.total:
            self._shown_at = now
            latest = f", loss {loss:.4f}" if loss is not None else ""
            self._handle.update(self._pretty(f"{self.description}: {batches_done}/{self.total} batches{latest}"))

    def finish(self, line: str) -> None:
        """Replace the progress with the epoch's summary line."""
        if self._bar is not None:
            self._bar.close()
            print(line)
        else:
            self._handle.update(self._pretty(line))

    def abandon(self) -> None:
        """The epoch did not finish (an error, Ctrl-C): leave no frozen progress behind."""
        if self._bar is not None:
            self._bar.close()
        else:
            self._handle.update(self._pretty(f"{self.description}: stopped before its end"))
