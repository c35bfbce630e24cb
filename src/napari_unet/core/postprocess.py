"""From class probabilities to a semantic mask and to instance labels (numpy/scipy/skimage).

Public API
----------
- :func:`semantic_mask` ``(probabilities, *, threshold=0.5) -> (H, W) uint8``
- :func:`instance_labels` ``(mask, *, min_size=0, split_touching=False, min_distance=5)
  -> (H, W) int32``
- :func:`foreground_probability` ``(probabilities) -> (H, W) float32``
- :func:`grow_and_merge` ``(foreground, *, seed_threshold, merge_below, min_size=0)
  -> (H, W) int32``: cells of thin-boundary models (EM membranes): seeds at a high
  threshold, grown along the predicted boundaries, neighbours merged across weak ones.
- :func:`merge_labels_across_seams` ``(labels, seams) -> (H, W) int32``: join the ids of
  blocks labelled independently (e.g. dask blocks) where objects cross block borders.
- :class:`PlaneLabeller` ``(mask, foreground=None) -> (H, W) int32``: the instance labelling
  of one plane the segmentation options ask for (grow-and-merge, or labels with split,
  fill and min size), as one picklable callable for in-memory and block-wise use.

Connectivity is 4-neighbour (face) everywhere, so merging independently labelled blocks
gives the same objects as labelling the whole mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage.feature import peak_local_max
from skimage.segmentation import expand_labels, relabel_sequential, watershed

from napari_unet.core.errors import InputError


def semantic_mask(probabilities: np.ndarray, *, threshold: float = 0.5) -> np.ndarray:
    """Class of each pixel.

    Parameters
    ----------
    probabilities : (K, H, W) array
        Softmax probabilities (K >= 2), or ``(1, H, W)`` foreground probability.
    threshold : float
        For K <= 2: a pixel is foreground (1) when its foreground probability exceeds it;
        0.5 is the same as the argmax. Ignored for K > 2 (argmax).

    Returns
    -------
    (H, W) uint8
        Class ids, 0 = background.
    """
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 3 or probabilities.shape[0] < 1:
        raise InputError(f"expected probabilities of shape (K, H, W), got {probabilities.shape}")
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"threshold must be between 0 and 1, got {threshold}")
    num_classes = probabilities.shape[0]
    if num_classes > 255:
        raise InputError(f"at most 255 classes fit a uint8 mask, got {num_classes}")
    if num_classes <= 2:
        return (probabilities[-1] > threshold).astype(np.uint8)
    return np.argmax(probabilities, axis=0).astype(np.uint8)


def foreground_probability(probabilities: np.ndarray) -> np.ndarray:
    """Probability of "any class but background (0)", the quantity :func:`semantic_mask`
    thresholds.

    Parameters
    ----------
    probabilities : (K, H, W) array
        Softmax probabilities, or ``(1, H, W)`` foreground probability.

    Returns
    -------
    (H, W) float32
    """
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if probabilities.ndim != 3:
        raise InputError(f"expected probabilities of shape (K, H, W), got {probabilities.shape}")
    if probabilities.shape[0] <= 2:
        return probabilities[-1]
    return 1.0 - probabilities[0]


def instance_labels(
    mask: np.ndarray,
    *,
    min_size: int = 0,
    split_touching: bool = False,
    min_distance: int = 5,
    fill_boundaries: bool = False,
) -> np.ndarray:
    """Label connected objects of a semantic mask, one id per object.

    Parameters
    ----------
    mask : (H, W) integer or bool array
        0 is background; each non-zero class is labelled separately (objects of different
        classes never share an id).
    min_size : int
        Objects with fewer pixels are removed.
    split_touching : bool
        Split touching objects by a watershed of the distance transform, seeded at its
        maxima at least ``min_distance`` pixels apart.
    min_distance : int
        See ``split_touching``.
    fill_boundaries : bool
        Grow the objects over the background until they touch, so every pixel belongs to
        its nearest object. For models that predict thin boundaries between cells that fill
        the image (EM membranes), where the boundary pixels belong to the cells.

    Returns
    -------
    (H, W) int32
        0 is background, objects are 1..N.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise InputError(f"expected a 2D mask (H, W), got shape {mask.shape}")
    if min_size < 0:
        raise InputError(f"min_size must be >= 0, got {min_size}")
    labels = np.zeros(mask.shape, dtype=np.int32)
    offset = 0
    for value in np.unique(mask[mask != 0]):
        objects = _label_class(mask == value, split_touching, min_distance)
        objects[objects > 0] += offset
        labels += objects
        offset = int(labels.max())
    if min_size > 1:
        sizes = np.bincount(labels.ravel())
        labels[(sizes < min_size)[labels]] = 0
    if fill_boundaries and labels.any():
        labels = expand_labels(labels, distance=sum(labels.shape))
    return relabel_sequential(labels)[0].astype(np.int32, copy=False)


def _label_class(foreground: np.ndarray, split_touching: bool, min_distance: int) -> np.ndarray:
    components, count = ndimage.label(foreground)
    if not split_touching or count == 0:
        return components.astype(np.int32)
    distance = ndimage.distance_transform_edt(foreground)
    peaks = peak_local_max(
        distance, min_distance=max(1, min_distance), labels=components, exclude_border=False
    )
    markers = np.zeros(foreground.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    # Components without a peak (e.g. thin lines) keep one seed so they are not lost.
    unseeded = np.setdiff1d(np.arange(1, count + 1), components[tuple(peaks.T)])
    for component in unseeded:
        row, col = np.argwhere(components == component)[0]
        markers[row, col] = markers.max() + 1
    return watershed(-distance, markers, mask=foreground).astype(np.int32)


def grow_and_merge(
    foreground: np.ndarray,
    *,
    seed_threshold: float,
    merge_below: float,
    min_size: int = 0,
) -> np.ndarray:
    """Cells that fill the image, from the foreground probability of a thin-boundary model.

    1. Seeds: 4-connected components of ``foreground > seed_threshold`` (seeds smaller
       than ``min_size`` pixels are dropped).
    2. Every pixel joins a seed by a watershed of the boundary probability
       ``1 - foreground``, so neighbouring regions meet on the predicted boundaries.
    3. Neighbouring regions merge, weakest border first, while the mean boundary
       probability along their shared border is below ``merge_below`` (the mean of a
       merged region's borders is the pixel-weighted mean of the borders it joins).

    Why not one threshold: a single gap in a predicted membrane joins two cells, and no
    later step can split them again; a threshold low enough not to cut cells apart at
    their own interior structures lets such gaps through. Seeds at a high threshold
    over-segment instead, and a border is then judged over its whole length. With the
    built-in ``em-membranes`` model on the ISBI 2012 validation slices it halved the
    adapted Rand error of one tuned threshold with grown cells (0.167 -> 0.076); its mean
    over the 16 training slices was 0.026 against 0.029 (benchmarks/bench_em_postprocess.py,
    docs/benchmarks.md).

    Parameters
    ----------
    foreground : (H, W) float array
        Foreground (cell interior) probability in [0, 1].
    seed_threshold : float
        Foreground probability above which a pixel seeds a region; high (e.g. 0.9).
    merge_below : float
        Merge neighbours whose border's mean boundary probability is below this;
        0 never merges.
    min_size : int
        Seeds smaller than this many pixels are dropped (their pixels join neighbours).

    Returns
    -------
    (H, W) int32
        Region ids 1..N covering every pixel; all zeros when no pixel exceeds
        ``seed_threshold``.
    """
    foreground = np.asarray(foreground, dtype=np.float32)
    if foreground.ndim != 2:
        raise InputError(f"expected a 2D probability map (H, W), got shape {foreground.shape}")
    for name, value in (("seed_threshold", seed_threshold), ("merge_below", merge_below)):
        if not 0.0 <= value <= 1.0:
            raise InputError(f"{name} must be between 0 and 1, got {value}")
    seeds = instance_labels(foreground > seed_threshold, min_size=min_size)
    if not seeds.any():
        return seeds
    boundary = 1.0 - foreground
    regions = watershed(boundary, seeds)
    if merge_below <= 0.0 or regions.max() < 2:
        return regions.astype(np.int32)
    # Lazy import: skimage.graph pulls in networkx, needed only here.
    from skimage.graph import merge_hierarchical, rag_boundary

    adjacency = rag_boundary(regions, boundary, connectivity=1)
    merged = merge_hierarchical(
        regions,
        adjacency,
        thresh=merge_below,
        rag_copy=False,
        in_place_merge=True,
        merge_func=_no_extra_merge_work,
        weight_func=_joined_border_mean,
    )
    # merge_hierarchical numbers regions from 0; every pixel belongs to one.
    return relabel_sequential(merged + 1)[0].astype(np.int32)


def _no_extra_merge_work(graph: object, source: int, target: int) -> None:
    """Region attributes need no update: only border means decide merges."""


def _joined_border_mean(graph: object, source: int, target: int, neighbour: int) -> dict:
    """Border of ``neighbour`` with ``source`` + ``target`` once they merge: the
    pixel-weighted mean of its two borders (either may not exist)."""
    none = {"weight": 0.0, "count": 0}
    a = graph[source].get(neighbour, none)  # type: ignore[index]
    b = graph[target].get(neighbour, none)  # type: ignore[index]
    count = a["count"] + b["count"]
    mean = (a["weight"] * a["count"] + b["weight"] * b["count"]) / max(count, 1)
    return {"weight": mean, "count": count}


def merge_labels_across_seams(labels: np.ndarray, seams: Sequence[Sequence[int]]) -> np.ndarray:
    """Give one id to objects cut by block borders, then relabel consecutively.

    Parameters
    ----------
    labels : (H, W) integer array
        Blocks labelled independently, with ids already unique across blocks (offset per
        block); 0 is background. Not modified.
    seams : (row_seams, col_seams)
        Positions of the block borders: a row seam ``r`` lies between rows ``r - 1`` and
        ``r``, a column seam ``c`` between columns ``c - 1`` and ``c``.

    Returns
    -------
    (H, W) int32
        Foreground pixels 4-connected across a seam share one id; ids are 1..N.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or len(seams) != 2:
        raise InputError(
            f"expected (H, W) labels and (row_seams, col_seams), got {labels.shape} and {seams!r}"
        )
    row_seams, col_seams = seams
    pairs = [np.empty((0, 2), dtype=np.int64)]
    for r in row_seams:
        if 0 < r < labels.shape[0]:
            pairs.append(np.stack([labels[r - 1], labels[r]], axis=1))
    for c in col_seams:
        if 0 < c < labels.shape[1]:
            pairs.append(np.stack([labels[:, c - 1], labels[:, c]], axis=1))
    pairs = np.concatenate(pairs).astype(np.int64)
    pairs = pairs[(pairs > 0).all(axis=1)]
    merged = labels.astype(np.int64)
    if len(pairs):
        # Union-find as connected components of the graph "id a touches id b".
        size = int(labels.max()) + 1
        graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(size, size))
        _, root = connected_components(graph, directed=False)
        root = root + 1
        root[0] = 0  # background stays background
        merged = root[merged]
    return relabel_sequential(merged)[0].astype(np.int32)


@dataclass(frozen=True)
class PlaneLabeller:
    """Instance labels of one plane, as the segmentation options ask.

    A picklable callable, so the in-memory path, the block-wise path
    (:func:`napari_unet.core.seams.label_plane_in_blocks`, which calls it on windows of the
    plane) and dask workers label with one and the same function.

    Attributes
    ----------
    threshold : float
        Seed threshold of :func:`grow_and_merge` (the segmentation threshold).
    min_size : int
        Objects (grow-and-merge: seeds) with fewer pixels are removed.
    split_touching, fill_boundaries : bool
        See :func:`instance_labels`; ignored when ``merge_boundaries`` is above 0.
    merge_boundaries : float
        Above 0: cells are grown and merged from the foreground probability
        (:func:`grow_and_merge` with ``merge_below=merge_boundaries``).
    """

    threshold: float = 0.5
    min_size: int = 0
    split_touching: bool = False
    fill_boundaries: bool = False
    merge_boundaries: float = 0.0

    def __post_init__(self) -> None:
        for name in ("threshold", "merge_boundaries"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        if self.min_size < 0:
            raise InputError(f"min_size must be >= 0, got {self.min_size}")

    @property
    def needs_foreground(self) -> bool:
        """True when labels are grown from the foreground probability, not the mask."""
        return self.merge_boundaries > 0

    @property
    def fills(self) -> bool:
        """True when background pixels take their nearest object (fill, not grow-and-merge)."""
        return self.fill_boundaries and not self.needs_foreground

    def describe(self) -> str:
        """What the labelling does, in a few words for progress messages, e.g.
        ``"grow-and-merge (seeds above 0.9, merge below 0.55, min size 20)"``."""
        size = f", min size {self.min_size}" if self.min_size > 1 else ""
        if self.needs_foreground:
            return (
                f"grow-and-merge (seeds above {self.threshold:g}, merge below "
                f"{self.merge_boundaries:g}{size})"
            )
        steps = [
            step
            for step, used in (
                ("split touching", self.split_touching),
                ("fill boundaries", self.fill_boundaries),
                (size[2:], bool(size)),
            )
            if used
        ]
        return "connected components" + (f" ({', '.join(steps)})" if steps else "")

    @property
    def connectivity_only(self) -> bool:
        """True when an object is exactly a connected component of one class of the mask
        (no split, fill or grow-and-merge): then block seams can be merged exactly."""
        return not (self.needs_foreground or self.split_touching or self.fill_boundaries)

    def __call__(self, mask: np.ndarray, foreground: np.ndarray | None = None) -> np.ndarray:
        """Label one plane.

        Parameters
        ----------
        mask : (H, W) uint8 array
            Class per pixel, 0 = background (:func:`semantic_mask`).
        foreground : (H, W) float32 array, optional
            Foreground probability (:func:`foreground_probability`); needed when
            :attr:`needs_foreground`, else ignored.

        Returns
        -------
        (H, W) int32
            0 is background, objects are 1..N.
        """
        if self.needs_foreground:
            if foreground is None:
                raise InputError(
                    "merging cells across weak boundaries needs the foreground probability; "
                    "pass it, or set merge_boundaries to 0"
                )
            return grow_and_merge(
                foreground,
                seed_threshold=self.threshold,
                merge_below=self.merge_boundaries,
                min_size=self.min_size,
            )
        return instance_labels(
            mask,
            min_size=self.min_size,
            split_touching=self.split_touching,
            fill_boundaries=self.fill_boundaries,
        )


__all__ = [
    "PlaneLabeller",
    "foreground_probability",
    "grow_and_merge",
    "instance_labels",
    "merge_labels_across_seams",
    "semantic_mask",
]
