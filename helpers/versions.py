"""The oldest torch and torchvision the helpers run on, checked first thing when `import helpers` runs."""

from __future__ import annotations

import re
from importlib import metadata

# The floors pyproject.toml declares (tests/test_versions.py keeps the two equal), and the versions that
# `make test-versions` installs and tests at the old end.
OLDEST_SUPPORTED = {"torch": "2.3.1", "torchvision": "0.18.1"}
UPGRADE_COMMAND = "pip install --upgrade torch torchvision"


def release(version: str) -> tuple[int, ...]:
    """(2, 3, 1) for "2.3.1", "2.3.1+cu121" or "2.4.0a0+git1234": the release numbers only."""
    return tuple(int(re.match(r"\d*", part).group() or 0) for part in version.split("+")[0].split(".")[:3])


def installed_versions() -> dict[str, str]:
    """{name: version} of torch and torchvision as installed, read without importing them.

    Reading the metadata rather than torch.__version__ means that a torchvision too old for its torch
    cannot fail inside its own import before this check speaks.
    """
    versions = {}
    for name in OLDEST_SUPPORTED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:  # not installed: importing it will say so
            pass
    return versions


def too_old_message(installed: dict[str, str]) -> str | None:
    """The one sentence for a student whose torch or torchvision is below the floor; None when all is well."""
    old = {name: version for name, version in installed.items()
           if release(version) < release(OLDEST_SUPPORTED[name])}
    if not old:
        return None
    needed = " and ".join(f"{name} {OLDEST_SUPPORTED[name]}" for name in old)
    found = " and ".join(f"{name} {version}" for name, version in old.items())
    return (f"These helpers need {needed} or newer, but this Python has {found}: run "
            f"`{UPGRADE_COMMAND}` (in a notebook: `%{UPGRADE_COMMAND}`), then restart Python or the kernel.")


def check_versions() -> None:
    """Raise ImportError with one clear sentence when torch or torchvision is older than the floor."""
    message = too_old_message(installed_versions())
    if message is not None:
        raise ImportError(message)
