"""Checks of the counts a student passes (batch_size, num_epochs, ...): a clear error, not a failure deep inside."""

from __future__ import annotations

import numbers


def check_count(name: str, value, example: int) -> int:
    """A count such as batch_size or num_epochs as an int (numpy integers welcome), or a clear error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a whole number of at least 1, e.g. {example} "
                        f"(got {value!r}, a {type(value).__name__}).")
    if value < 1:
        raise ValueError(f"{name} must be a whole number of at least 1 (got {value}).")
    return int(value)


def check_batch_size(batch_size) -> int:
    """batch_size as an int (numpy integers welcome), or a clear error."""
    return check_count("batch_size", batch_size, example=64)
