"""Text that fits its dock: status lines that wrap, file paths included."""

from __future__ import annotations

from typing import Any

from magicgui.widgets import Label

# --------------------------------------------------------------------------- text that wraps
#: Zero-width space: a line break Qt's word wrap may take, invisible when drawn.
BREAK = "\u200b"
#: Longest run of characters without a break opportunity in a :class:`StatusLabel`.
LONGEST_UNBROKEN = 20


def breakable(text: str, longest: int = LONGEST_UNBROKEN) -> str:
    """``text`` with invisible break opportunities (:data:`BREAK`) after path separators
    and underscores, and inside any longer run without one, so a long file path wraps
    instead of widening (or being cut off in) its dock."""
    pieces, run = [], 0
    for char in text:
        pieces.append(char)
        if char.isspace() or char == "-":  # Qt may break at these already
            run = 0
        elif char in "/\\_" or run + 1 >= longest:
            pieces.append(BREAK)
            run = 0
        else:
            run += 1
    return "".join(pieces).rstrip(BREAK)


def wrap_words(label: Label) -> Label:
    """Let ``label`` wrap its text within the width its dock gives it: word wrap on, and
    a size policy that takes the dock's width and the wrapped text's height (magicgui's
    labels are fixed to their unwrapped text's size, which cuts a long line off)."""
    from qtpy.QtWidgets import QSizePolicy

    native = label.native
    native.setWordWrap(True)
    policy = QSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
    policy.setHeightForWidth(True)
    native.setSizePolicy(policy)
    return label


class StatusLabel(Label):
    """A status line that wraps within its dock, file paths included.

    Its ``value`` is the text as set; what is shown has invisible break opportunities
    (:func:`breakable`) so that no part of it is cut off at the dock's width.
    """

    def __init__(self, value: str = "", **kwargs: Any) -> None:
        super().__init__(value=value, **kwargs)
        wrap_words(self)

    def get_value(self) -> str:
        return super().get_value().replace(BREAK, "")

    def set_value(self, value: Any) -> None:
        super().set_value(breakable(str(value)))
