#!/usr/bin/env bash
# Fetch, on a machine with internet, what benchmarks/gpu_check.sh needs on a lent GPU machine
# that has none (docs/gpu.md): wheels of imagecodecs and PyWavelets for CPython 3.12 on x86-64
# Linux (that machine's python3 has torch, numpy, Pillow, scikit-image, but not these two), and
# a copy of the House image, into benchmarks/wheels/ (git-ignored: name it in the device
# tool's `carry`). Then checks that what travels (the working tree and that folder) stays
# under the 64 MiB a device call may carry.
#
#     bash benchmarks/fetch_wheels.sh                  # the versions the test suite uses
#     bash benchmarks/fetch_wheels.sh imagecodecs PyWavelets   # any specs instead
#
# PYTHON (default python3) runs pip; WHEELS_PYTHON_VERSION (default 3.12) is the target's.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
DEST="$REPO/benchmarks/wheels"
PYVER="${WHEELS_PYTHON_VERSION:-3.12}"
LIMIT=$((64 * 1024 * 1024))
if (($#)); then SPECS=("$@"); else SPECS=("imagecodecs==2026.3.6" "PyWavelets==1.9.0"); fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
# manylinux_2_28 first: the newer builds are only there (and smaller: imagecodecs 2026 is one
# abi3 wheel of 26 MB; its 2025 manylinux2014 build is 45 MB). The GPU machine's glibc is newer.
"$PY" -m pip download --disable-pip-version-check --only-binary=:all: --no-deps \
    --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$TMP" "${SPECS[@]}"
mkdir -p "$DEST"
rm -f "$DEST"/*.whl # one version of each package: two would both be installed
mv "$TMP"/*.whl "$DEST"/

HOUSE="$REPO/../shared/benchmark/images/house.png"
if [ -f "$HOUSE" ]; then
    install -m 0644 "$HOUSE" "$DEST/house.png"
else
    echo "note: no House image at $HOUSE; the check will use scikit-image's camera"
fi

echo "benchmarks/wheels:"
ls -l "$DEST"
carried=$(du -cb "$DEST"/* | tail -n 1 | cut -f 1)
tree=0
if git -C "$REPO" rev-parse >/dev/null 2>&1; then
    tree=$(cd "$REPO" && git ls-files -z -co --exclude-standard |
        xargs -0 du -cb 2>/dev/null | awk '$2 == "total" {s += $1} END {print s + 0}')
    [ ! -d "$REPO/shared" ] || tree=$((tree + $(du -sb "$REPO/shared" | cut -f 1)))
fi
total=$((carried + tree))
echo "carried: wheels and House $((carried / 1024)) KiB + working tree $((tree / 1024)) KiB" \
    "= $((total / 1024 / 1024)) MiB of 64 MiB"
if ((total > LIMIT)); then
    echo "error: over the 64 MiB a device call carries" >&2
    exit 1
fi
