# Sourced by the project's scripts: makes sure the project-local Python environment with
# PyTorch 2.11.0 exists, then exports what `tch` needs to build and run against it.
# A user never has to export anything by hand.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
TORCH_VERSION="2.11.0"
PYTHON="${PYTHON:-python3}"

log() { printf '[autoqat setup] %s\n' "$*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
    command -v "$PYTHON" >/dev/null || { log "error: python3 not found; install Python 3.10+ and retry"; exit 1; }
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -W ignore -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
    log "installing torch==$TORCH_VERSION into .venv (about 90 s and 4.6 GB the first time)"
    "$VENV/bin/pip" install --quiet "torch==$TORCH_VERSION"
fi

# Extra Python packages some commands need (the tests' reference implementations).
ensure_py() {
    local missing=()
    for spec in "$@"; do
        local mod="${spec%%[=<>]*}"
        "$VENV/bin/python" -c "import $mod" 2>/dev/null || missing+=("$spec")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]} into .venv"
        "$VENV/bin/pip" install --quiet "${missing[@]}"
    fi
}

export PATH="$VENV/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
TORCH_LIB="$("$VENV/bin/python" -W ignore -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export AUTOQAT_PYTHON="$VENV/bin/python"
# Real text (WikiText-2, TinyStories) and the offline builder of a real SmolLM2 are not in the
# repository; tests and benchmarks find them through these two variables and skip (or say
# what to set) without them. On the development machine they sit beside the checkout.
if [ -z "${AUTOQAT_DATA:-}" ] && [ -d "$ROOT/../shared/data" ]; then
    AUTOQAT_DATA="$(cd "$ROOT/../shared/data" && pwd)"
    export AUTOQAT_DATA
fi
if [ -z "${AUTOQAT_REAL_SMOLLM2:-}" ] && [ -x "$ROOT/../shared/tools/real-smollm2" ]; then
    AUTOQAT_REAL_SMOLLM2="$(cd "$ROOT/../shared/tools" && pwd)/real-smollm2"
    export AUTOQAT_REAL_SMOLLM2
fi
cd "$ROOT"
