# Shared by scripts/demo, scripts/test and scripts/fuzz: install what is missing, then build.
# Sourced, not run.
set -euo pipefail

MCQ_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MCQ_PACKAGES=(
    build-essential cmake ninja-build pkg-config
    liburing-dev libhwloc-dev libjemalloc-dev libcriterion-dev
    libzmq3-dev python3-zmq
    clang libclang-rt-14-dev
)

mcq_install_deps() {
    local missing=()
    for p in "${MCQ_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "installing: ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

# mcq_build DIR [cmake args...]: configure (once) and build into DIR.
mcq_build() {
    local dir=$1
    shift
    cmake -S "$MCQ_ROOT" -B "$dir" -G Ninja "$@" >/dev/null
    cmake --build "$dir" --parallel "$(nproc)"
}
