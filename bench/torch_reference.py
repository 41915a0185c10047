"""The PyTorch eager reference of the loss grpokit's bench C ABI computes (verl/TRL conventions):
log_softmax in fp32 of logits / T, gather, PPO clip with clip-higher and verl's dual clip, k3 KL to
the reference policy, token-mean aggregation; the gradient by autograd. Shared by host_bench.py and
peers.py, and a ctypes binding of grpokit's C ABI (capi.hpp)."""
import ctypes

import torch


def grpo_loss(logits, targets, seq_offsets, adv, logp_old, logp_ref, temperature=1.0, eps_low=0.2,
              eps_high=0.28, dual_clip=3.0, beta=0.0):
    z = logits.float() / temperature
    logp = torch.log_softmax(z, dim=-1).gather(-1, targets[:, None]).squeeze(-1)
    lengths = seq_offsets[1:] - seq_offsets[:-1]
    a = torch.repeat_interleave(adv, lengths)
    ratio = torch.exp(torch.clamp(logp - logp_old, -20.0, 20.0))
    pg = torch.maximum(-a * ratio, -a * torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high))
    if dual_clip > 1.0:
        pg = torch.where(a < 0, torch.minimum(pg, -a * dual_clip), pg)
    loss = pg.mean()
    if beta > 0:
        d = torch.clamp(logp_ref - logp, -20.0, 20.0)
        loss = loss + beta * torch.clamp(torch.exp(d) - d - 1.0, -10.0, 10.0).mean()
    return loss, logp


def random_problem(T, V, group, dtype, device, seed=0, seq_len=None):
    """Random logits (never zeros), targets, packed sequences of varying length (or all `seq_len`)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    logits = (torch.randn(T, V, generator=g) * 2.0).to(dtype)
    targets = torch.randint(0, V, (T,), generator=g)
    lengths = []
    left = T
    while left > 0:
        n = min(left, seq_len or int(torch.randint(16, 256, (1,), generator=g)))
        lengths.append(n)
        left -= n
    S = len(lengths)
    seq_offsets = torch.zeros(S + 1, dtype=torch.int64)
    seq_offsets[1:] = torch.cumsum(torch.tensor(lengths), 0)
    rewards = torch.randint(0, 2, (S,), generator=g).float()
    adv = torch.zeros(S)
    for s0 in range(0, S, group):  # group-normalised advantages
        r = rewards[s0:s0 + group]
        adv[s0:s0 + group] = (r - r.mean()) / (r.std() + 1e-6) if len(r) > 1 else 0.0
    with torch.no_grad():
        logp = torch.log_softmax(logits.float(), -1).gather(-1, targets[:, None]).squeeze(-1)
    logp_old = logp + 0.05 * torch.randn(T, generator=g)
    logp_ref = logp + 0.05 * torch.randn(T, generator=g)
    out = dict(logits=logits, targets=targets, seq_offsets=seq_offsets, adv=adv, logp_old=logp_old,
               logp_ref=logp_ref)
    return {k: v.to(device) for k, v in out.items()}


class BenchArgs(ctypes.Structure):
    _fields_ = [("logits", ctypes.c_void_p), ("T", ctypes.c_int64), ("V", ctypes.c_int64),
                ("targets", ctypes.c_void_p), ("seq_offsets", ctypes.c_void_p), ("S", ctypes.c_int64),
                ("adv", ctypes.c_void_p), ("logp_old", ctypes.c_void_p), ("logp_ref", ctypes.c_void_p),
                ("dlogits", ctypes.c_void_p), ("logp_out", ctypes.c_void_p),
                ("temperature", ctypes.c_double), ("eps_low", ctypes.c_double), ("eps_high", ctypes.c_double),
                ("dual_clip", ctypes.c_double), ("beta", ctypes.c_double), ("dtype", ctypes.c_int),
                ("workspace", ctypes.c_void_p), ("workspace_bytes", ctypes.c_size_t), ("stream", ctypes.c_void_p)]


def bench_args(p, dlogits, logp_out=None, workspace=None, stream=0, temperature=1.0, eps_low=0.2, eps_high=0.28,
               dual_clip=3.0, beta=0.0):
    T, V = p["logits"].shape
    return BenchArgs(p["logits"].data_ptr(), T, V, p["targets"].data_ptr(), p["seq_offsets"].data_ptr(),
                     p["seq_offsets"].numel() - 1, p["adv"].data_ptr(), p["logp_old"].data_ptr(),
                     p["logp_ref"].data_ptr() if beta > 0 else None, dlogits.data_ptr(),
                     logp_out.data_ptr() if logp_out is not None else None, temperature, eps_low, eps_high,
                     dual_clip, beta, 1 if p["logits"].dtype == torch.bfloat16 else 0,
                     workspace.data_ptr() if workspace is not None else None,
                     workspace.numel() if workspace is not None else 0, stream)


def time_cuda(fn, reps):
    """Median milliseconds of `reps` calls (after a warm-up) and the peak GPU memory they allocate
    beyond what was allocated before, in MiB."""
    import statistics
    fn()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(reps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop))
        del out
    return statistics.median(times), (torch.cuda.max_memory_allocated() - base) / 2**20


def compare_methods(methods, reference, error, row, reps):
    """One markdown row per method: `row` (the leading cells), time and peak memory (time_cuda), the
    loss, and error(output, reference output), the agreement with methods[reference]. A method
    returns a tuple whose first element is the loss; one that runs out of memory prints OOM, one that
    fails otherwise prints the exception's type."""
    try:
        expected = methods[reference]()
    except torch.cuda.OutOfMemoryError:
        expected = None
        torch.cuda.empty_cache()
    for name, fn in methods.items():
        try:
            out = fn()
            err = error(out, expected) if expected is not None else float("nan")
            loss = float(out[0])
            del out
            ms, peak = time_cuda(fn, reps)
            print(f"| {row} | {name} | {ms:.2f} | {peak:.0f} | {loss:.6f} | {err:.2e} |", flush=True)
        except torch.cuda.OutOfMemoryError:
            print(f"| {row} | {name} | OOM | | | |", flush=True)
            torch.cuda.empty_cache()
        except Exception as e:  # a peer that fails at this shape (e.g. a torch.compile error) # noqa: BLE001
            print(f"| {row} | {name} | failed: {type(e).__name__} | | | |", flush=True)
            torch.cuda.empty_cache()
