"""fused_linear_loss peer comparison on a GPU, in one process: grpokit's device fused_linear_loss
(through capi_device.cu), PyTorch eager (hidden @ W.T, then the loss of torch_reference.py),
torch.compile of it, and Liger's LigerFusedLinearGRPOLoss when importable. Forward + backward
time and peak extra GPU memory, and agreement of dhidden / dweight.

    python3 bench/peers_linear.py --lib build/default/bench/libgrpokit_bench_device.so
"""
import argparse
import ctypes

import torch

import torch_reference as ref

SEQ_LEN = 512


class LinearArgs(ctypes.Structure):
    _fields_ = [("base", ref.BenchArgs), ("hidden", ctypes.c_void_p), ("weight", ctypes.c_void_p),
                ("D", ctypes.c_int64), ("dhidden", ctypes.c_void_p), ("dweight", ctypes.c_void_p),
                ("token_chunk", ctypes.c_int64)]


def problem(T, V, D, dtype, seed):
    p = ref.random_problem(T, 8, 8, dtype, "cuda", seed=seed, seq_len=SEQ_LEN)  # batch data; logits unused
    g = torch.Generator(device="cuda").manual_seed(seed)
    p["hidden"] = torch.randn(T, D, device="cuda", generator=g).to(dtype)
    p["weight"] = (torch.randn(V, D, device="cuda", generator=g) / D**0.5).to(dtype)
    p["targets"] = torch.randint(0, V, (T,), device="cuda", generator=g)
    # the old and reference log-probs near the model's own (as in training), not those of
    # random_problem's 8-column logits: a log-ratio of -10 made every method's loss a KL blow-up
    with torch.no_grad():
        logp = torch.cat([torch.log_softmax(h.float() @ p["weight"].float().T, -1).gather(-1, t[:, None]).squeeze(-1)
                          for h, t in zip(p["hidden"].split(2048), p["targets"].split(2048))])
    p["logp_old"] = logp + 0.05 * torch.randn(T, device="cuda", generator=g)
    p["logp_ref"] = logp + 0.05 * torch.randn(T, device="cuda", generator=g)
    return p


def linear_runner(entry, p, chunk, beta, **bench_kw):
    """run() of a fused_linear_loss entry point of the C ABI (host or device, as p's tensors):
    dhidden and dweight allocated once; each call zeroes dweight and returns (loss, dhidden, dweight)."""
    T, D = p["hidden"].shape
    V = p["weight"].shape[0]
    dhidden = torch.empty_like(p["hidden"])
    dweight = torch.zeros(V, D, dtype=torch.float32, device=p["hidden"].device)
    # the logits fields of the base arguments are unused by the linear entry points
    base = ref.bench_args({**p, "logits": p["hidden"]}, dhidden, beta=beta, dual_clip=0.0, **bench_kw)
    base.V = V
    args = LinearArgs(base, p["hidden"].data_ptr(), p["weight"].data_ptr(), D, dhidden.data_ptr(), dweight.data_ptr(),
                      chunk)
    loss = ctypes.c_double()

    def run():
        dweight.zero_()
        if entry(ctypes.byref(args), ctypes.byref(loss)) != 0:
            raise RuntimeError(f"{entry.__name__} failed")
        return loss.value, dhidden, dweight
    return run


def grpokit_fn(lib, p, chunk, beta):
    T, _ = p["hidden"].shape
    V = p["weight"].shape[0]
    S = p["seq_offsets"].numel() - 1
    dtype = 1 if p["hidden"].dtype == torch.bfloat16 else 0
    ws = torch.empty(lib.grpokit_device_linear_workspace_bytes(T, V, S, chunk, dtype), dtype=torch.uint8, device="cuda")
    return linear_runner(lib.grpokit_device_fused_linear_loss, p, chunk, beta, workspace=ws,
                         stream=torch.cuda.current_stream().cuda_stream)


def torch_fn(p, beta, compiled=False):
    def f(hidden, weight):
        logits = hidden @ weight.T
        return ref.grpo_loss(logits, p["targets"], p["seq_offsets"], p["adv"], p["logp_old"], p["logp_ref"],
                             dual_clip=0.0, beta=beta)[0]
    f = torch.compile(f) if compiled else f

    def run():
        hidden = p["hidden"].detach().requires_grad_(True)
        weight = p["weight"].detach().requires_grad_(True)
        loss = f(hidden, weight)
        loss.backward()
        return loss.item(), hidden.grad, weight.grad
    return run


def liger_fn(p, beta):
    from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss  # noqa: E402
    T, D = p["hidden"].shape
    B = T // SEQ_LEN
    loss_mod = LigerFusedLinearGRPOLoss(beta=beta, epsilon_low=0.2, epsilon_high=0.28, loss_type="dapo",
                                        temperature=1.0)

    def run():
        hidden = p["hidden"].detach().view(B, SEQ_LEN, D).requires_grad_(True)
        weight = p["weight"].detach().requires_grad_(True)
        loss, _ = loss_mod(hidden, weight, p["targets"].view(B, SEQ_LEN), torch.ones(B, SEQ_LEN, device="cuda"),
                           p["adv"], ref_per_token_logps=p["logp_ref"].view(B, SEQ_LEN),
                           old_per_token_logps=p["logp_old"].view(B, SEQ_LEN))
        loss.backward()
        return loss.item(), hidden.grad.view(T, D), weight.grad
    return run


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--shapes", default="4096x128256,4096x151936,16384x128256,16384x151936")
    ap.add_argument("--D", type=int, default=4096)
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--beta", type=float, default=0.04)
    a = ap.parse_args()
    lib = ctypes.CDLL(a.lib)
    lib.grpokit_device_linear_workspace_bytes.restype = ctypes.c_size_t
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, D = {a.D}, bf16; forward + backward")
    print("| T | V | method | ms | peak extra MiB | loss | rel l2 err dweight vs eager |")
    print("|---|---|---|---|---|---|---|")
    for shape in a.shapes.split(","):
        T, V = (int(x) for x in shape.split("x"))
        p = problem(T, V, a.D, torch.bfloat16, seed=T + V)
        methods = {"grpokit": grpokit_fn(lib, p, a.chunk, a.beta), "torch eager": torch_fn(p, a.beta),
                   "torch.compile": torch_fn(p, a.beta, compiled=True)}
        try:
            methods["liger LigerFusedLinearGRPOLoss"] = liger_fn(p, a.beta)
        except ImportError:
            print("(liger_kernel not importable: Liger skipped)")
        ref.compare_methods(methods, "torch eager",
                            lambda out, eager: ((out[2].double() - eager[2].double()).norm()
                                                / eager[2].double().norm()).item(),
                            f"{T} | {V}", a.reps)
        del p, methods
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
