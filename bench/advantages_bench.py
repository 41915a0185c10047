"""compute_advantages at S = 1M rollouts (issue 13 item 4): grpokit's host loop (C ABI of
capi_host.cpp) and, with --device-lib on a GPU machine, its device kernels (capi_device.cu), each
against the peers' formula in the same run on the same rewards: TRL / verl's GRPO advantages
(group view, mean and Bessel std, (r - mean) / (std + eps)) and MC-GRPO's median / MAD, written in
torch (CPU and CUDA) where torch is importable, else in numpy on the CPU. Equal group sizes (the
peers' reshape needs them). Reports the median time, the bytes a pass must move (fp32 rewards in,
fp32 advantages and a byte of mask out, the offsets) and their fraction of the copy bandwidth
measured in the same run, and the largest difference from the peer.

    python3 bench/advantages_bench.py --host-lib build/default/bench/libgrpokit_bench_host.so \\
        [--device-lib build/default/bench/libgrpokit_bench_device.so] [--S 1048576] [--groups 8,64,512,4096]
"""
import argparse
import ctypes
import time

try:
    import torch
except ImportError:
    torch = None
import numpy as np

EPS, MAD_EPS = 1e-6, 1e-3  # grpokit's advantage_config defaults


class Args(ctypes.Structure):
    _fields_ = [("rewards", ctypes.c_void_p), ("offsets", ctypes.c_void_p), ("S", ctypes.c_int64),
                ("G", ctypes.c_int64), ("baseline", ctypes.c_int), ("adv", ctypes.c_void_p),
                ("keep", ctypes.c_void_p), ("workspace", ctypes.c_void_p), ("workspace_bytes", ctypes.c_size_t),
                ("stream", ctypes.c_void_p)]


def median_ms(fn, reps, sync=lambda: None):
    fn()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[len(times) // 2]


def peer_numpy(r, n, baseline):
    g = r.reshape(-1, n)
    if baseline == 0:
        return ((g - g.mean(1, keepdims=True)) / (g.std(1, ddof=1, keepdims=True) + EPS)).reshape(-1)
    med = np.sort(g, 1)[:, (n - 1) // 2:(n - 1) // 2 + 1]  # lower median, as torch.median
    mad = np.sort(np.abs(g - med), 1)[:, (n - 1) // 2:(n - 1) // 2 + 1]
    return ((g - med) / (mad + MAD_EPS)).reshape(-1)


def peer_torch(r, n, baseline):
    g = r.view(-1, n)
    if baseline == 0:
        return ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + EPS)).view(-1)
    med = g.median(1, keepdim=True).values
    mad = (g - med).abs().median(1, keepdim=True).values
    return ((g - med) / (mad + MAD_EPS)).view(-1)


def copy_gbs(device):
    if torch is None:
        a = np.ones(1 << 28, dtype=np.uint8)
        ms = median_ms(lambda: a.copy(), 5)
        return 2 * a.nbytes / ms / 1e6
    a = torch.ones(1 << 30 if device == "cuda" else 1 << 28, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    ms = median_ms(lambda: b.copy_(a), 10, sync)
    return 2 * a.numel() / ms / 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host-lib", required=True)
    ap.add_argument("--device-lib")
    ap.add_argument("--S", type=int, default=1 << 20)
    ap.add_argument("--groups", default="8,64,512,4096", help="group sizes n (S / n groups each)")
    ap.add_argument("--reps", type=int, default=10)
    a = ap.parse_args()
    host = ctypes.CDLL(a.host_lib)
    dev = ctypes.CDLL(a.device_lib) if a.device_lib else None
    targets = [("host", "cpu")] + ([("device", "cuda")] if dev else [])
    print(f"S = {a.S}; peer: {'torch ' + torch.__version__ if torch else 'numpy ' + np.__version__}; median of "
          f"{a.reps}; bytes = 9 S + 8 (G + 1) (fp32 rewards in, fp32 advantages and the mask out, offsets)")
    print("| where | baseline | n | G | grpokit ms | GB/s | of copy bw | peer ms | max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for where, device in targets:
        bw = copy_gbs(device)
        rng = np.random.default_rng(7)
        for n in (int(x) for x in a.groups.split(",")):
            S = a.S // n * n
            G = S // n
            r_np = (rng.random(S) < 0.4).astype(np.float32) + rng.normal(0, 0.01, S).astype(np.float32)
            off_np = np.arange(0, S + 1, n, dtype=np.int64)
            if where == "device":
                r = torch.from_numpy(r_np).cuda()
                off = torch.from_numpy(off_np).cuda()
                adv = torch.empty(S, dtype=torch.float32, device="cuda")
                keep = torch.empty(S, dtype=torch.uint8, device="cuda")
                dev.grpokit_device_advantages_workspace_bytes.restype = ctypes.c_size_t
                wsb = dev.grpokit_device_advantages_workspace_bytes(ctypes.c_int64(S))
                ws = torch.empty(wsb, dtype=torch.uint8, device="cuda")
                ptr = lambda t: t.data_ptr()  # noqa: E731
                sync = torch.cuda.synchronize
                stream = torch.cuda.current_stream().cuda_stream
            else:
                r, off = r_np, off_np
                adv = np.empty(S, dtype=np.float32)
                keep = np.empty(S, dtype=np.uint8)
                ws, wsb, stream = None, 0, None
                ptr = lambda x: x.ctypes.data  # noqa: E731
                sync = lambda: None  # noqa: E731
            for baseline, name in ((0, "mean"), (1, "median")):
                args = Args(ptr(r), ptr(off), S, G, baseline, ptr(adv), ptr(keep), ptr(ws) if ws is not None else None,
                            wsb, stream)
                call = dev.grpokit_device_compute_advantages if where == "device" else host.grpokit_host_compute_advantages

                def run():
                    if call(ctypes.byref(args)) != 0:
                        raise RuntimeError("grpokit call failed")
                ms = median_ms(run, a.reps, sync)
                got = adv.cpu().numpy() if where == "device" else adv.copy()
                if torch is not None:
                    pr = r if where == "device" else torch.from_numpy(r_np)
                    peer_ms = median_ms(lambda: peer_torch(pr, n, baseline), a.reps, sync)
                    want = peer_torch(pr, n, baseline).cpu().numpy()
                else:
                    peer_ms = median_ms(lambda: peer_numpy(r_np, n, baseline), a.reps)
                    want = peer_numpy(r_np, n, baseline)
                gbs = (9 * S + 8 * (G + 1)) / ms / 1e6
                diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
                print(f"| {where} | {name} | {n} | {G} | {ms:.3f} | {gbs:.1f} | {100 * gbs / bw:.1f}% | "
                      f"{peer_ms:.3f} | {diff:.2e} |", flush=True)
        print(f"({where}: copy bandwidth measured in this run {bw:.0f} GB/s, read + write)")


if __name__ == "__main__":
    main()
