"""Record the scale of the shipped built-in models without retraining them.

The built-in models were trained before model files recorded a scale. This writes into
``src/napari_unet/models/NAME.safetensors`` what ``scripts/train_builtin.py`` now records
for every new training (:func:`train_builtin.with_training_scale`): the data set's pixel
size (em-membranes: 4 x 4 nm; nuclei: none) and the median object diameter of the model's
training labels, measured as napari-unet's trainer measures it. It then rewrites the model
cards (``NAME.md``) from the files, with the scale line.

Only the description changes: the script checks that every tensor of the rewritten file
is byte-identical to the original's, and exits with an error before replacing anything
otherwise. Running it again gives the same files (safetensors may write the two header
metadata entries in either order).

    python scripts/set_builtin_scale.py            # both models
    python scripts/set_builtin_scale.py nuclei     # one
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from safetensors import safe_open

from napari_unet.core.modelfile import load_model, save_model
from train_builtin import MODELS, load_em, load_nuclei, with_training_scale, write_card

LOADERS = {"em-membranes": load_em, "nuclei": load_nuclei}


def stored_tensors(path: Path) -> dict[str, bytes]:
    """Every tensor of a safetensors file as its stored bytes (with type and shape)."""
    with safe_open(str(path), framework="numpy") as handle:
        tensors = {}
        for key in handle.keys():
            array = handle.get_tensor(key)
            tensors[key] = f"{array.dtype} {array.shape} ".encode() + array.tobytes()
    return tensors


def set_scale(name: str) -> None:
    """Rewrite model ``name``'s file with its training scale, and its card."""
    path = MODELS / f"{name}.safetensors"
    data = LOADERS[name]()
    bundle = with_training_scale(load_model(path), data)
    with tempfile.TemporaryDirectory() as folder:
        candidate = save_model(bundle, Path(folder) / path.name)
        if stored_tensors(candidate) != stored_tensors(path):
            raise SystemExit(f"{name}: the rewritten weights would differ; nothing replaced")
    # Replacing the shipped file is this script's purpose; its weights were checked above.
    save_model(bundle, path, overwrite=True)
    write_card(name, load_model(path), data)
    print(f"{name}: pixel size {bundle.pixel_size}, object diameter {bundle.object_diameter} px")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", nargs="*", help=f"default: all ({', '.join(LOADERS)})")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.models) - set(LOADERS))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(LOADERS)}")
    for name in args.models or list(LOADERS):
        set_scale(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
