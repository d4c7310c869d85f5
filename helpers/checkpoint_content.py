"""What a checkpoint holds, checked against the run that is about to load it, before anything is loaded.

The checksums prove that a file is as it was written, not that train_model wrote it: a file edited by
hand or by other code can pass them with weights of another shape, a random state of None or an
optimizer state that is not one. Loading such parts would fail half-way, with the model or the random
states already changed; checked first, the file is refused whole and nothing is touched.
"""

from __future__ import annotations

import numbers

import torch


def content_problem(state: dict, model, optimizer, scheduler) -> str | None:
    """What is wrong with a checkpoint's content for this run, in a few words; None when it can be loaded."""
    expected = model.state_dict()
    checks = (
        lambda: _weights_problem(state["model"], expected, "its weights"),
        lambda: _weights_problem(state["best_model"], expected, "its best epoch's weights"),
        lambda: _optimizer_problem(state["optimizer"], optimizer),
        lambda: _dict_problem(state["scheduler"], "its scheduler state") if scheduler is not None else None,
        lambda: _dict_problem(state["scaler"], "its gradient scaler state"),
        lambda: _rng_problem(state["rng"]),
    )
    return next((problem for check in checks if (problem := check()) is not None), None)


def _weights_problem(weights, expected: dict, what: str) -> str | None:
    if not isinstance(weights, dict):
        return f"{what} are {_kind(weights)}, not a dictionary of tensors"
    missing = [name for name in expected if name not in weights]
    if missing:
        return f"{what} lack {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}"
    for name, tensor in expected.items():
        saved = weights[name]
        if not isinstance(saved, torch.Tensor):
            return f"{what}' {name} is {_kind(saved)}, not a tensor"
        if saved.shape != tensor.shape:
            return f"{what}' {name} has shape {list(saved.shape)}, where the model's has {list(tensor.shape)}"
    extra = [name for name in weights if name not in expected]
    return f"{what} include {', '.join(map(str, extra[:3]))}, which the model does not have" if extra else None


def _optimizer_problem(saved, optimizer: torch.optim.Optimizer) -> str | None:
    what = "its optimizer state"
    if not isinstance(saved, dict) or not isinstance(saved.get("state"), dict) \
            or not isinstance(saved.get("param_groups"), list):
        return f"{what} is {_kind(saved)}, not the 'state' and 'param_groups' an optimizer saves"
    groups = saved["param_groups"]
    if len(groups) != len(optimizer.param_groups) or not all(
            isinstance(group, dict) and isinstance(group.get("params"), list)
            and len(group["params"]) == len(own["params"]) for group, own in zip(groups, optimizer.param_groups)):
        return f"{what} has parameter groups of other sizes than this optimizer's"
    for group, own in zip(groups, optimizer.param_groups):
        for key, value in own.items():
            if _is_number(value) and not _is_number(group.get(key)):
                return f"{what} has {key} = {group.get(key)!r}, not a number"
    parameters = {index: parameter for group, own in zip(groups, optimizer.param_groups)
                  for index, parameter in zip(group["params"], own["params"])}
    for index, values in saved["state"].items():
        if index not in parameters or not isinstance(values, dict):
            return f"{what} has an entry ({index!r}) for no parameter of this optimizer"
        for key, value in values.items():
            shape = parameters[index].shape
            if isinstance(value, torch.Tensor) and value.dim() and value.shape != shape:
                return f"{what}'s {key} of parameter {index} has shape {list(value.shape)}, not {list(shape)}"
            if not isinstance(value, torch.Tensor) and not _is_number(value) and value is not None:
                return f"{what}'s {key} of parameter {index} is {_kind(value)}, not a tensor or a number"
    return None


def _rng_problem(rng) -> str | None:
    what = "its random-number states"
    parts = ("python", "numpy", "torch", "cuda", "loaders")
    if not isinstance(rng, dict) or any(part not in rng for part in parts):
        return f"{what} are {_kind(rng)}, not the {', '.join(parts)} states train_model saves"
    python, numpy = rng["python"], rng["numpy"]
    if not isinstance(python, (tuple, list)) or len(python) != 3 or not isinstance(python[1], (tuple, list)):
        return f"{what}: Python's is {_kind(python)}, not random.getstate()'s"
    if not isinstance(numpy, (tuple, list)) or len(numpy) != 5:
        return f"{what}: NumPy's is {_kind(numpy)}, not np.random.get_state()'s"
    if not _is_byte_state(rng["torch"], torch.get_rng_state()):
        return f"{what}: torch's is {_kind(rng['torch'])}, not torch.get_rng_state()'s"
    if not isinstance(rng["cuda"], (list, tuple)) or not isinstance(rng["loaders"], (list, tuple)):
        return f"{what}: the GPUs' or the loaders' are not lists"
    if not all(state is None or _is_byte_state(state, None) for state in rng["loaders"]):
        return f"{what}: a loader's is not a generator state"
    return None


def _is_byte_state(value, like: torch.Tensor | None) -> bool:
    is_bytes = isinstance(value, torch.Tensor) and value.dtype == torch.uint8
    return is_bytes and (like is None or value.shape == like.shape)


def _dict_problem(value, what: str) -> str | None:
    return None if isinstance(value, dict) else f"{what} is {_kind(value)}, not a dictionary"


def _is_number(value) -> bool:
    return isinstance(value, numbers.Number)  # bool included: amsgrad=False


def _kind(value) -> str:
    """A value in a few words: "None", "a str ('garbage')", "a list"."""
    if value is None:
        return "None"
    shown = f" ({value!r})" if isinstance(value, (str, int, float)) and len(repr(value)) < 40 else ""
    return f"a {type(value).__name__}{shown}"
