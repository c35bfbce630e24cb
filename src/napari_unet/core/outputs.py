"""What a run produces: the output kinds, their dtypes, the result's shape and a tile's result.

The one place these live; the in-memory plane run (:mod:`~napari_unet.core.planerun`),
the block-wise run (:mod:`~napari_unet.core.blocks`) and the stores
(:mod:`~napari_unet.core.blockstore`) all use them.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from napari_unet.core.postprocess import semantic_mask

Output = Literal["labels", "mask", "probabilities"]

#: The output kinds, in the order interfaces list them.
OUTPUTS: tuple[str, ...] = ("labels", "mask", "probabilities")
#: Data type of each output kind's result.
OUT_DTYPES: dict[str, np.dtype] = {
    "labels": np.dtype(np.int32),
    "mask": np.dtype(np.uint8),
    "probabilities": np.dtype(np.float32),
}


def result_shape(
    output: str, num_classes: int, leading: tuple[int, ...], size: tuple[int, int]
) -> tuple[int, ...]:
    """Shape of a result: ``(*leading, H, W)``, or ``(*leading, K, H, W)`` for probabilities.

    Parameters
    ----------
    output : {"labels", "mask", "probabilities"}
    num_classes : int
        ``K``, the classes the network predicts.
    leading : tuple of int
        Shape of the leading axes (one flat plane axis ``(N,)``, the image's ``(T, Z)``,
        or ``()`` for one plane).
    size : (int, int)
        ``(H, W)`` of a plane.
    """
    channels = (num_classes,) if output == "probabilities" else ()
    return (*leading, *channels, *size)


def tile_result(probabilities: np.ndarray, output: str, threshold: float) -> np.ndarray:
    """What a tile contributes to the output, from its ``(K, h, w)`` float32 probabilities.

    Returns
    -------
    (K, h, w) float32 or (h, w) uint8
        The probabilities themselves for a probabilities output; else the class per
        pixel (:func:`~napari_unet.core.postprocess.semantic_mask` at ``threshold``), which
        labels are made from once the whole plane or block is done.
    """
    if output == "probabilities":
        return probabilities
    return semantic_mask(probabilities, threshold=threshold)


__all__ = ["OUTPUTS", "OUT_DTYPES", "Output", "result_shape", "tile_result"]
