"""Checkpoint files: damaged, foreign or other-format files refused and kept; atomic writes; sizes."""

from __future__ import annotations

import errno
import io
import os
import stat

import pytest
import torch

import helpers.checkpoint
from helpers.checkpoint import (
    CHECKPOINT_FORMAT,
    checkpoint_estimate,
    file_size,
    leftover_partials,
    load_checkpoint,
    optimizer_copies,
    save_atomically,
    save_checkpoint,
    write_problem,
)
from tests.support import (
    failing_save,
    refused,
    snapshot,
    tiny_model,
    unchanged,
)

LR_SCHEDULER = torch.optim.lr_scheduler


# ----------------------------------------------------------------- files that are refused, and kept


def test_truncated_checkpoint_is_refused_and_kept(saved_run):
    saved_run.write_bytes(saved_run.read_bytes()[:1000])
    refused(saved_run, match="cannot be read")


@pytest.mark.parametrize("start", [100, 2_000, -4_000])
def test_corrupted_checkpoint_is_refused_and_kept(saved_run, start):
    """Whatever the damage makes of the file, it is refused and left as it is (what it is said to be may vary)."""
    data = bytearray(saved_run.read_bytes())
    start %= len(data)
    data[start:start + 300] = torch.randint(0, 256, (300,), generator=torch.Generator().manual_seed(start),
                                            dtype=torch.uint8).numpy().tobytes()
    saved_run.write_bytes(bytes(data))
    assert "left untouched" in refused(saved_run)


def test_a_file_that_is_no_checkpoint_is_refused(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"some": torch.zeros(2)}, path)
    refused(path, match="not a checkpoint written by train_model")


def rewritten(path, change) -> None:
    state = load_checkpoint(path)
    change(state)
    save_checkpoint(state, path)


def test_a_newer_format_is_refused_and_never_rewritten(saved_run):
    rewritten(saved_run, lambda state: state.update(format=CHECKPOINT_FORMAT + 1))
    message = refused(saved_run)
    assert f"newer version of these helpers (checkpoint format {CHECKPOINT_FORMAT + 1}" in message
    assert torch.load(saved_run, weights_only=True)["format"] == CHECKPOINT_FORMAT + 1


def test_an_older_format_is_refused(saved_run):
    rewritten(saved_run, lambda state: state.update(format=1))
    assert "older version of these helpers (checkpoint format 1)" in refused(saved_run)


@pytest.mark.parametrize("part", ["rng", "signature", "history"])
def test_a_restructured_checkpoint_is_refused_clearly(saved_run, part):
    rewritten(saved_run, lambda state: state.pop(part))
    assert f"lacks {part}" in refused(saved_run)


def test_a_history_in_another_layout_is_refused_clearly(saved_run):
    rewritten(saved_run, lambda state: state["history"].update(accuracy=[1.0]))
    assert "The history in" in refused(saved_run)


def wider_first_layer(state):
    state["model"]["features.0.weight"] = torch.zeros(8, 1, 3, 3)


def garbage_optimizer_state(state):
    state["optimizer"]["state"][0] = {"momentum_buffer": "garbage"}


@pytest.mark.parametrize(("change", "said"), [
    (lambda state: state.update(rng=None), "its random-number states are None"),
    (lambda state: state["rng"].update(torch=None), "torch's is None"),
    (wider_first_layer, "its weights' features.0.weight has shape [8, 1, 3, 3], where the model's has [4, 1, 3, 3]"),
    (lambda state: state["best_model"].pop("features.0.weight"), "its best epoch's weights lack features.0.weight"),
    (garbage_optimizer_state, "its optimizer state's momentum_buffer of parameter 0 is a str ('garbage')"),
    (lambda state: state.update(optimizer="garbage"), "its optimizer state is a str ('garbage')"),
    (lambda state: state.update(scaler=[1, 2]), "its gradient scaler state is a list"),
], ids=["rng None", "torch rng None", "weight shape", "best weights", "optimizer buffer", "optimizer", "scaler"])
def test_a_checkpoint_with_valid_checksums_but_bad_content_is_refused_and_kept(saved_run, change, said):
    """A file edited by hand or by other code: the checksums pass, the content is said to be wrong, nothing loads."""
    rewritten(saved_run, change)
    model = tiny_model()
    before = snapshot(model)
    message = refused(saved_run, model=model)
    assert said in message and "passes its checksums" in message and "left untouched" in message
    assert unchanged(model, before)


# ----------------------------------------------------------------- files that cannot be read, and by whom


def test_a_checkpoint_this_account_may_not_read_is_not_called_damaged(saved_run, monkeypatch):
    def permission_denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(saved_run))

    monkeypatch.setattr(helpers.checkpoint.zipfile, "ZipFile", permission_denied)
    message = refused(saved_run)
    assert "cannot be read: this user account has no permission to read it" in message
    assert "damaged" not in message and "cut short" not in message and "chmod a+r" in message


def test_a_checkpoint_path_that_is_a_folder_is_said_to_be_one(tmp_path):
    (tmp_path / "run.pt").mkdir()
    with pytest.raises(helpers.checkpoint.CheckpointError, match="run.pt is a folder, not a checkpoint file"):
        load_checkpoint(tmp_path / "run.pt")


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_saved_files_get_the_mode_a_plain_write_would_give(tmp_path, umask):
    """An instructor's checkpoint in a shared folder is readable by students whenever a plain file there would be."""
    previous = os.umask(umask)
    try:
        save_checkpoint({"format": CHECKPOINT_FORMAT}, tmp_path / "run.pt")
        save_atomically({"w": torch.zeros(2)}, tmp_path / "cache.pt", prefix=".cache.", suffix=".tmp")
    finally:
        os.umask(previous)
    for path in (tmp_path / "run.pt", tmp_path / "cache.pt"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask



# ----------------------------------------------------------------- writing


def test_save_checkpoint_removes_its_partial_file_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    save_checkpoint({"format": 2, "epoch": 1}, path)
    failing_save(monkeypatch, OSError(errno.ENOSPC, "No space left on device"), on_call=1)
    with pytest.raises(OSError):
        save_checkpoint({"format": 2, "epoch": 2}, path)
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert not leftover_partials(path)



def test_a_file_size_limit_is_not_called_a_full_disk(tmp_path, monkeypatch):
    """torch says "unexpected pos" for any short write: with room on the disk, `ulimit -f` stopped it."""
    monkeypatch.setattr(helpers.checkpoint, "file_size_limit", lambda: 20_480)
    reason = write_problem(RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 20480 vs 20416"),
                           tmp_path)
    assert reason.startswith("the file would be larger than this process may write: its file-size limit is 20 kB")
    assert "ulimit -f" in reason and "disk is full" not in reason
    assert write_problem(OSError(errno.EFBIG, "File too large"), tmp_path) == reason


def test_a_short_write_without_a_file_size_limit_is_a_full_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(helpers.checkpoint, "file_size_limit", lambda: None)
    assert write_problem(RuntimeError("unexpected pos 1 vs 0"), tmp_path).startswith("the disk is full, ")


# ----------------------------------------------------------------- sizes


@pytest.mark.parametrize(("optimizer", "options", "copies"), [
    (torch.optim.SGD, {"lr": 0.1}, 0), (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}, 1),
    (torch.optim.Adam, {}, 2), (torch.optim.Adam, {"amsgrad": True}, 3), (torch.optim.AdamW, {"amsgrad": True}, 3),
    (torch.optim.RMSprop, {"momentum": 0.9, "centered": True}, 3), (torch.optim.LBFGS, {}, 3)])
def test_the_size_estimate_counts_what_each_optimizer_keeps(optimizer, options, copies):
    model = tiny_model()
    chosen = optimizer(model.parameters(), **options)
    assert optimizer_copies(chosen) == copies
    if optimizer is not torch.optim.LBFGS:  # its state is not one tensor per weight
        batch = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
        torch.nn.functional.cross_entropy(model(batch), torch.tensor([0, 1, 2, 3])).backward()
        chosen.step()
        buffer = io.BytesIO()
        torch.save({"weights": model.state_dict(), "best": model.state_dict(), "optimizer": chosen.state_dict()},
                   buffer)
        assert buffer.tell() <= checkpoint_estimate(model, chosen)


@pytest.mark.parametrize(("size", "text"), [(0, "0 bytes"), (999, "999 bytes"), (1_500, "1.5 kB"),
                                            (44_000, "44 kB"), (2_300_000, "2.3 MB"), (5_100_000_000, "5.1 GB")])
def test_sizes_are_said_in_their_natural_unit(size, text):
    assert file_size(size) == text
