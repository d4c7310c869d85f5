"""Fingerprints: short hashes that identify data and code, so that a checkpoint knows what made it."""

from __future__ import annotations

import ast
import hashlib
import inspect
import io
import sys
import textwrap
import tokenize

import torch


def content_hash(images: torch.Tensor, labels: torch.Tensor, chunk_size: int = 4096) -> str:
    """SHA-256 of images and labels, as stored: the identity of a split's data, on any device."""
    digest = hashlib.sha256(f"{images.dtype} {tuple(images.shape)} {len(labels)}".encode())
    for chunk in images.split(chunk_size):
        digest.update(chunk.detach().contiguous().cpu().numpy())  # a chunk of a contiguous tensor: no copy on the CPU
    digest.update(labels.detach().to("cpu", torch.int64).contiguous().numpy())
    return digest.hexdigest()


def tensors_hash(tensors) -> str:
    """A short SHA-256 of tensors' types, shapes and values (a loss's class weights, a TensorDataset)."""
    digest = hashlib.sha256()
    for tensor in tensors:
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{tensor.dtype} {tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy() if tensor.numel() else b"")
    return f"values {digest.hexdigest()[:16]}"


NOT_CHECKED = "not checked"


def code_fingerprint(obj) -> str:
    """A short hash of the code of a function or of a class's methods, comments and layout left out."""
    digest = hashlib.sha256()
    texts = [code_text(function) for _, function in _functions(obj)]
    for (name, _), text in zip(_functions(obj), texts):
        digest.update(f"{name}\n{text}\n".encode())
    fingerprint = f"code {digest.hexdigest()[:16]}"
    if any(text.startswith("bytecode") for text in texts):
        fingerprint += f" (no source: compared as compiled code, {NOT_CHECKED} across Python versions)"
    return fingerprint


def _functions(obj) -> list:
    """[("", function)] for a function; a class's own methods, by name."""
    if inspect.isfunction(obj):
        return [("", obj)]
    members = ((name, getattr(member, "__func__", member)) for name, member in vars(obj).items())
    return sorted((name, member) for name, member in members if inspect.isfunction(member))


def code_text(function) -> str:
    """The function's code as a line of tokens; a lambda as its own expression; bytecode where no source exists."""
    try:
        source = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError):  # defined with exec(), or in a session whose source is gone
        return f"bytecode {_bytecode(function.__code__)}"
    if function.__name__ == "<lambda>":
        lambdas = _lambdas(source)
        if lambdas:  # getsource gives the whole line: only the lambdas in it matter
            return " ; ".join(lambdas)
    try:
        tokens = tokenize.generate_tokens(io.StringIO(source).readline)
        skipped = (tokenize.COMMENT, tokenize.NL, tokenize.ENDMARKER)
        return " ".join(tokenize.tok_name[token.type] if token.type in (tokenize.INDENT, tokenize.DEDENT)
                        else token.string for token in tokens if token.type not in skipped)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return f"bytecode {_bytecode(function.__code__)}"


def _lambdas(source: str) -> list[str]:
    """The lambda expressions in a piece of source, written out canonically (layout does not matter)."""
    for candidate in (source, f"({source.strip().rstrip(',')})"):  # a line cut out of a longer call
        try:
            tree = ast.parse(candidate)
        except SyntaxError:
            continue
        return [ast.unparse(node) for node in ast.walk(tree) if isinstance(node, ast.Lambda)]
    return []


def _bytecode(code) -> str:
    """A hash of compiled code with its constants and names: checks code that has no source (same Python only)."""
    digest = hashlib.sha256(code.co_code)
    for constant in code.co_consts:
        digest.update((_bytecode(constant) if inspect.iscode(constant) else repr(constant)).encode())
    digest.update(" ".join(code.co_names).encode())
    return digest.hexdigest()[:16]


def readable_source(obj) -> str | None:
    """The code of a function, or of a class's methods, as written, for showing what changed; None if there is none."""
    sources = []
    for _, function in _functions(obj):
        try:
            sources.append(textwrap.dedent(inspect.getsource(function)))
        except (OSError, TypeError):
            return None
    return "\n".join(sources)


def values_read(function, _seen: set | None = None) -> dict[str, object]:
    """What a function reads from globals and its closure, besides modules and classes: plain values as they
    are, functions of your own by their code (and what they read), anything else marked as not checked."""
    code = getattr(function, "__code__", None)
    if code is None:
        return {}
    seen = _seen if _seen is not None else {function}
    found = {}
    readable = {name: function.__globals__[name] for name in sorted(_names(code)) if name in function.__globals__}
    for name, cell in zip(code.co_freevars, function.__closure__ or ()):
        try:
            readable[name] = cell.cell_contents
        except ValueError:  # an empty cell
            pass
    for name, value in readable.items():
        if inspect.ismodule(value) or isinstance(value, type) or value is function:
            continue
        if is_plain(value):
            found[name] = plain(value)
        elif inspect.isfunction(value) and not is_library(value):
            if value not in seen:
                seen.add(value)
                found[name] = code_fingerprint(value)
                found.update({f"{name} reads {key}": item for key, item in values_read(value, seen).items()})
        elif not callable(value):
            found[name] = f"{NOT_CHECKED} (a {type(value).__name__})"
    return found


def is_library(function_or_class) -> bool:
    """True for torch's, torchvision's, NumPy's and Python's own code: a new release must not make another run."""
    module_name = getattr(function_or_class, "__module__", None) or "builtins"
    package = module_name.split(".")[0]
    if package not in ("torch", "torchvision", "numpy") and package not in sys.stdlib_module_names:
        return False
    # Code run with exec() claims to be from "builtins" too; the library's own objects are found in their module.
    module = sys.modules.get(module_name)
    root = (getattr(function_or_class, "__qualname__", None) or "").split(".")[0]
    return module is None or not root or hasattr(module, root)


def _names(code) -> set[str]:
    names = set(code.co_names)
    for constant in code.co_consts:
        if inspect.iscode(constant):  # a comprehension or a nested function
            names |= _names(constant)
    return names


def is_plain(value) -> bool:
    """Numbers, text, None, and lists or tuples of them: what a checkpoint can hold and compare."""
    if isinstance(value, (list, tuple)):
        return all(is_plain(item) for item in value)
    return value is None or isinstance(value, (bool, int, float, str))


def plain(value):
    """Tuples as lists, as JSON and a saved checkpoint read them back."""
    return [plain(item) for item in value] if isinstance(value, (list, tuple)) else value
