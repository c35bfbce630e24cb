"""The network inside a bioimage.io package: its standalone source (generated from
:mod:`napari_unet.core.model`, so that it needs nothing but torch), the wrapper that
mirrors napari-unet's tiling context (:class:`PackageGeometry`), and its weights as a
state dict and as TorchScript."""

from __future__ import annotations

import ast
import importlib
import inspect
import math
import sys
import types
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from napari_unet import __version__
from napari_unet.core.model import UNetConfig, is_valid_input_size, margin
from napari_unet.core.modelfile import ModelBundle
from napari_unet.core.tiling import default_halo

#: File names inside the package.
ARCHITECTURE_FILE = "unet_bioimageio.py"
ARCHITECTURE_CALLABLE = "UNetProbabilities"
STATE_DICT_FILE = "weights.pt"
TORCHSCRIPT_FILE = "weights_torchscript.pt"

# Appended to the network's source in the package: the callable bioimageio.core builds.
_WRAPPER_SOURCE = '''

class UNetProbabilities(nn.Module):
    """Softmax class probabilities of a :class:`UNet`, the size of the input.

    ``context`` pixels are mirrored onto the top and left of the input and
    ``context + extra`` onto the bottom and right (numpy's "symmetric" padding, as
    napari-unet does at image borders), the U-Net runs, and what it did not trim itself
    is cropped, so ``(B, C, H, W)`` gives ``(B, num_classes, H, W)``. ``extra`` makes
    the network's input a valid size; mirroring it at the far end keeps the 2x2
    poolings on the grid napari-unet uses. Added by napari-unet's bioimage.io export.

    Parameters
    ----------
    context : int
        Pixels mirrored before each spatial axis; at least the network's margin and
        less than H and W.
    extra : int
        Further pixels mirrored after each spatial axis.
    **config
        The fields of :class:`UNetConfig`.
    """

    def __init__(self, context: int = 0, extra: int = 0, **config) -> None:
        super().__init__()
        self.unet = UNet(UNetConfig(**config))
        self.before = int(context)
        self.after = int(context) + int(extra)
        self.crop = self.before - margin(self.unet.config)
        if self.crop < 0 or extra < 0:
            raise ValueError(
                f"context {context} must be at least the network's margin "
                f"{margin(self.unet.config)} and extra {extra} at least 0"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.before, self.after
        if a > 0:
            x = torch.cat([x[..., :a].flip(-1), x], dim=-1)
            x = torch.cat([x[..., :a, :].flip(-2), x], dim=-2)
        if b > 0:
            x = torch.cat([x, x[..., -b:].flip(-1)], dim=-1)
            x = torch.cat([x, x[..., -b:, :].flip(-2)], dim=-2)
        logits = self.unet(x)
        start, end = self.crop, self.crop + b - a
        if start > 0 or end > 0:
            stop = -end if end > 0 else None
            logits = logits[..., start:stop, start:stop]
        return torch.softmax(logits, dim=1)
'''


@dataclass(frozen=True)
class PackageGeometry:
    """Sizes a package declares for a network.

    Attributes
    ----------
    min_size, step : int
        Valid input sizes per spatial axis: ``min_size + n * step``, all multiples of
        ``step = 2**depth``.
    halo : int
        Output pixels per side that consumers crop from each tile, and pad its input by:
        the ``context`` rounded up to a multiple of ``step``. Tiles then start on the
        grid of the network's 2x2 poolings (a max-pooling network's output changes when
        its input is shifted by anything else), on the same grid as napari-unet's own
        tiles, so they join without seams and reproduce napari-unet's probabilities.
    context : int
        Pixels the wrapper mirrors before each spatial axis: the context napari-unet's
        own tiling keeps (the margin of a ``valid`` network).
    extra : int
        Further pixels it mirrors after each spatial axis, so that the network's input
        is a valid size.
    """

    min_size: int
    step: int
    halo: int
    context: int
    extra: int


def package_geometry(config: UNetConfig) -> PackageGeometry:
    """Input sizes, halo and mirrored borders of the package of a ``config`` network.

    Declared sizes are multiples of ``step``; the wrapper's network sees
    ``size + 2 * context + extra`` pixels, a valid input size
    (:func:`~napari_unet.core.model.is_valid_input_size`). The spec needs
    ``min_size - 2 * halo >= 1``.
    """
    step = 2**config.depth
    context = margin(config) if config.padding == "valid" else default_halo(config)
    # Valid input sizes repeat with period `step`, so one offset fits every multiple.
    extra = next(e for e in range(step) if is_valid_input_size(config, 2 * context + e + 64 * step))
    halo = math.ceil(context / step) * step
    size = 2 * halo + step
    while not is_valid_input_size(config, size + 2 * context + extra):
        size += step  # only when the network's smallest input is larger still
    return PackageGeometry(min_size=size, step=step, halo=halo, context=context, extra=extra)


def architecture_source() -> str:
    """Standalone Python source of the package's architecture (needs only torch).

    ``napari_unet/core/model.py`` with the napari-unet modules it imports inlined before
    it (e.g. ``config.py``), their imports of napari-unet's error classes replaced by
    plain ``ValueError`` subclasses of the same names, then the wrapper
    ``UNetProbabilities``.

    Raises
    ------
    RuntimeError
        If those modules import anything but the standard library, torch, napari-unet's
        errors and names from each other (the file would not load without napari-unet).
    """
    modules: list[str] = []
    errors: list[str] = []
    _collect_modules("napari_unet.core.model", modules, errors)
    parts = [
        f"# Generated by napari-unet {__version__} from {', '.join(modules)}\n"
        "# for a bioimage.io model package; needs only torch.\n"
        "from __future__ import annotations\n\n\n",
        *(
            f'class {name}(ValueError):\n    """napari-unet\'s {name}, standalone."""\n\n\n'
            for name in errors
        ),
    ]
    for name in modules:
        source = inspect.getsource(importlib.import_module(name))
        lines = source.splitlines(keepends=True)
        for node in reversed(ast.parse(source).body):
            is_future = isinstance(node, ast.ImportFrom) and node.module == "__future__"
            if is_future or _inlined_import(node) is not None:
                lines[node.lineno - 1 : node.end_lineno] = []
        parts.append(f"# ---- {name}\n" + "".join(lines).strip() + "\n\n\n")
    return "".join(parts).rstrip() + "\n" + _WRAPPER_SOURCE


#: napari-unet's module of error classes, replaced by stand-ins in the architecture file.
_ERRORS_MODULE = "napari_unet.core.errors"


def _collect_modules(name: str, modules: list[str], errors: list[str]) -> None:
    """Append ``name`` to ``modules`` after the napari-unet modules it imports."""
    if name in modules:
        return
    source = inspect.getsource(importlib.import_module(name))
    for node in ast.parse(source).body:
        imported = _inlined_import(node)
        if imported is None:
            _check_standalone_import(node, name)
            continue
        module, names = imported
        if module == _ERRORS_MODULE:
            errors.extend(n for n in names if n not in errors)
        else:
            _collect_modules(module, modules, errors)
    modules.append(name)


def _inlined_import(node: ast.stmt) -> tuple[str, list[str]] | None:
    """``(module, names)`` of a ``from napari_unet.X import names`` statement, else None.

    Raises
    ------
    RuntimeError
        For other forms of napari-unet imports (whole modules, aliases, ``*``), which
        inlining cannot reproduce.
    """
    if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "napari_unet":
        names = [alias.name for alias in node.names]
        renamed = any(alias.asname not in (None, alias.name) for alias in node.names)
        if renamed or "*" in names:
            raise RuntimeError(
                f"cannot inline 'from {node.module} import ...' with aliases or *: "
                "update napari_unet.core.export.architecture_source"
            )
        return str(node.module), names
    if isinstance(node, ast.Import) and any(
        alias.name.split(".")[0] == "napari_unet" for alias in node.names
    ):
        raise RuntimeError(
            "cannot inline 'import napari_unet...': import names from the module instead"
        )
    return None


def _check_standalone_import(node: ast.stmt, module: str) -> None:
    """Refuse a top-level import a bioimage.io consumer may lack (not stdlib or torch)."""
    if isinstance(node, ast.Import):
        roots = [alias.name.split(".")[0] for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        roots = [(node.module or "").split(".")[0]]
    else:
        return
    stdlib = getattr(sys, "stdlib_module_names", None)  # Python >= 3.10
    if stdlib is None:
        return
    foreign = [root for root in roots if root not in stdlib and root != "torch"]
    if foreign:
        raise RuntimeError(
            f"{module} imports {', '.join(foreign)}; the bioimage.io architecture file must "
            "need only torch: update napari_unet.core.export.architecture_source"
        )


def write_weights(bundle: ModelBundle, geometry: PackageGeometry, folder: Path) -> torch.nn.Module:
    """Write the architecture, state dict and TorchScript files; return the wrapper."""
    source = architecture_source()
    (folder / ARCHITECTURE_FILE).write_text(source, encoding="utf-8")
    wrapper = build_wrapper(source, bundle, geometry)
    torch.save(wrapper.state_dict(), folder / STATE_DICT_FILE)
    size = geometry.min_size
    example = torch.zeros(1, bundle.config.in_channels, size, size)
    with warnings.catch_warnings():
        # Shape checks in UNet.forward turn sizes into Python numbers: harmless (the
        # traced graph keeps the sizes symbolic, checked at another size in the tests),
        # and torch.jit's deprecation notice is not the user's business.
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(wrapper, example, check_trace=False)
        torch.jit.save(traced, str(folder / TORCHSCRIPT_FILE))
    return wrapper


def build_wrapper(source: str, bundle: ModelBundle, geometry: PackageGeometry) -> torch.nn.Module:
    """``UNetProbabilities`` from the packaged source itself, with the bundle's weights."""
    name = "_napari_unet_bioimageio_architecture"
    module = types.ModuleType(name)
    module.__file__ = ARCHITECTURE_FILE
    # dataclasses look the module up while the file runs.
    sys.modules[name] = module
    try:
        exec(compile(source, ARCHITECTURE_FILE, "exec"), module.__dict__)
    finally:
        sys.modules.pop(name, None)
    # Laid out on the meta device: no random initialisation (nor draws from torch's
    # global generator) for weights that are replaced at once.
    with torch.device("meta"):
        wrapper = getattr(module, ARCHITECTURE_CALLABLE)(
            context=geometry.context, extra=geometry.extra, **bundle.config.to_dict()
        )
    weights = {key: value.detach().clone() for key, value in bundle.state_dict.items()}
    wrapper.unet.load_state_dict(weights, assign=True)
    return wrapper.eval()
