#!/usr/bin/env bash
# The GPU evidence in one run (benchmarks/gpu_check.py): 7B training throughput and memory, memory over 200 steps,
# generation at 7B, FSDP launchers on one GPU. Results in OUT (default benchmarks/results/gpu), within BUDGET seconds.
#   bash benchmarks/gpu_check.sh [OUT] [BUDGET]
# With the package installed (`pip install -e ".[quant]"`) nothing else is needed. A folder .whl/ of wheels, if
# present, is installed first into /tmp/site (for a machine whose image lacks this project's versions and has no
# registry).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/gpu}
budget=${2:-450}
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD/src:$PWD
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$out"
python3 -c "
import importlib.metadata as m, torch
print('versions:', ', '.join(f'{p} {m.version(p)}' for p in ('torch', 'transformers', 'peft', 'trl', 'accelerate',
      'datasets', 'huggingface-hub', 'bitsandbytes', 'pyarrow', 'tokenizers')))
print('cuda:', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')
import transformers_lavin, trl, datasets, bitsandbytes  # noqa: F401 - fail here, loudly, rather than per section
" 2>&1 | tee "$out/environment.txt"
python3 -m benchmarks.gpu_check --out "$out" --budget_s "$budget" "${@:3}" 2>&1 | tee "$out/log.txt"
