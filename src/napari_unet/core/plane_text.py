"""Plane lists as users type them: ``"3,5"``, ``"0:3"`` (planes 0 to 2, as napari's
sliders count), ``"4:"``, and ``"T/Z"`` items such as ``"1/0:2"`` for ``(T, Z, H, W)``
stacks (``napari-unet train --planes``)."""

from __future__ import annotations

import itertools

from napari_unet.core.errors import InputError


def parse_plane_text(text: str) -> list[tuple[tuple[int, int | None], ...]]:
    """Read a plane list such as ``"3,5"``, ``"0:3"`` or ``"0/2:4"`` (syntax only).

    Items are separated by commas. An item has one part per leading axis, separated by
    ``/`` (``T/Z`` for a ``(T, Z, H, W)`` stack); a part is a plane number ``N``, a range
    ``A:B`` (``A`` to ``B - 1``, as the viewer's sliders count) or ``:`` (all), with
    ``A`` or ``B`` optional.

    Returns
    -------
    list of tuple of (start, stop)
        One tuple per item, one ``(start, stop)`` per part; ``stop`` is ``None`` for
        "to the end"; a single number ``N`` is ``(N, N + 1)``.

    Raises
    ------
    InputError
        For an empty list or a part that is not a number or range.
    """
    items = [item.strip() for item in str(text).split(",")]
    if not any(items):
        raise InputError(f"No planes in {text!r}: write e.g. 3,5 or 0:3.")
    return [tuple(_plane_part(part.strip(), text) for part in item.split("/")) for item in items]


def _plane_part(part: str, text: str) -> tuple[int, int | None]:
    numbers = part.split(":")
    bad = InputError(
        f"{part!r} in {text!r} is not a plane number or range: write e.g. 3,5 or 0:3 "
        "(A:B is A to B-1), and T/Z such as 0/3 for (T, Z) stacks."
    )
    if len(numbers) > 2 or not all(n.strip().isdigit() or not n.strip() for n in numbers):
        raise bad
    if len(numbers) == 1:
        if not numbers[0].strip():
            raise bad
        return int(numbers[0]), int(numbers[0]) + 1
    start, stop = (int(n) if n.strip() else None for n in numbers)
    return start or 0, stop


def planes_from_text(text: str, leading_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The plane positions a plane list (see :func:`parse_plane_text`) names in labels
    with leading axes ``leading_shape``, in order, each once.

    Parameters
    ----------
    text : str
        E.g. ``"3,5"``, ``"0:3"``, ``"1/0:2"``.
    leading_shape : tuple of int
        The labels' shape without ``(H, W)``, e.g. ``(Z,)`` or ``(T, Z)``.

    Returns
    -------
    list of tuple of int
        Positions for :func:`~napari_unet.core.annotations.annotations_from_labels`.

    Raises
    ------
    InputError
        For bad syntax, a plane out of range, an empty range, the wrong number of parts,
        or 2-D labels (one plane: nothing to choose).
    """
    leading = tuple(int(n) for n in leading_shape)
    items = parse_plane_text(text)
    if not leading:
        raise InputError(f"Planes {text!r} were given but the labels are one 2-D plane.")
    positions: dict[tuple[int, ...], None] = {}
    for item in items:
        if len(item) != len(leading):
            example = "/".join(["0"] * len(leading))
            raise InputError(
                f"Planes {text!r}: the labels have {len(leading)} leading axis(es) "
                f"{leading}, so each item needs {len(leading)} part(s), e.g. {example}."
            )
        ranges = [
            _plane_range(start, stop, n, text)
            for (start, stop), n in zip(item, leading, strict=True)
        ]
        positions.update(dict.fromkeys(_product(ranges)))
    return list(positions)


def _plane_range(start: int, stop: int | None, size: int, text: str) -> range:
    stop = size if stop is None else stop
    if stop > size or start >= stop:
        wanted = f"plane {start}" if stop == start + 1 else f"planes {start}:{stop}"
        raise InputError(
            f"Planes {text!r}: {wanted} is out of range or empty; the axis has planes "
            f"0..{size - 1}."
        )
    return range(start, stop)


def _product(ranges: list[range]) -> list[tuple[int, ...]]:
    return [tuple(int(i) for i in p) for p in itertools.product(*ranges)]
