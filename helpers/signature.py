"""The run signature: what makes a training run this run, so that a checkpoint is continued only by the same run.

"The same run" means the same model (every layer's type and settings, every tensor's shape, the code
of the model's own classes and the plain values that code reads), the same optimizer and scheduler
settings (a LambdaLR's function too), the same loss (its settings and class weights), and the same
training and validation data (dataset, content, recipe, batch size). The number of epochs is not part
of it: the same run may go on for longer. Nor are the device, the precision and the memory layout:
a run saved on one machine resumes on another. What cannot be described is named by `unchecked`.
"""

from __future__ import annotations

import difflib
import functools
import inspect

import torch

from .fingerprint import (
    NOT_CHECKED,
    code_fingerprint,
    is_library,
    is_plain,
    plain,
    readable_source,
    tensors_hash,
    values_read,
)
from .loaders import data_signature
from .scheduling import scheduler_settings

# Optimizer settings that choose an implementation, not the arithmetic: they may change between sessions.
_IMPLEMENTATION = {"params", "initial_lr", "foreach", "fused", "differentiable", "capturable"}
_MISSING = object()


def run_signature(model, optimizer, scheduler, train_loader, valid_loader, loss_fn) -> dict:
    """What makes a run this run, as plain values; taken before the run's first step."""
    return {
        "model": _model_description(model),
        "optimizer": _optimizer_description(optimizer, model),
        "scheduler": _scheduler_description(scheduler),
        "loss": _callable_description(loss_fn),
        "data": {"training": data_signature(train_loader), "validation": data_signature(valid_loader),
                 "batches_per_epoch": len(train_loader)},
    }


def code_sources(model) -> dict[str, str]:
    """The source of the model's own classes as written, to show what changed when a resume is refused."""
    sources = {cls.__qualname__: readable_source(cls) for cls in _own_classes(model)}
    return {name: source for name, source in sources.items() if source is not None}


def unchecked(signature: dict) -> list[str]:
    """The parts of a run that the signature could only mark as not checked, one line each."""
    return [f"{key}: {value}" for key, value in _flatten(signature).items()
            if isinstance(value, str) and NOT_CHECKED in value]


def describe_differences(saved: dict, current: dict, saved_sources=None, current_sources=None) -> list[str]:
    """One line per value that differs between two signatures, each shown in full; a short diff for code."""
    saved_flat, current_flat = _flatten(saved), _flatten(current)
    keys = list(current_flat) + [key for key in saved_flat if key not in current_flat]
    lines = []
    for key in keys:
        old, new = saved_flat.get(key, _MISSING), current_flat.get(key, _MISSING)
        if old != new:
            lines.append(f"  {key}: checkpoint has {_show(old)}, this run has {_show(new)}")
            if key.startswith("model / code / "):
                lines += _code_diff(key.removeprefix("model / code / "), saved_sources or {}, current_sources or {})
    return lines


def _code_diff(name: str, saved_sources: dict, current_sources: dict, limit: int = 12) -> list[str]:
    if name not in saved_sources or name not in current_sources:
        return []
    diff = [line.rstrip("\n") for line in difflib.unified_diff(
        saved_sources[name].splitlines(), current_sources[name].splitlines(), "checkpoint", "this run", n=0,
        lineterm="") if not line.startswith(("---", "+++", "@@"))]
    shown = [f"      {line}" for line in diff[:limit]]
    return shown + ([f"      ... and {len(diff) - limit} more changed lines"] if len(diff) > limit else [])


def _flatten(value, prefix: str = "") -> dict:
    """{'model / layers / features.2': 'ReLU()', ...}: every leaf of nested dicts and lists of dicts."""
    if isinstance(value, dict) and value:
        items = value.items()
    elif isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        items = enumerate(value)
    else:
        return {prefix: value}
    flat = {}
    for key, item in items:
        flat.update(_flatten(item, f"{prefix} / {key}" if prefix else str(key)))
    return flat


def _show(value) -> str:
    return "nothing" if value is _MISSING else repr(value)


# --------------------------------------------------------------------------- the model


def _model_description(model: torch.nn.Module) -> dict:
    own = _own_classes(model)
    return {
        "class": type(model).__qualname__,
        "layers": {name or "(the model)": _layer_description(module) for name, module in model.named_modules()},
        "parameters": {name: list(tensor.shape) for name, tensor in model.state_dict().items()},
        "code": {cls.__qualname__: code_fingerprint(cls) for cls in own},
        "values read": _values_read_by_classes(own),
    }


def _layer_description(module: torch.nn.Module) -> str:
    """Type and settings: 'Dropout(p=0.2, inplace=False)'; for your own classes, their attributes too."""
    if is_library(type(module)):
        # A leaf's own repr: some (torchvision's StochasticDepth) show their settings only there.
        return repr(module) if not list(module.children()) else f"{type(module).__name__}({module.extra_repr()})"
    text = f"{type(module).__name__}({module.extra_repr()})"
    settings = _settings(module)
    return f"{text} {settings}" if settings else text


def _settings(obj) -> dict:
    """An object's public attributes that are plain values or functions (an activation kept as `self.act`)."""
    settings = {}
    for key, value in sorted(vars(obj).items()):
        if key.startswith("_") or key == "training":
            continue
        if is_plain(value):
            settings[key] = plain(value)
        elif callable(value) and not isinstance(value, (torch.nn.Module, type)):
            settings[key] = _callable_description(value)
    return settings


def _own_classes(model: torch.nn.Module) -> list[type]:
    """The model's classes that are not torch's (a notebook's ResidualBlock, say), and their bases."""
    classes = {cls for module in model.modules() for cls in type(module).__mro__ if not is_library(cls)}
    return sorted(classes, key=lambda cls: cls.__qualname__)


def _values_read_by_classes(classes: list[type]) -> dict:
    """Plain class attributes (expansion = 4) and the plain globals that the classes' methods read."""
    values = {}
    for cls in classes:
        for key, value in vars(cls).items():
            if not key.startswith("__") and is_plain(value):
                values[f"{cls.__qualname__}.{key}"] = plain(value)
        for name, member in vars(cls).items():
            function = getattr(member, "__func__", member)
            if inspect.isfunction(function):
                values.update({f"{cls.__qualname__}.{name} reads {key}": value
                               for key, value in values_read(function).items()})
    return dict(sorted(values.items()))


# --------------------------------------------------------------------------- optimizer, scheduler, loss


def _optimizer_description(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> dict:
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    groups = []
    for group in optimizer.param_groups:
        settings = {key: plain(value) for key, value in group.items() if key not in _IMPLEMENTATION and is_plain(value)}
        settings["parameters"] = [names.get(id(parameter), "(not the model's)") for parameter in group["params"]]
        groups.append(settings)
    return {"type": type(optimizer).__name__, "groups": groups}


def _scheduler_description(scheduler) -> dict:
    """The scheduler's settings, with the functions a LambdaLR (or a chain of schedulers) calls."""
    description = scheduler_settings(scheduler)
    functions = getattr(scheduler, "lr_lambdas", None)
    if functions:
        description["functions"] = [_callable_description(function) for function in functions]
    parts = getattr(scheduler, "_schedulers", None)  # SequentialLR and ChainedScheduler
    if parts:
        description["parts"] = [_scheduler_description(part) for part in parts]
    return description


def _callable_description(function) -> str:
    """'torch.nn.functional.cross_entropy', "CrossEntropyLoss {'label_smoothing': 0.1, ...}", a partial..."""
    if isinstance(function, torch.nn.Module):
        buffers = list(function.buffers())  # CrossEntropyLoss(weight=...) keeps its class weights here
        text = f"{type(function).__name__} {_settings(function)}"
        text += f" buffers {tensors_hash(buffers)}" if buffers else ""
        return text + (f" {code_fingerprint(type(function))}" if not is_library(type(function)) else "")
    if isinstance(function, functools.partial):
        return (f"partial({_callable_description(function.func)}, args={plain(function.args)}, "
                f"keywords={ {key: plain(value) for key, value in sorted(function.keywords.items())} })")
    # Built-ins by their public name: torch.relu, not torch._VariableFunctionsClass.relu.
    title = function.__name__ if inspect.isbuiltin(function) else getattr(function, "__qualname__", None)
    name = f"{getattr(function, '__module__', None)}.{title or type(function).__name__}"
    if inspect.isfunction(function) and not is_library(function):
        read = values_read(function)
        return f"{name} {code_fingerprint(function)}" + (f" reads {read}" if read else "")
    if is_library(function) or inspect.isbuiltin(function) or inspect.isfunction(function):
        return name
    # An object with __call__ (a loss class of your own): its class's code and its settings.
    cls = type(function)
    settings = _settings(function) if hasattr(function, "__dict__") else {}
    if is_library(cls):
        return f"{cls.__qualname__} {settings}"
    return f"{cls.__module__}.{cls.__qualname__} {settings} {code_fingerprint(cls)}"
