#!/usr/bin/env bash
# Wheels for a GPU machine that has PyTorch but not this project's versions and no registry (Python 3.12, x86-64):
# downloads them into .whl/, which benchmarks/gpu_check.sh installs into /tmp/site before it runs. Keep .whl/ out of
# git (echo /.whl/ >> .git/info/exclude). About 57 MB, bitsandbytes being most of it.
#   bash benchmarks/gpu_wheels.sh [PYTHON_VERSION]
set -euo pipefail
cd "$(dirname "$0")/.."
python_version=${1:-3.12}
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
done
# The versions the project's ranges allow at their newest, as CI installs them.
python3 -m pip download --quiet --no-deps --only-binary=:all: --implementation cp --python-version "$python_version" \
    "${platforms[@]}" -d .whl \
    transformers==5.24.0 peft==0.21.2 trl==1.16.0 bitsandbytes==0.50.2 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
ls -la .whl
