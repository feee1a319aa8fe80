#!/usr/bin/env bash
# The GPU installs resolve: each pinned engine file together with flash-attn.txt, for
# CPython 3.11 on x86_64 Linux (glibc 2.34, sglang's wheels), against PyPI. Resolution reads
# package metadata only, nothing is installed: ~10 s, ~70 MB (index pages, flash-attn's sdist).
# (`pip install --dry-run --report` of gpu-vllm.txt also works, for the host platform only:
# 96 s on 2 cores.)
#   training/requirements/check.sh           (needs uv on PATH: pip install uv)
# Refresh a pin file after editing its .in (from the repository root):
#   uv pip compile training/requirements/gpu-sglang.in -o training/requirements/gpu-sglang.txt \
#     --python-version 3.11 --python-platform x86_64-manylinux_2_34 --no-annotate
set -euo pipefail
cd "$(dirname "$0")/../.."
UV=${UV:-uv}
for engine in sglang vllm; do
    pins=training/requirements/gpu-$engine.txt
    start=$(date +%s)
    "$UV" pip compile --quiet --python-version 3.11 --python-platform x86_64-manylinux_2_34 \
        --no-header --no-annotate "$pins" training/requirements/flash-attn.txt -o /dev/null
    # the compiled pins are the .in's: every pinned top-level requirement appears verbatim
    grep -E '^[A-Za-z0-9_.-]+(\[[^]]*\])?==' "training/requirements/gpu-$engine.in" \
        | sed 's/\[[^]]*\]//' | while read -r pin; do
        grep -qixF "$pin" "$pins" || { echo "$pins lacks $pin (recompile it)"; exit 1; }
    done
    echo "gpu-$engine resolves ($(( $(date +%s) - start )) s)"
done
