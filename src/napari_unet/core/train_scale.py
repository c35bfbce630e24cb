"""The object diameter a training run records: the median size of the annotated cells.

A trained model records, with its pixel size, the median equivalent diameter of the
cells it was trained on (in training pixels), so that segmenting can bring other images
to that scale (:mod:`~napari_unet.core.scaling`). :class:`~napari_unet.core.train.Trainer`
measures it with :func:`_cell_diameter` whenever its data change;
:func:`annotated_object_diameter` measures a training set the same way without training
on it (e.g. for a model trained before models recorded a scale).

Separate from :mod:`~napari_unet.core.train` because it is a measurement of the
annotations, not part of the training loop.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .annotations import Targets, targets_from_annotation
from .metrics import median_object_diameter
from .train_data import Convention, as_list, resolve_convention


def _cell_diameter(targets: list[Targets]) -> float | None:
    """Median equivalent diameter (pixels) of the cells of ``targets``.

    Cells cut by their plane's border are left out (unless all are): they look smaller
    than they are, and segmenting measures an image's objects the same way.
    """
    return median_object_diameter([target.instances for target in targets], exclude_border=True)


def annotated_object_diameter(
    annotations: Sequence[np.ndarray] | np.ndarray, convention: Convention = "auto"
) -> float | None:
    """The object diameter a :class:`~napari_unet.core.train.Trainer` records for
    these annotations, in pixels.

    For measuring a training set without training on it (e.g. to record the scale of a
    model trained before models recorded one).

    Parameters
    ----------
    annotations : array or sequence of arrays
        ``(H, W)`` or ``(..., H, W)`` labels in ``convention``, as
        :class:`~napari_unet.core.train.Trainer` takes them; planes with nothing
        annotated are skipped.
    convention : {"sparse", "dense", "binary", "auto"}
        How to read them (see :func:`~napari_unet.core.annotations.targets_from_annotation`).

    Returns
    -------
    float or None
        The median equivalent diameter of the annotated cells; None without any.
    """
    planes = [
        plane
        for annotation in as_list(annotations)
        for plane in np.asarray(annotation).reshape((-1, *np.shape(annotation)[-2:]))
        if plane.any()
    ]
    resolved = resolve_convention(convention, planes)
    return _cell_diameter(
        [targets_from_annotation(plane, resolved, require_both_classes=False) for plane in planes]
    )
