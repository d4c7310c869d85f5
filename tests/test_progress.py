"""Progress during an epoch: live while it runs, and the finished state (never a frozen 0%) in a saved notebook."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from helpers.progress import EpochProgress
from tests.support import run

ROOT = Path(__file__).resolve().parent.parent

TRAINING_CELL = """
from tests.support import run
model, history = run(num_epochs=2, logging_interval=1)
"""


@pytest.mark.slow
def test_a_saved_notebook_shows_each_epochs_summary_not_a_frozen_progress_bar():
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(TRAINING_CELL)])
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = notebook.cells[0].outputs
    texts = [output.get("text") or output.get("data", {}).get("text/plain", "") for output in outputs]
    displayed = [output.data["text/plain"] for output in outputs if output.output_type == "display_data"]
    assert [text.split(" | ")[0] for text in displayed] == ["Epoch 001/002", "Epoch 002/002"]
    assert not any("%|" in text or "batches" in text or "starting" in text for text in texts)
    assert not any(output.output_type == "stream" and output.name == "stderr" for output in outputs)


def test_outside_a_notebook_the_summary_line_is_printed(capsys):
    run(num_epochs=1)
    assert capsys.readouterr().out.startswith("Epoch 001/001 | loss ")


def test_an_epoch_that_stops_leaves_no_bar_behind(capsys):
    progress = EpochProgress(10, "Epoch 1/3")
    progress.update(4, loss=0.5)
    progress.abandon()
    assert "4/10" not in capsys.readouterr().out
