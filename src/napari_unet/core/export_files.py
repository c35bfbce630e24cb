"""The example files of a bioimage.io package: the test input (a centre crop of a sample
image), the test output napari-unet's own pipeline computes for it (checked against the
packaged network), and the cover."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import numpy as np
import tifffile
import torch

from napari_unet._sample_data import nuclei_image
from napari_unet.core import normalise
from napari_unet.core.errors import InputError
from napari_unet.core.export_architecture import PackageGeometry, package_geometry
from napari_unet.core.model import UNetConfig
from napari_unet.core.modelfile import ModelBundle
from napari_unet.core.segment import segment

#: The test input is a square crop of at least this many pixels per side when possible.
DEFAULT_TEST_SIZE = 256
#: Largest difference between the package's probabilities and napari-unet's accepted
#: when exporting (float32 rounding is ~1e-6; anything larger is a bug, not noise).
TOLERANCE = 1e-4


def sample_crop_size(config: UNetConfig, height: int, width: int) -> int:
    """Side of the square test crop of an ``height`` x ``width`` image.

    The smallest declared input size of at least :data:`DEFAULT_TEST_SIZE`, or the
    largest that fits.

    Raises
    ------
    InputError
        If the image is smaller than the package's minimum input size.
    """
    geometry = package_geometry(config)
    largest = min(height, width)
    if largest < geometry.min_size:
        raise InputError(
            f"the test image is {height} x {width} pixels; this model's package needs at "
            f"least {geometry.min_size} x {geometry.min_size}: pass a larger test image"
        )
    fitting = geometry.min_size + (largest - geometry.min_size) // geometry.step * geometry.step
    wanted = (
        geometry.min_size
        + max(0, math.ceil((DEFAULT_TEST_SIZE - geometry.min_size) / geometry.step)) * geometry.step
    )
    return min(wanted, fitting)


def test_input_crop(
    config: UNetConfig, geometry: PackageGeometry, image: np.ndarray | None
) -> np.ndarray:
    """The raw test input ``(1, C, s, s)`` float32: a centre crop of ``image``."""
    if image is None:
        image = nuclei_image()
    image = np.asarray(image)
    channels = config.in_channels
    if image.ndim == 2:
        image = np.repeat(image[None], channels, axis=0)
    if image.ndim != 3 or image.shape[0] != channels:
        expected = "(H, W)" if channels == 1 else f"({channels}, H, W) or (H, W)"
        raise InputError(
            f"the test image has shape {image.shape}; this model needs {expected}: pass "
            "one plane of an image it segments"
        )
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise InputError(
            f"the test image has dtype {image.dtype}; pass an integer or floating-point image"
        )
    size = sample_crop_size(config, *image.shape[-2:])
    top = (image.shape[-2] - size) // 2
    left = (image.shape[-1] - size) // 2
    crop = image[:, top : top + size, left : left + size].astype(np.float32)
    if not np.isfinite(crop).all():
        raise InputError(
            "the test image has NaN or infinite pixels in its centre; pass a finite image"
        )
    return crop[None]


def write_test_tensors(
    bundle: ModelBundle, wrapper: torch.nn.Module, test_input: np.ndarray, folder: Path
) -> np.ndarray:
    """Save the test tensors; the output is napari-unet's own segmentation pipeline's.

    Also checks the package's network against it, so a package that would fail its own
    test is never written.
    """
    raw = test_input[0]
    plane = raw[0] if bundle.config.in_channels == 1 else raw
    # The package's network sees the test input as it is: segmented at the model's own
    # scale (a recorded object diameter would otherwise let ``auto`` resample it).
    own_scale = {"diameter": bundle.object_diameter} if bundle.object_diameter else {}
    probabilities = segment(bundle, plane, output="probabilities", device="cpu", **own_scale)
    test_output = np.asarray(probabilities, dtype=np.float32)[None]
    # as segment() does: a multichannel plane is normalised channel by channel
    multichannel = bundle.config.in_channels > 1
    stats = normalise.compute_stats(raw, bundle.normalisation, per_channel=multichannel)
    normalised = normalise.apply(raw, stats)[None]
    with torch.inference_mode():
        packaged = wrapper(torch.from_numpy(normalised)).numpy()
    difference = float(np.abs(packaged - test_output).max())
    if packaged.shape != test_output.shape or not difference <= TOLERANCE:
        raise RuntimeError(
            "the packaged network does not reproduce napari-unet's probabilities "
            f"(shapes {packaged.shape} and {test_output.shape}, largest difference "
            f"{difference:.3g}); nothing was written: please report this bug"
        )
    np.save(folder / "test_input.npy", test_input)
    np.save(folder / "test_output.npy", test_output)
    # The same as TIFF images ("sample tensors"), for people and tools that show them.
    tifffile.imwrite(folder / "sample_input.tif", test_input[0])
    tifffile.imwrite(folder / "sample_output.tif", test_output[0])
    return test_output


def write_cover(
    cover: str | os.PathLike | np.ndarray | None,
    bundle: ModelBundle,
    test_input: np.ndarray,
    test_output: np.ndarray,
    folder: Path,
) -> str:
    """Write ``cover.EXT`` in ``folder`` (the given file or array, or one made from the
    test tensors) and return its name."""
    if cover is not None and not isinstance(cover, np.ndarray):
        source = Path(cover)
        suffix = source.suffix.lower()
        if suffix not in (".png", ".jpg", ".jpeg", ".gif", ".svg"):
            raise InputError(
                f"cover {source.name!r} is not a .png, .jpg, .gif or .svg image; pass one"
            )
        if not source.is_file():
            raise InputError(f"cover image {source} not found; pass an existing image file")
        shutil.copyfile(source, folder / f"cover{suffix}")
        return f"cover{suffix}"
    pixels = _cover_pixels(bundle, test_input, test_output) if cover is None else cover
    _save_png(np.asarray(pixels), folder / "cover.png")
    return "cover.png"


def _cover_pixels(
    bundle: ModelBundle, test_input: np.ndarray, test_output: np.ndarray
) -> np.ndarray:
    """``(h, 2 h, 3)`` uint8: the normalised test input beside its foreground probability.

    The right half tints the input by the probability of not being background (class 0);
    the whole is enlarged to at least 256 px high (covers are shown at that size).
    """
    raw = test_input[0]
    stats = normalise.compute_stats(raw, bundle.normalisation)
    gray = np.clip(normalise.apply(raw[0], stats), 0.0, 1.0)
    foreground = 1.0 - test_output[0, 0]
    tint = np.array([1.0, 0.35, 0.1], np.float32)  # orange: visible on gray
    left = np.repeat(gray[..., None], 3, axis=-1)
    right = left * (1.0 - 0.7 * foreground[..., None]) + 0.7 * foreground[..., None] * tint
    image = np.concatenate([left, right], axis=1)
    factor = max(1, math.ceil(256 / image.shape[0]))
    image = np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)
    return np.round(image * 255).astype(np.uint8)


def _save_png(pixels: np.ndarray, target: Path) -> None:
    from PIL import Image

    if pixels.dtype != np.uint8 or not (
        pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[-1] in (3, 4))
    ):
        raise InputError(
            f"a cover array must be uint8 of shape (H, W), (H, W, 3) or (H, W, 4), got "
            f"{pixels.dtype} {pixels.shape}; pass such an array or an image file"
        )
    Image.fromarray(pixels).save(target)
