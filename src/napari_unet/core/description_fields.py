"""Checking one field of a model description, and quoting it in a one-line message.

The vocabulary :mod:`~napari_unet.core.description` checks a model file's JSON with:
:class:`FieldProblem` (one invalid field, later one
:class:`~napari_unet.core.errors.ModelFileError` line naming the file), :func:`require`,
the type predicates (``is_text``, ``is_finite_number``, ...), and the text helpers that
keep whatever a file holds printable and short in a message (:func:`clipped`,
:func:`one_line`, :func:`shown`).

Separate from :mod:`~napari_unet.core.description` because these are the building blocks
every field check uses (and :mod:`~napari_unet.core.modelfile` quotes with), not the
description's fields themselves; they import nothing of the project.
"""

from __future__ import annotations

import json
import math
from typing import Any


class FieldProblem(Exception):
    """One field of a model description is invalid; becomes a one-line user error."""

    def __init__(self, field: str, text: str) -> None:
        super().__init__(f'field "{field}" {text}')


def is_text(value: Any) -> bool:
    # JSON escapes can encode lone surrogates, which cannot be printed or written as UTF-8.
    return isinstance(value, str) and printable(value) == value


def printable(text: str) -> str:
    """``text`` with anything UTF-8 cannot encode (lone surrogates) escaped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def is_finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_probability(value: Any) -> bool:
    return is_finite_number(value) and 0.0 < value < 1.0


def is_unit_interval(value: Any) -> bool:
    return is_finite_number(value) and 0.0 <= value <= 1.0


def is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def require(condition: bool, field_name: str, requirement: str, value: Any) -> None:
    if not condition:
        raise FieldProblem(field_name, f"{requirement}, got {shown(value)}")


def shown(value: Any, limit: int = 60) -> str:
    """``value`` as it reads in the JSON file (shortened): ``"abc"``, ``4.0``, ``true``."""
    if isinstance(value, str):
        value = value[: limit + 1]  # no need to encode all of a huge text
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return clipped(text, limit)


def clipped(text: str, limit: int) -> str:
    text = printable(str(text))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return clipped(lines[0] if lines else type(error).__name__, 200)


__all__ = ["FieldProblem", "clipped", "one_line"]
