#!/usr/bin/env bash
# The GPU checks owed in bench/RESULTS.md, as one script for a lent GPU machine, in parts that
# each fit one call of a few minutes:
#   gpu_checks.sh PARTS BIN OUT   PARTS: a comma-separated list of
#     tests       device tests at full size, the example trainer on the GPU, bench_device --quick,
#                 compute-sanitizer (memcheck, racecheck, synccheck, initcheck at the small sizes)
#     peers       bench/peers.py, bench/peers_linear.py (PyTorch, torch.compile, Liger) and
#                 bench/advantages_bench.py (host and device, against torch)
#     bench       bench_device at every shape
# BIN holds test_device, bench_device, libgrpokit_bench_device.so, libgrpokit_bench_host.so and
# train_grpo built for the GPU (-DCMAKE_CUDA_ARCHITECTURES=90 for an H100/H200), and lib/ with any
# shared library the machine lacks. Every step has its own time limit and log under OUT; a failed
# step does not stop the next.
set -u
parts=$1 bin=$(cd "$2" && pwd) out=$3
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
export LD_LIBRARY_PATH="$bin/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
# the CUDA libraries the binaries link (cudart, cuBLAS) wherever the machine keeps them
for lib in $(ldd "$bin"/test_device "$bin"/libgrpokit_bench_device.so | awk '/not found/ {print $1}' | sort -u); do
  found=$(find /usr/local /opt /usr/lib -name "$lib" 2>/dev/null | head -n 1)
  [ -n "$found" ] && export LD_LIBRARY_PATH="$(dirname "$found"):$LD_LIBRARY_PATH"
done
ldd "$bin"/test_device "$bin"/train_grpo | grep 'not found'
summary=()
step() {  # step NAME SECONDS COMMAND...: run with a limit, log to OUT/NAME.log, note the exit status
  local name=$1 limit=$2 t0 rc
  shift 2
  t0=$(date +%s)
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  rc=$?
  summary+=("$(printf '%-28s exit %3d  %4d s' "$name" "$rc" $(($(date +%s) - t0)))")
  echo "== $name: exit $rc"
  tail -n 6 "$out/$name.log"
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv | tee "$out/gpu.txt"
for part in ${parts//,/ }; do
case $part in
  tests)
    step test_device 170 "$bin/test_device" -d yes
    step train_grpo_cuda 90 "$bin/train_grpo" --device cuda --log-every 100 --check 0.85
    step train_grpo_backends 60 "$here/../examples/train_grpo/compare_backends.sh" "$bin/train_grpo" /tmp/backends \
      --steps 6 --prompts 8 --group-size 4 --seed 3 --hidden 32 --lr 0.03
    step bench_device 60 "$bin/bench_device" --quick
    export GRPOKIT_DEVICE_TEST_SIZE=small
    step memcheck 90 compute-sanitizer --tool memcheck --error-exitcode 9 "$bin/test_device" '~[large]'
    step racecheck 60 compute-sanitizer --tool racecheck --error-exitcode 9 "$bin/test_device" '~[large]'
    step synccheck 40 compute-sanitizer --tool synccheck --error-exitcode 9 "$bin/test_device" '~[large]'
    step initcheck 60 compute-sanitizer --tool initcheck --error-exitcode 9 "$bin/test_device" '~[large]'
    unset GRPOKIT_DEVICE_TEST_SIZE
    ;;
  peers)
    cd "$here" || exit 2
    export PYTHONUNBUFFERED=1
    # Liger-Kernel as a carried wheel (WHEELS=dir), where the machine cannot reach PyPI
    if [ -n "${WHEELS:-}" ]; then
      python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$WHEELS"/*.whl &&
        export PYTHONPATH=/tmp/site
    fi
    step peers 170 python3 peers.py --lib "$bin/libgrpokit_bench_device.so" --shapes 16384x151936 --reps 10
    step peers_linear 170 python3 peers_linear.py --lib "$bin/libgrpokit_bench_device.so" \
      --shapes 4096x151936,16384x151936 --reps 5
    step advantages 120 python3 advantages_bench.py --host-lib "$bin/libgrpokit_bench_host.so" \
      --device-lib "$bin/libgrpokit_bench_device.so"
    cd - >/dev/null || exit 2
    ;;
  bench)
    step bench_device_full 150 "$bin/bench_device"
    ;;
  *) echo "usage: $0 tests,peers,bench BIN OUT" >&2; exit 2 ;;
esac
done
printf '%s\n' "${summary[@]}" | tee "$out/summary.txt"
