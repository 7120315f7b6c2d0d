#!/usr/bin/env bash
# The GPU benchmarks in one time-boxed run: training throughput (kerasft's
# loop vs plain model.fit), recording cost and the non-finite guard's cost
# per step, ResNet50 at 224 px in mixed
# precision, on each backend given, then the input pipeline on this
# machine's cores. Each part runs in its own process under its own time
# limit, so one failing or slow part does not lose the others; each part's
# output is kept in $OUT (default ./gpu-bench) as it is printed.
#
#     bash benchmarks/gpu.sh                  # torch and jax, full sizes
#     BACKENDS=torch,tensorflow,jax bash benchmarks/gpu.sh
#     SMALL=1 bash benchmarks/gpu.sh          # a tiny dry run on a CPU
#
# Environment: BACKENDS (default torch,jax: the GPU image used here has no
# TensorFlow), PARTS (default throughput,record,nonfinite,input: which parts
# run, so a short device lease can take them in two calls), PRECISION
# (default mixed_bfloat16), SMALL=1 for tiny sizes, OUT (where the logs go),
# PYTHON (default python3), and each part's time limit T_LIMIT, R_LIMIT,
# G_LIMIT, I_LIMIT (seconds), kerasft-loop worker counts T_WORKERS and
# more throughput.py flags T_EXTRA (e.g. "--switch-interval 0.0005").
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-bench}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
BACKENDS=${BACKENDS:-torch,jax}
PRECISION=${PRECISION:-mixed_bfloat16}
PARTS=${PARTS:-throughput,record,nonfinite,input}
has() { [[ ",$PARTS," == *",$1,"* ]]; }
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ "${SMALL:-0}" = 1 ]; then
    SIZE=32; T_ARGS="--steps 4 --repeats 2 --workers 2,1 --profile ${T_EXTRA:-}"
    T_LIMIT=240
    R_ARGS="--max-train-images 128 --repeats 1 --trials 3 --trial-steps 2 --record-repeats 1"
    R_LIMIT=300; I_ARGS="--jpegs 16 --cifar-throughput-images 64 --rounds 1"
    I_WORKERS=1,2; I_LIMIT=120; G_ARGS="--steps 3 --rounds 1"; G_LIMIT=240
else
    # Sized from the first H200 run (README, "Measured on a GPU"): a Keras
    # torch step there takes ~150 ms (eager), a jax step ~15 ms, and jax
    # compiles each model's step for ~20 s.
    SIZE=224; T_LIMIT=${T_LIMIT:-150}
    T_ARGS="--steps 20 --repeats 3 --workers ${T_WORKERS:-16,4,2} --profile ${T_EXTRA:-}"
    R_ARGS=${R_ARGS:-"--max-train-images 320 --repeats 2 --trials 10 --trial-steps 5 --record-repeats 3"}
    R_LIMIT=${R_LIMIT:-240}
    I_ARGS=${I_ARGS:-"--jpegs 200 --cifar-throughput-images 1024 --rounds 2"}
    I_WORKERS=${I_WORKERS:-1,2,4,8,16}; I_LIMIT=${I_LIMIT:-75}
    G_ARGS="--batch-size 32 --steps 30 --rounds 3"; G_LIMIT=${G_LIMIT:-120}
fi

part() {  # part NAME LIMIT_SECONDS BACKEND COMMAND...
    local name=$1 limit=$2 be=$3
    shift 3
    echo "=== $name (KERAS_BACKEND=$be, limit ${limit}s)"
    local t0=$SECONDS
    KERAS_BACKEND=$be timeout -k 5 "$limit" "$@" > "$OUT/$name.txt" 2>&1
    local rc=$?
    # the figures, without the frameworks' start-up chatter
    # (the profiles' rows stay in the file)
    grep -vE "^(WARNING|I0000|E0000|W0000)|cuda_|absl::|^[0-9]{4}-[0-9]{2}" \
        "$OUT/$name.txt" | grep -vE "^ +[0-9]+(/[0-9]+)? +[0-9.]+ " |
        tail -40
    echo "=== $name: exit $rc after $((SECONDS - t0))s"
}

{
    echo "=== machine"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm \
        --format=csv,noheader 2>&1 || echo "no nvidia-smi"
    echo "cores: $(nproc)"
    KERAS_BACKEND=${BACKENDS%%,*} "$PY" - <<'EOF' 2>&1 | grep -v WARNING
import importlib
for m in ("keras", "torch", "jax", "numpy", "tensorflow"):
    try:
        print(f"{m} {importlib.import_module(m).__version__}")
    except Exception as e:
        print(f"{m}: not available ({type(e).__name__}: {e})")
EOF
} | tee "$OUT/machine.txt"

IFS=, read -ra BES <<< "$BACKENDS"
for be in "${BES[@]}"; do
    has throughput && part "throughput-$be" "$T_LIMIT" "$be" "$PY" \
        benchmarks/throughput.py --image-size "$SIZE" \
        --precision "$PRECISION" $T_ARGS
    has record && part "record-$be" "$R_LIMIT" "$be" "$PY" \
        benchmarks/record_overhead.py --image-size "$SIZE" \
        --precision "$PRECISION" $R_ARGS
    has nonfinite && part "nonfinite-$be" "$G_LIMIT" "$be" "$PY" \
        benchmarks/nonfinite_guard.py --image-size "$SIZE" $G_ARGS
done
loaders=keras
"$PY" -c "import grain" 2>/dev/null && loaders=keras,grain
has input && part input "$I_LIMIT" "${BES[0]}" "$PY" \
    benchmarks/input_pipeline.py --backends "" --workers "$I_WORKERS" \
    --loaders "$loaders" $I_ARGS
exit 0
