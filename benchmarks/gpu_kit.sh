#!/bin/bash
# Builds .whl/: the Python packages a lent GPU machine lacks, for gpu_measurements.py's one call there. Its image
# has Python 3.12 with PyTorch, numpy, scipy, matplotlib, tqdm and huggingface_hub, but not nnU-Net or this
# package's other dependencies, and nothing can be fetched there (/work/.library/device/KINDS.md). So they travel
# as Python 3.12 x86-64 wheels, small enough that they and the working tree stay under the 64 MiB a call may carry
# (SimpleITK's wheel is recompressed with LZMA, which pip reads: about 50 -> 27 MiB). Versions are the ones this
# project's tests run with. Run it in the repository root before the call; the call itself is in
# benchmarks/README.md ("On a lent GPU"). PY: a python with pip (default python3).
set -eu
cd "$(dirname "$0")/.."
PY=${PY:-python3}
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl
mkdir .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
  -d .whl simpleitk==2.5.7 blosc2==4.15.0 ndindex==1.10.1 connected-components-3d==4.1.1 nibabel==5.4.2 \
  monai==1.6.1 torchio==1.2.1 deprecated==1.3.1 yacs==0.1.8 graphviz==0.21 batchgeneratorsv2==0.3.6
# published as source only: built here into pure-Python wheels
"$PY" -m pip wheel -q --no-deps -w .whl nnunetv2==2.8.1 acvl-utils==0.2.6 dynamic-network-architectures==0.4.4 \
  batchgenerators==0.25.5
"$PY" - <<'EOF'
import pathlib
import zipfile

for wheel in pathlib.Path(".whl").glob("simpleitk-*.whl"):
    packed = wheel.with_suffix(".lzma")
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(packed, "w", zipfile.ZIP_LZMA) as target:
        for item in source.infolist():
            target.writestr(item, source.read(item), compress_type=zipfile.ZIP_LZMA)
    packed.replace(wheel)
EOF
du -sh .whl
