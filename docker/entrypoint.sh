#!/usr/bin/env bash
# Entrypoint of the Jetson image (Dockerfile.jetson).
#
#   (no arguments)       pomona run MODEL --source $POMONA_SOURCE $POMONA_RUN_ARGS
#   run [ARGS...]        pomona run MODEL ARGS...        (--source $POMONA_SOURCE added if ARGS has none)
#   demo [ARGS...]       pomona demo --model MODEL --host 0.0.0.0 ARGS...   (publish with -p 127.0.0.1:7860:7860)
#   bench [ARGS...]      pomona bench MODEL ARGS...
#   export ARGS...       pomona export ARGS...           (passed through untouched)
#   engine               build (or find) the cached engine for MODEL and print its path
#   anything else        executed as given (bash, python3, ...)
#
# MODEL is $POMONA_MODEL (default /models/best.onnx). An .onnx is turned into a TensorRT FP16 engine on
# first start, on this device, and cached under $POMONA_CACHE/engines keyed by the model's content, the
# TensorRT version and the GPU: engines do not move between JetPack versions or GPUs, so a new JetPack
# or another Jetson builds its own, and a restart reuses it. Without TensorRT the .onnx runs on ONNX Runtime.
set -euo pipefail

MODEL="${POMONA_MODEL:-/models/best.onnx}"
CACHE="${POMONA_CACHE:-/cache}"
SOURCE="${POMONA_SOURCE:-0}"

die() {
    echo "error: $*" >&2
    exit 2
}

log() {
    echo "pomona-entrypoint: $*" >&2
}

# What an engine must have been built for to run here, e.g. "trt10.3.0.nvidia-jetson-orin-nano": TensorRT's
# version and the GPU, from the same function pomona's exporter names engines with. Empty if TensorRT is absent.
engine_target() {
    if [[ -n "${POMONA_ENGINE_TARGET:-}" ]]; then
        echo "$POMONA_ENGINE_TARGET"
        return 0
    fi
    python3 - <<'PY' 2>/dev/null || true
import re
from pomona.export.tensorrt_engine import build_target
t = build_target("fp16")
print(f"trt{t['tensorrt']}." + re.sub(r"[^a-z0-9]+", "-", t["gpu"].lower()).strip("-"))
PY
}

# Path of the engine to run for an .onnx, building it once; the .onnx itself when TensorRT is unavailable.
resolve_engine() {
    local onnx="$1" target digest stem dir engine partial
    if [[ "${POMONA_ENGINE:-1}" == "0" ]]; then
        log "POMONA_ENGINE=0: running ${onnx} with ONNX Runtime"
        echo "$onnx"
        return 0
    fi
    target="$(engine_target)"
    if [[ -z "$target" ]]; then
        log "warning: TensorRT (or cuda-python) is not usable here; running ${onnx} with ONNX Runtime instead"
        echo "$onnx"
        return 0
    fi
    digest="$(sha256sum "$onnx" | cut -c1-12)"
    stem="$(basename "$onnx" .onnx)"
    dir="${CACHE}/engines"
    engine="${dir}/${stem}.${digest}.fp16.${target}.engine"
    mkdir -p "$dir" || die "cannot create the engine cache ${dir}: mount a writable volume at ${CACHE}"
    # One builder at a time when several containers share the cache; the others wait, then reuse.
    exec 9>"${dir}/.lock"
    flock 9
    if [[ -s "$engine" ]]; then
        log "using cached engine ${engine}"
    else
        log "building a TensorRT FP16 engine for ${onnx} on this device (once; takes minutes on an Orin)"
        partial="${dir}/.${stem}.${digest}.$$.partial.engine"
        if ! pomona export "$onnx" --format engine --half --out "$partial" >&2; then
            rm -f "$partial"
            die "building the TensorRT engine for ${onnx} failed (see above); set POMONA_ENGINE=0 to run the .onnx with ONNX Runtime"
        fi
        [[ -s "$partial" ]] || die "pomona export reported success but wrote no engine at ${partial}"
        mv -f "$partial" "$engine"
        log "cached ${engine}"
    fi
    flock -u 9
    echo "$engine"
}

# The model to run: checked, and for an .onnx the cached engine.
runnable_model() {
    [[ -e "$MODEL" ]] || die "no model at ${MODEL}: mount your model folder (-v /path/to/weights:/models:ro) or set POMONA_MODEL to an .onnx or .engine file"
    [[ -f "$MODEL" && -r "$MODEL" ]] || die "model ${MODEL} is not a readable file"
    case "$MODEL" in
        *.onnx) resolve_engine "$MODEL" ;;
        *.engine) echo "$MODEL" ;;
        *) die "model ${MODEL} is neither .onnx nor .engine: export it on the workstation first (pomona export best.pt)" ;;
    esac
}

has_source() {
    local arg
    for arg in "$@"; do
        [[ "$arg" == "--source" || "$arg" == --source=* ]] && return 0
    done
    return 1
}

main() {
    local cmd="${1:-}" model
    [[ $# -gt 0 ]] && shift
    case "$cmd" in
        "")
            model="$(runnable_model)"
            local extra=()
            read -r -a extra <<<"${POMONA_RUN_ARGS:-}"
            exec pomona run "$model" --source "$SOURCE" "${extra[@]}"
            ;;
        run)
            model="$(runnable_model)"
            if has_source "$@"; then
                exec pomona run "$model" "$@"
            fi
            exec pomona run "$model" --source "$SOURCE" "$@"
            ;;
        demo)
            model="$(runnable_model)"
            # The container's own network is private; the port is only reachable where `docker run -p` publishes it.
            exec pomona demo --model "$model" --host "${POMONA_DEMO_HOST:-0.0.0.0}" "$@"
            ;;
        bench)
            model="$(runnable_model)"
            exec pomona bench "$model" "$@"
            ;;
        export)
            exec pomona export "$@"
            ;;
        engine)
            runnable_model
            ;;
        *)
            exec "$cmd" "$@"
            ;;
    esac
}

main "$@"
