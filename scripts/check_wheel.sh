#!/usr/bin/env bash
# Build the wheel, install it into a fresh venv (not editable) and use it from outside the
# source tree, so a model file or sample missing from the package data fails here.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf dist
.venv/bin/python -m build --wheel --outdir dist . >/dev/null
wheel=$(ls dist/napari_unet-*.whl)
echo "built $wheel"
# The licence travels with the wheel (PyPI and the napari hub show it): LICENSE in the
# dist-info and named by the metadata.
.venv/bin/python - "$wheel" <<'PY'
import sys
import zipfile

with zipfile.ZipFile(sys.argv[1]) as wheel:
    names = wheel.namelist()
    licences = [n for n in names if ".dist-info/" in n and n.endswith("/LICENSE")]
    assert licences, "LICENSE missing from the wheel's dist-info"
    metadata = wheel.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
for line in ("License-Expression: BSD-3-Clause", "License-File: LICENSE"):
    assert line in metadata.splitlines(), f"wheel metadata lacks {line!r}"
print("licence in the wheel:", ", ".join(licences))
PY
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
"$tmp/venv/bin/napari-unet" models | tee models.txt
for name in nuclei em-membranes; do
  grep -q "^$name " models.txt || { echo "built-in model $name missing from the wheel"; exit 1; }
done
"$tmp/venv/bin/napari-unet" sample nuclei -o nuclei.tif
"$tmp/venv/bin/napari-unet" segment nuclei.tif -o nuclei_labels.tif
"$tmp/venv/bin/napari-unet" sample em -o em.tif
"$tmp/venv/bin/napari-unet" segment em.tif -o em_mask.tif --model em-membranes --output mask
"$tmp/venv/bin/python" - <<'PY'
import numpy as np
import tifffile

labels = tifffile.imread("nuclei_labels.tif")
count = len(np.unique(labels)) - 1
print(f"wheel segmented the bundled nuclei sample: {labels.shape}, {count} nuclei")
assert count > 20, count
mask = tifffile.imread("em_mask.tif")
interior = float(mask.mean())
print(f"wheel segmented the bundled EM stack: {mask.shape}, interior fraction {interior:.2f}")
assert mask.shape == (4, 512, 512) and 0.5 < interior < 0.95, interior
PY
