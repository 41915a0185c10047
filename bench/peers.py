"""Peer comparison on a GPU, in one process on identical inputs: grpokit's device fused loss
(forward + backward, through the C ABI of capi_device.cu), the PyTorch eager reference,
torch.compile of it, and Liger-Kernel's triton_grpo_loss when importable. Checks that they agree
and reports median time and peak extra GPU memory.

    python3 bench/peers.py --lib build/default/bench/libgrpokit_bench_device.so [--shapes 16384x151936]
"""
import argparse
import ctypes

import torch

import torch_reference as ref

SEQ_LEN = 512  # uniform lengths so that the padded [B, L+1, V] layout of Liger holds the same tokens


def grpokit_fn(lib, p, beta):
    T, V = p["logits"].shape
    S = p["seq_offsets"].numel() - 1
    dtype = 1 if p["logits"].dtype == torch.bfloat16 else 0
    ws = torch.empty(lib.grpokit_device_workspace_bytes(T, V, S, dtype), dtype=torch.uint8, device="cuda")
    dlogits = torch.empty_like(p["logits"])
    args = ref.bench_args(p, dlogits, workspace=ws, stream=torch.cuda.current_stream().cuda_stream, beta=beta,
                          dual_clip=0.0)
    loss = ctypes.c_double()

    def run():
        if lib.grpokit_device_fused_loss(ctypes.byref(args), ctypes.byref(loss)) != 0:
            raise RuntimeError("grpokit_device_fused_loss failed")
        return loss.value, dlogits
    return run


def torch_fn(p, beta, compiled=False):
    f = torch.compile(ref.grpo_loss) if compiled else ref.grpo_loss

    def run():
        logits = p["logits"].detach().requires_grad_(True)
        loss, _ = f(logits, p["targets"], p["seq_offsets"], p["adv"], p["logp_old"], p["logp_ref"], dual_clip=0.0,
                    beta=beta)
        loss.backward()
        return loss.item(), logits.grad
    return run


def liger_fn(p, beta):
    from liger_kernel.transformers.grpo_loss import triton_grpo_loss  # noqa: E402
    T, V = p["logits"].shape
    B = T // SEQ_LEN
    padded = torch.zeros(B, SEQ_LEN + 1, V, dtype=p["logits"].dtype, device="cuda")
    padded[:, :SEQ_LEN] = p["logits"].view(B, SEQ_LEN, V)
    ids = p["targets"].view(B, SEQ_LEN)
    old = p["logp_old"].view(B, SEQ_LEN)
    refp = p["logp_ref"].view(B, SEQ_LEN)

    def run():
        logits = padded.detach().clone().requires_grad_(True)
        loss, _ = triton_grpo_loss(logits, old, refp, ids, p["adv"], temperature=1.0, beta=beta, eps_low=0.2,
                                   eps_high=0.28, inplace=False, loss_type="dapo", reduce=True,
                                   num_items_in_batch=T)
        loss.backward()
        return loss.item(), logits.grad[:, :SEQ_LEN].reshape(T, V)
    return run


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--shapes", default="4096x128256,16384x128256,16384x151936")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--beta", type=float, default=0.04)
    a = ap.parse_args()
    lib = ctypes.CDLL(a.lib)
    lib.grpokit_device_workspace_bytes.restype = ctypes.c_size_t
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; forward + backward, median of {a.reps}")
    print("| T | V | dtype | method | ms | peak extra MiB | loss | max |d dlogits| vs eager |")
    print("|---|---|---|---|---|---|---|---|")
    for shape in a.shapes.split(","):
        T, V = (int(x) for x in shape.split("x"))
        for dtype in (torch.bfloat16, torch.float32):
            p = ref.random_problem(T, V, 8, dtype, "cuda", seed=T + V, seq_len=SEQ_LEN)
            methods = {"grpokit": grpokit_fn(lib, p, a.beta), "torch eager": torch_fn(p, a.beta),
                       "torch.compile": torch_fn(p, a.beta, compiled=True)}
            try:
                methods["liger triton_grpo_loss"] = liger_fn(p, a.beta)
            except ImportError:
                print("(liger_kernel not importable: Liger skipped)")
            ref.compare_methods(methods, "torch eager",
                                lambda out, eager: (out[1].float() - eager[1].float()).abs().max().item(),
                                f"{T} | {V} | {str(dtype).split('.')[-1]}", a.reps)
            del p, methods
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
