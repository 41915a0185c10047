"""Host benchmark (issue 16): grpokit's host token_logprobs, fused_loss (forward + backward) and
fused_linear_loss through the C ABI (capi_host.cpp) against PyTorch's CPU formulations of the same
outputs, in one process with the methods interleaved (rep after rep, every method in turn), outputs
preallocated outside the timing. Per row: the median time, the bytes the operation must move, the
time those bytes take at the memory bandwidth measured in the same run, the fraction of that bound
reached, the peak resident memory the call adds (VmHWM after a reset), and the ratio to the fastest
PyTorch formulation. Every shape's outputs are checked against PyTorch's before it is timed.

    python3 bench/host_bench.py --lib build/default/bench/libgrpokit_bench_host.so

The memory bound: token_logprobs reads the logits once (T V s bytes, s the storage size);
fused_loss reads them and writes dlogits once (2 T V s). The bandwidth is that of a large copy
(bytes read + bytes written per second, torch's copy_ on every thread), the best of 5.
fused_linear_loss is compute-bound (three GEMMs): its row reports time and peak memory only.
"""
import argparse
import ctypes
import os
import statistics
import sys
import time
import warnings

# OpenMP's threads sleep while OpenBLAS's own threads run grpokit's GEMMs (and the reverse); spinning,
# each side steals the cores of the other (docs/fused_linear_loss.md). Set before torch is imported:
# the library then shares torch's libgomp.so.1, which reads it once (torch's own timings change by
# noise only).
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import torch
import torch.nn.functional as F

import torch_reference as ref
from peers_linear import linear_runner


# --- measurement ---------------------------------------------------------------------------------

def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_added_mb(fn):
    """The resident memory one call of fn adds at its peak: VmHWM after resetting it to the current
    RSS (writing 5 to /proc/self/clear_refs), minus that RSS, in MB."""
    out = None
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status_kb("VmRSS")
    out = fn()
    peak = _status_kb("VmHWM")
    del out
    return (peak - base) / 1024.0


def copy_bandwidth(gib=1.0):
    """Bytes read + written per second by torch's copy_ of a large buffer (the best of 5)."""
    n = int(gib * 2**30) // 4
    src = torch.ones(n)
    dst = torch.empty(n)
    dst.copy_(src)
    best = min(_timed(lambda: dst.copy_(src)) for _ in range(5))
    return 2 * n * 4 / best


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(methods, reps):
    """The median seconds of each method over `reps` rounds, each round calling every method once
    (after one warm-up round)."""
    for fn in methods.values():
        fn()
    times = {name: [] for name in methods}
    for _ in range(reps):
        for name, fn in methods.items():
            times[name].append(_timed(fn))
    return {name: statistics.median(t) for name, t in times.items()}


# --- the methods ---------------------------------------------------------------------------------

def grpokit_logprobs(lib, p):
    T, _ = p["logits"].shape
    logp, ent, lse = torch.empty(T), torch.empty(T), torch.empty(T)
    args = ref.bench_args(p, p["logits"])  # dlogits unused

    def run():
        if lib.grpokit_host_token_logprobs(ctypes.byref(args), ctypes.c_void_p(logp.data_ptr()),
                                           ctypes.c_void_p(ent.data_ptr()), ctypes.c_void_p(lse.data_ptr())) != 0:
            raise RuntimeError("grpokit_host_token_logprobs failed")
        return logp, ent, lse
    return run


def grpokit_rows_in_cache(lib, p):
    """token_logprobs's rows with no DRAM traffic: T rows that are all the first few rows again
    (within 512 KiB, which stays in a core's L2), in one call. Its fraction of the bound is the
    ceiling the kernels' arithmetic allows on this CPU."""
    T, V = p["logits"].shape
    rows = min(T, max(1, (512 * 1024) // (V * p["logits"].element_size())))
    lse = torch.empty(T)
    args = ref.bench_args(p, p["logits"])

    def run():
        if lib.grpokit_host_rows_in_cache(ctypes.byref(args), ctypes.c_int64(rows),
                                          ctypes.c_void_p(lse.data_ptr())) != 0:
            raise RuntimeError("grpokit_host_rows_in_cache failed")
        return lse[:T - T % rows].view(-1, rows)
    return run


def torch_log_softmax(p):
    """log_softmax in fp32, gather, entropy from the same log-probs."""
    def run():
        with torch.no_grad():
            lsm = torch.log_softmax(p["logits"].float(), -1)
            return lsm.gather(-1, p["targets"][:, None]).squeeze(-1), -(lsm.exp() * lsm).sum(-1)
    return run


def torch_cross_entropy(p):
    """cross_entropy for the log-probs; entropy as lse - sum(softmax * z)."""
    def run():
        with torch.no_grad():
            z = p["logits"].float()
            logp = -F.cross_entropy(z, p["targets"], reduction="none")
            return logp, torch.logsumexp(z, -1) - (torch.softmax(z, -1) * z).sum(-1)
    return run


def grpokit_fused_loss(lib, p, beta):
    dlogits = torch.empty_like(p["logits"])
    args = ref.bench_args(p, dlogits, beta=beta)
    loss = ctypes.c_double()

    def run():
        if lib.grpokit_host_fused_loss(ctypes.byref(args), ctypes.byref(loss)) != 0:
            raise RuntimeError("grpokit_host_fused_loss failed")
        return loss.value, dlogits
    return run


def torch_fused_loss(p, beta):
    """The reference loss of torch_reference.py and its gradient by autograd."""
    def run():
        logits = p["logits"].detach().requires_grad_(True)
        loss, _ = ref.grpo_loss(logits, p["targets"], p["seq_offsets"], p["adv"], p["logp_old"], p["logp_ref"],
                                beta=beta)
        loss.backward()
        return loss.item(), logits.grad
    return run


def linear_problem(T, V, D, dtype, seed):
    p = ref.random_problem(T, 8, 8, dtype, "cpu", seed=seed, seq_len=256)  # batch data; its logits unused
    g = torch.Generator().manual_seed(seed)
    p["hidden"] = torch.randn(T, D, generator=g).to(dtype)
    p["weight"] = (torch.randn(V, D, generator=g) / D**0.5).to(dtype)
    p["targets"] = torch.randint(0, V, (T,), generator=g)
    with torch.no_grad():  # old and reference log-probs near the model's own
        logp = torch.log_softmax(p["hidden"].float() @ p["weight"].float().T, -1).gather(-1, p["targets"][:, None])
    p["logp_old"] = logp.squeeze(-1) + 0.05 * torch.randn(T, generator=g)
    p["logp_ref"] = logp.squeeze(-1) + 0.05 * torch.randn(T, generator=g)
    return p


def grpokit_linear(lib, p, chunk, beta):
    return linear_runner(lib.grpokit_host_fused_linear_loss, p, chunk, beta)


def torch_linear(p, beta):
    """hidden @ W.T in the storage type, the reference loss, autograd."""
    def run():
        hidden = p["hidden"].detach().requires_grad_(True)
        weight = p["weight"].detach().requires_grad_(True)
        loss, _ = ref.grpo_loss(hidden @ weight.T, p["targets"], p["seq_offsets"], p["adv"], p["logp_old"],
                                p["logp_ref"], dual_clip=0.0, beta=beta)
        loss.backward()
        return loss.item(), hidden.grad, weight.grad
    return run


# --- agreement -----------------------------------------------------------------------------------

def _max_rel(a, b):
    a, b = a.float(), b.float()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def agree(what, errors, tol):
    bad = {k: v for k, v in errors.items() if not v <= tol}
    print(f"agreement {what}: " + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()) + f" (tolerance {tol:.0e})",
          file=sys.stderr, flush=True)
    if bad:
        sys.exit(f"grpokit and PyTorch disagree: {what}: {bad}")


# --- the table -----------------------------------------------------------------------------------

def row(op, T, V, dtype, name, secs, moved, bw, peak, fastest_torch):
    bound = moved / bw if moved else None
    frac = f"{100 * bound / secs:.0f} %" if bound else "—"
    bound_ms = f"{bound * 1e3:.1f}" if bound else "—"
    print(f"| {op} | {T} | {V} | {dtype} | {name} | {secs * 1e3:.1f} | {moved / 1e6:.0f} | {bound_ms} | {frac} | "
          f"{peak:.0f} | {fastest_torch / secs:.2f}x |", flush=True)


def bench_rows(lib, op, T, V, dtype, reps, bw, beta):
    p = ref.random_problem(T, V, 8, dtype, "cpu", seed=T + V)
    size = p["logits"].element_size()
    tol = 2e-5 if dtype == torch.float32 else 1e-2
    if op == "token_logprobs":
        methods = {"grpokit": grpokit_logprobs(lib, p), "torch log_softmax": torch_log_softmax(p),
                   "torch cross_entropy": torch_cross_entropy(p)}
        (gl, ge, glse), (tl, te) = methods["grpokit"](), methods["torch log_softmax"]()
        agree(f"{op} {T}x{V} {dtype}", {"logp": _max_rel(gl, tl), "entropy": _max_rel(ge, te)}, tol)
        in_cache = grpokit_rows_in_cache(lib, p)
        repeats = in_cache()  # the batch's lse of those rows, the same bits every repeat
        if not torch.equal(repeats, glse[:repeats.shape[1]].expand_as(repeats)):
            sys.exit(f"{op} {T}x{V} {dtype}: the rows in cache differ from the same rows of the batch")
        methods["grpokit (rows in cache)"] = in_cache
        moved = T * V * size
    else:
        methods = {"grpokit": grpokit_fused_loss(lib, p, beta), "torch autograd": torch_fused_loss(p, beta)}
        (gl, gd), (tl, td) = methods["grpokit"](), methods["torch autograd"]()
        agree(f"{op} {T}x{V} {dtype}", {"loss": abs(gl - tl) / max(1.0, abs(tl)), "dlogits": _max_rel(gd, td)}, tol)
        moved = 2 * T * V * size
    times = interleaved(methods, reps)
    peaks = {name: peak_added_mb(fn) for name, fn in methods.items()}
    fastest = min(t for name, t in times.items() if name.startswith("torch"))
    for name in methods:
        row(op, T, V, str(dtype).split(".")[-1], name, times[name], moved, bw, peaks[name], fastest)


def bench_linear(lib, T, V, D, dtype, chunk, reps, bw, beta):
    p = linear_problem(T, V, D, dtype, seed=T + V + D)
    methods = {"grpokit": grpokit_linear(lib, p, chunk, beta), "torch autograd": torch_linear(p, beta)}
    # against PyTorch in fp32 on the same inputs (its bf16 formulation rounds the logits to bf16)
    exact = torch_linear({**p, "hidden": p["hidden"].float(), "weight": p["weight"].float()}, beta)
    (gl, gh, gw), (tl, th, tw) = methods["grpokit"](), exact()
    agree(f"fused_linear_loss {T}x{V}x{D} {dtype}", {"loss": abs(gl - tl) / max(1.0, abs(tl)),
                                                     "dhidden": _max_rel(gh, th), "dweight": _max_rel(gw, tw)},
          2e-4 if dtype == torch.float32 else 1e-2)
    times = interleaved(methods, reps)
    peaks = {name: peak_added_mb(fn) for name, fn in methods.items()}
    for name in methods:
        row(f"fused_linear_loss D={D}", T, V, str(dtype).split(".")[-1], name, times[name], 0, bw, peaks[name],
            times["torch autograd"])


def main():
    warnings.filterwarnings("ignore", category=UserWarning)  # torch's notes on a missing NumPy or GPU driver
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--shapes", default="1024x32768,4096x32768,1024x151936,4096x151936")
    ap.add_argument("--linear", default="1024x32768x256", help="TxVxD shapes of fused_linear_loss ('' for none)")
    ap.add_argument("--chunk", type=int, default=256, help="fused_linear_loss's token chunk")
    ap.add_argument("--beta", type=float, default=0.04)
    a = ap.parse_args()
    lib = ctypes.CDLL(a.lib)
    bw = copy_bandwidth()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; memory bandwidth (copy, read + write) "
          f"{bw / 1e9:.1f} GB/s; median of {a.reps} interleaved rounds")
    print("| op | T | V | dtype | method | ms | MB moved | bound ms | of bound | peak MB | vs fastest torch |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for op in ("token_logprobs", "fused_loss"):
        for shape in filter(None, a.shapes.split(",")):
            T, V = (int(x) for x in shape.split("x"))
            for dtype in (torch.float32, torch.bfloat16):
                bench_rows(lib, op, T, V, dtype, a.reps, bw, a.beta)
    for shape in filter(None, a.linear.split(",")):
        T, V, D = (int(x) for x in shape.split("x"))
        for dtype in (torch.float32, torch.bfloat16):
            bench_linear(lib, T, V, D, dtype, a.chunk, a.reps, bw, a.beta)


if __name__ == "__main__":
    main()
