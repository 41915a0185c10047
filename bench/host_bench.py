"""Host benchmark: grpokit's host fused loss (forward + backward, through the C ABI) against the
PyTorch eager reference on the CPU, on scaled-down shapes; time ratio and peak extra memory.

    python3 bench/host_bench.py --lib build/default/bench/libgrpokit_bench_host.so
"""
import argparse
import ctypes
import multiprocessing as mp
import resource
import statistics
import sys
import time

import torch

import torch_reference as ref


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_grpokit(lib, p, beta):
    dlogits = torch.empty_like(p["logits"])
    args = ref.bench_args(p, dlogits, beta=beta)
    loss = ctypes.c_double()
    if lib.grpokit_host_fused_loss(ctypes.byref(args), ctypes.byref(loss)) != 0:
        raise RuntimeError("grpokit_host_fused_loss failed")
    return loss.value, dlogits


def run_torch(p, beta):
    logits = p["logits"].detach().requires_grad_(True)
    loss, _ = ref.grpo_loss(logits, p["targets"], p["seq_offsets"], p["adv"], p["logp_old"], p["logp_ref"], beta=beta)
    loss.backward()
    return loss.item(), logits.grad


def measure(method, lib_path, T, V, dtype, reps, queue):
    """In a fresh process: peak RSS growth and median time of `reps` runs (after one warm-up)."""
    torch.set_num_threads(2)
    lib = ctypes.CDLL(lib_path) if method == "grpokit" else None
    p = ref.random_problem(T, V, 8, dtype, "cpu", seed=T + V)
    base = peak_rss_mb()
    fn = (lambda: run_grpokit(lib, p, 0.04)) if method == "grpokit" else (lambda: run_torch(p, 0.04))
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    queue.put((statistics.median(times), peak_rss_mb() - base))


def check_agreement(lib):
    for dtype in (torch.float32, torch.bfloat16):
        p = ref.random_problem(300, 1000, 8, dtype, "cpu", seed=1)
        lg, dg = run_grpokit(lib, p, 0.04)
        lt, dt = run_torch(p, 0.04)
        scale = dt.float().abs().max().item()
        err = (dg.float() - dt.float()).abs().max().item()
        tol = 1e-5 if dtype == torch.float32 else 1e-2
        print(f"agreement {str(dtype):15s} loss grpokit {lg:.8f} torch {lt:.8f}  max|d dlogits| {err:.2e} "
              f"(max |dlogits| {scale:.2e})")
        if abs(lg - lt) > 1e-5 * max(1.0, abs(lt)) or err > tol * scale:
            sys.exit("grpokit and the PyTorch reference disagree")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--shapes", default="1024x32000,1024x128256,4096x32000,1024x151936")
    a = ap.parse_args()
    check_agreement(ctypes.CDLL(a.lib))
    ctx = mp.get_context("spawn")
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads available; median of {a.reps} runs, "
          "forward + backward, peak RSS growth over the inputs")
    print("| T | V | dtype | grpokit ms | torch eager ms | speed-up | grpokit peak MB | torch peak MB |")
    print("|---|---|---|---|---|---|---|---|")
    for shape in a.shapes.split(","):
        T, V = (int(x) for x in shape.split("x"))
        for dtype in (torch.float32, torch.bfloat16):
            res = {}
            for method in ("grpokit", "torch"):
                q = ctx.Queue()
                proc = ctx.Process(target=measure, args=(method, a.lib, T, V, dtype, a.reps, q))
                proc.start()
                res[method] = q.get()
                proc.join()
            g, t = res["grpokit"], res["torch"]
            print(f"| {T} | {V} | {str(dtype).split('.')[-1]} | {g[0] * 1e3:.1f} | {t[0] * 1e3:.1f} | "
                  f"{t[0] / g[0]:.2f}x | {g[1]:.0f} | {t[1]:.0f} |", flush=True)


if __name__ == "__main__":
    main()
