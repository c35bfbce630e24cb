#!/usr/bin/env bash
# Build the wheel, install it into a fresh venv (not editable) and use it from outside the
# source tree, so a model file or sample missing from the package data fails here.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf dist
.venv/bin/python -m build --wheel --outdir dist . >/dev/null
wheel=$(ls dist/napari_unet-*.whl)
echo "built $wheel"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q --upgrade pip
"$tmp/venv/bin/python" -m pip install -q -c .ci/constraints.txt torch
"$tmp/venv/bin/python" -m pip install -q -c .ci/constraints.txt "$wheel"
cd "$tmp"
"$tmp/venv/bin/python" - <<'PY'
import napari_unet, pathlib
root = pathlib.Path(napari_unet.__file__).parent
assert "site-packages" in str(root), f"not the installed wheel: {root}"
assert (root / "napari.yaml").is_file(), "napari.yaml missing from the wheel"
print("installed from", root)
PY
"$tmp/venv/bin/napari-unet" --version
"$tmp/venv/bin/napari-unet" models
if "$tmp/venv/bin/python" -c "import napari_unet.core.modelfile as m, sys; sys.exit(0 if m.list_models() else 1)"; then
  "$tmp/venv/bin/python" -c "
import napari_unet._sample_data as s, tifffile
tifffile.imwrite('nuclei.tif', s.nuclei_image())
"
  "$tmp/venv/bin/napari-unet" segment nuclei.tif -o nuclei_labels.tif
  "$tmp/venv/bin/python" -c "
import tifffile, numpy as np
labels = tifffile.imread('nuclei_labels.tif')
n = len(np.unique(labels)) - 1
print('wheel segmented the bundled sample:', labels.shape, n, 'objects')
assert n > 5, n
"
fi
