"""Export a model as a bioimage.io model package (spec 0.5), for deepImageJ, ilastik,
QuPath, bioimageio.core and the BioImage Model Zoo.

:func:`export_bioimageio` writes one ``.zip`` file holding ``rdf.yaml`` and:

* ``unet_bioimageio.py``: the architecture, generated from ``napari_unet/core/model.py``
  so that it needs nothing but torch, plus a small wrapper, ``UNetProbabilities``;
* ``weights.pt`` (``pytorch_state_dict``) and ``weights_torchscript.pt`` (``torchscript``);
* ``test_input.npy`` / ``test_output.npy``: a crop of a sample image and the
  probabilities napari-unet's own pipeline (:func:`napari_unet.core.segment.segment`)
  computes for it (also as ``sample_input.tif`` / ``sample_output.tif``);
* ``cover.png`` (the test input beside its foreground probability) and ``README.md``
  (the model card of a built-in model, or one made from the provenance).

What the package declares
-------------------------
Input ``raw``: ``(batch, channel, y, x)`` float32 with the raw intensities; the
preprocessing is the model's own normalisation (percentiles -> ``scale_range`` per
sample over channel, y and x; fixed offset and scale -> ``scale_linear``). Sizes are
multiples of ``2**depth`` (16 for the presets) from :attr:`PackageGeometry.min_size`.

Output ``probabilities``: ``(batch, class, y, x)`` softmax class probabilities of the
same size as the input. Inside, the wrapper mirrors the context napari-unet's tiling
keeps (the network's margin, 92 px for the presets) onto each side (numpy's
``"symmetric"`` padding, as napari-unet does at image borders), runs the unpadded
("valid") U-Net and crops what is left. The declared halo is that margin rounded up to
a multiple of ``2**depth`` (96 px): consumers that tile (bioimageio.core, and the
others that read the halo) pad each tile by the halo and crop it again, and with this
halo their tiles start on the grid of the network's 2x2 poolings, as napari-unet's do, so tiles
join without seams and reproduce napari-unet's probabilities (a max-pooling network's
output changes when its input shifts by anything else). The spec's alternative for a
valid network, an output smaller than its input by ``size.offset``, is not tiled
correctly by bioimageio.core 0.11 (it shifts the output blocks by the offset).

Modules: :mod:`~napari_unet.core.export_architecture` (the network's source, wrapper
and weights), :mod:`~napari_unet.core.export_files` (test tensors and cover),
:mod:`~napari_unet.core.export_rdf` (``rdf.yaml`` and ``README.md``). The y and x axes
carry the model's pixel size (``scale`` and ``unit``) when it records one.

bioimage.io is optional: ``bioimageio.spec`` is imported inside :func:`export_bioimageio`
only, and its absence is one :class:`~napari_unet.core.errors.InputError` line.
"""

from __future__ import annotations

import importlib
import os
import tempfile
import types
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.core.errors import InputError
from napari_unet.core.export_architecture import (
    PackageGeometry,
    architecture_source,
    package_geometry,
    write_weights,
)
from napari_unet.core.export_files import (
    sample_crop_size,
    test_input_crop,
    write_cover,
    write_test_tensors,
)
from napari_unet.core.export_rdf import (
    DEFAULT_LICENSE,
    EXTRA_HINT,
    HOW_TO_OPEN,
    UNET_PAPER_URL,
    builtin_card,
    documentation,
    license_id_for,
    rdf_content,
)
from napari_unet.core.modelfile import ModelBundle
from napari_unet.core.safety import atomic_write, check_output

#: Suffix of the package file.
SUFFIX = ".zip"


def export_bioimageio(
    bundle: ModelBundle,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    test_image: np.ndarray | None = None,
    cover: str | os.PathLike | np.ndarray | None = None,
    license: str | None = None,
    authors: list[str] | None = None,
    tags: list[str] | None = None,
) -> Path:
    """Write ``bundle`` as a bioimage.io model package (a ``.zip`` file).

    Parameters
    ----------
    bundle : ModelBundle
        The model (e.g. ``load_model(resolve_model("nuclei"))``).
    path : path-like
        The package file; it must end in ``.zip``. Written atomically.
    overwrite : bool
        Whether an existing file at ``path`` may be replaced.
    test_image : (H, W) or (C, H, W) array, optional
        Raw image (C = the model's input channels) whose centre crop becomes the test
        input; default: the bundled nuclei sample (repeated over channels if needed).
        At least :attr:`PackageGeometry.min_size` pixels per side.
    cover : path-like or array, optional
        A cover image file (``.png``, ``.jpg``, ``.gif``, ``.svg``) or an ``(H, W)`` /
        ``(H, W, 3|4)`` uint8 array; default: the test input beside its foreground
        probability.
    license : str, optional
        SPDX licence id of the weights; default the model card's ``Licence:`` line for
        a built-in model, else :data:`DEFAULT_LICENSE`.
    authors : list of str, optional
        Default ``provenance["authors"]``, else :data:`BUILTIN_AUTHOR` for built-in
        models and :data:`DEFAULT_AUTHOR` for others.
    tags : list of str, optional
        Extra tags, beside ``unet``, ``segmentation``, ``pytorch``, ``napari-unet`` ...

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        If bioimageio is not installed, ``path`` does not end in ``.zip``, the test image
        is too small, has the wrong shape or non-finite pixels, or the cover or licence
        is unusable.
    OutputError
        If ``path`` exists and ``overwrite`` is false, or cannot be written.
    """
    path = _checked_path(path, overwrite=overwrite)
    spec = _import_bioimageio()
    geometry = package_geometry(bundle.config)
    test_input = test_input_crop(bundle.config, geometry, test_image)
    card = builtin_card(bundle)
    license_id = license_id_for(license, card)
    with tempfile.TemporaryDirectory(prefix="napari-unet-bioimageio-") as folder:
        folder = Path(folder)
        wrapper = write_weights(bundle, geometry, folder)
        test_output = write_test_tensors(bundle, wrapper, test_input, folder)
        cover_name = write_cover(cover, bundle, test_input, test_output, folder)
        readme = documentation(bundle, geometry, card, test_input.shape[-1], spec.format_version)
        (folder / "README.md").write_text(readme, encoding="utf-8")
        content = rdf_content(
            bundle,
            geometry,
            format_version=spec.format_version,
            license_id=license_id,
            authors=authors,
            tags=tags,
            card=card,
            cover=cover_name,
            parameters=sum(p.numel() for p in wrapper.parameters()),
        )
        _save_package(spec, content, folder, path)
    return path


def _save_package(spec: types.SimpleNamespace, content: dict, folder: Path, path: Path) -> None:
    """Validate ``content`` (the rdf of the files in ``folder``) and write the package to
    ``path`` atomically; the written package must validate too."""
    # The citation's URL is known good: no request for it (exports work offline).
    known = {UNET_PAPER_URL: None}
    context = spec.ValidationContext(root=folder, file_name="rdf.yaml", known_files=known)
    with context:
        description = _checked(spec, spec.build_description(content, context=context))
    with atomic_write(path) as temporary:
        with open(temporary, "wb") as stream:
            spec.save_bioimageio_package_to_stream(description, output_stream=stream)
        # What consumers will read: the package itself must validate.
        _checked(spec, spec.load_description(temporary, perform_io_checks=True, known_files=known))


def _checked_path(path: str | os.PathLike, *, overwrite: bool) -> Path:
    """``path`` as a Path, refused (before any work) unless it is a .zip file that may be
    written."""
    path = Path(path)
    if path.suffix.lower() != SUFFIX:
        raise InputError(
            f"bioimage.io packages are .zip files, got {path.name!r}; name it NAME.zip"
        )
    check_output(path, overwrite=overwrite, what="bioimage.io package")
    return path


def _import_bioimageio() -> types.SimpleNamespace:
    """The bioimageio.spec functions the export uses; InputError when not installed."""
    try:
        spec = importlib.import_module("bioimageio.spec")
        model = importlib.import_module("bioimageio.spec.model.v0_5")
    except ImportError:
        raise InputError(EXTRA_HINT) from None
    return types.SimpleNamespace(
        ValidationContext=spec.ValidationContext,
        InvalidDescr=spec.InvalidDescr,
        build_description=spec.build_description,
        save_bioimageio_package_to_stream=spec.save_bioimageio_package_to_stream,
        load_description=spec.load_description,
        format_version=model.ModelDescr.implemented_format_version,
    )


def _checked(spec: types.SimpleNamespace, description: Any) -> Any:
    """``description`` if bioimageio.spec accepted it; else raise, saying why."""
    if not isinstance(description, spec.InvalidDescr):
        return description
    summary = description.validation_summary.format()
    _check_compatible(summary)
    raise RuntimeError(
        f"napari-unet built an invalid bioimage.io description (a bug; please report it):\n"
        f"{summary}"
    )


def _check_compatible(message: str) -> None:
    """Raise InputError when ``message`` is the known bioimageio.spec/pydantic clash.

    bioimageio.spec up to 0.5.12 (which bioimageio.core 0.11 requires) passes pydantic's
    serialization info where pydantic 2.14 expects an index and refuses it.
    """
    if "index_key" not in message:
        return
    from importlib.metadata import version

    raise InputError(
        f"bioimageio.spec {version('bioimageio.spec')} does not work with pydantic "
        f"{version('pydantic')}; install an older pydantic: pip install 'pydantic<2.14'"
    )


__all__ = [
    "DEFAULT_LICENSE",
    "EXTRA_HINT",
    "HOW_TO_OPEN",
    "SUFFIX",
    "UNET_PAPER_URL",
    "PackageGeometry",
    "architecture_source",
    "export_bioimageio",
    "package_geometry",
    "sample_crop_size",
]
