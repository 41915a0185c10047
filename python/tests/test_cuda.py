"""grpokit_torch's CUDA operators (grpokit's device path) against its CPU operators (the host path)
and plain PyTorch: the rows bitwise under batch_invariant (host and device share the reduction
order), the rest within rounding; errors raised from the device status, or NaN outputs without the
synchronisation; a CUDA graph replay; torch.compile. Skipped, saying so, without a GPU or without
the CUDA operators (torch cannot run on the simulated GPU). Run: python -m unittest discover -s python/tests"""
import unittest

import torch

import grpokit_torch as gk
from test_ops import DTYPES, lm_head_batch, packed, reference_loss

HAVE_CUDA = torch.cuda.is_available() and gk.has_cuda()
WHY = ("no CUDA device" if not torch.cuda.is_available() else "grpokit_torch was built without its CUDA operators")


def cuda(*tensors):
    return [t.cuda() if isinstance(t, torch.Tensor) else t for t in tensors]


@unittest.skipUnless(HAVE_CUDA, f"CUDA operators not tested: {WHY}")
class DeviceAgainstHost(unittest.TestCase):
    def test_token_logprobs_bitwise_under_batch_invariant(self):
        for dtype in DTYPES:
            for T, V in [(1, 1), (5, 7), (13, 4099), (3, 70001)]:
                logits, targets, *_ = packed(T + V, [T], V, dtype)
                host = gk.token_logprobs(logits, targets, reduction="batch_invariant", temperature=0.9, sum_p2=True)
                dev = gk.token_logprobs(*cuda(logits, targets), reduction="batch_invariant", temperature=0.9,
                                        sum_p2=True)
                for h, d, name in zip(host, dev, ("logp", "entropy", "lse", "sum_p2")):
                    with self.subTest(dtype=dtype, T=T, V=V, out=name):
                        self.assertTrue(torch.equal(h, d.cpu()), f"{name}: device differs from host")

    def test_fused_loss_against_host_and_reference(self):
        for dtype, tol in DTYPES.items():
            for lengths, V in [([1], 2), ([3, 1, 5], 37), ([7, 2, 11, 4], 5003)]:
                for reduction in ("deterministic", "batch_invariant"):
                    logits, targets, offsets, adv, old, ref = packed(len(lengths) + V, lengths, V, dtype)
                    kw = dict(logp_old=old, logp_ref=ref, kl="k3", kl_coef=0.05, entropy_coef=0.01,
                              reduction=reduction, agg="seq_mean_token_mean")
                    host = gk.fused_loss(logits, targets, offsets, adv, **kw)
                    x = logits.cuda().requires_grad_()
                    dev = gk.fused_loss(x, *cuda(targets, offsets, adv), **{k: v.cuda() if isinstance(
                        v, torch.Tensor) else v for k, v in kw.items()})
                    dev.loss.backward()
                    xr = logits.double().requires_grad_()
                    want = reference_loss(xr, targets, offsets, adv, old, ref, "seq_mean_token_mean", kl_coef=0.05,
                                          entropy_coef=0.01)
                    want.backward()
                    with self.subTest(dtype=dtype, lengths=lengths, V=V, reduction=reduction):
                        self.assertEqual(dev.loss.device.type, "cuda")
                        self.assertAlmostEqual(dev.loss.item(), want.item(), delta=max(tol, 1e-12) * (1 + abs(want.item())))
                        torch.testing.assert_close(x.grad.double().cpu(), xr.grad, rtol=max(tol, 1e-12),
                                                   atol=max(tol, 1e-12) * xr.grad.abs().max().item())
                        torch.testing.assert_close(dev.metrics.cpu(), host.metrics, rtol=1e-4, atol=1e-6)
                        if reduction == "batch_invariant":  # the rows: bitwise the host's
                            self.assertTrue(torch.equal(host.logp, dev.logp.cpu()))
                            self.assertTrue(torch.equal(host.entropy, dev.entropy.cpu()))

    def test_batch_pass_against_host(self):
        """is_batch_normalize and VAPO's NLL: the pass over the batch before the loss, on the device."""
        logits, targets, offsets, adv, old, ref = packed(5, [4, 1, 6, 3], 211, torch.float32)
        positive = torch.tensor([1, 1, 0, 1], dtype=torch.uint8)
        kw = dict(logp_old=old, logp_rollout=ref, positive=positive, is_correction="token_truncate",
                  is_batch_normalize=True, positive_nll_coef=0.2)
        host = gk.fused_loss(logits, targets, offsets, adv, **kw)
        dev = gk.fused_loss(logits.cuda(), *cuda(targets, offsets, adv),
                            **{k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in kw.items()})
        m = gk.metrics_dict(dev.metrics.cpu())
        self.assertNotEqual(m["is_batch_norm_factor"], 1.0)
        self.assertGreater(m["loss_nll"], 0.0)
        torch.testing.assert_close(dev.metrics.cpu(), host.metrics, rtol=1e-5, atol=1e-6)

    def test_token_advantages_bitwise_the_host(self):
        logits, targets, offsets, adv, old, _ = packed(6, [4, 1, 6, 3], 211, torch.float64)
        token_adv = torch.randn(14, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
        kw = dict(logp_old=old, token_adv=token_adv, reduction="batch_invariant", obj="kl_cov", kl_cov_ratio=0.3)
        host = gk.fused_loss(logits, targets, offsets, adv, **kw)
        dev = gk.fused_loss(logits.cuda(), *cuda(targets, offsets, adv),
                            **{k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in kw.items()})
        self.assertTrue(torch.equal(dev.loss.cpu(), host.loss))
        self.assertTrue(torch.equal(dev.metrics.cpu(), host.metrics))

    def test_fused_linear_loss_against_host(self):
        for dtype, tol in DTYPES.items():
            hidden, weight, b, targets, offsets, adv, old, ref = lm_head_batch(7, [5, 1, 9], 16, 257, dtype)
            host = [t.clone().requires_grad_() for t in (hidden, weight, b)]
            dev = [t.cuda().requires_grad_() for t in (hidden, weight, b)]
            outs = []
            for (h, w, bb), move in ((host, lambda t: t), (dev, lambda t: t.cuda())):
                out = gk.fused_linear_loss(h, w, move(targets), move(offsets), move(adv), bias=bb, token_chunk=4,
                                           logp_old=move(old), logp_ref=move(ref), kl="k3", kl_coef=0.05)
                out.loss.backward()
                outs.append(out)
            with self.subTest(dtype=dtype):
                self.assertAlmostEqual(outs[1].loss.item(), outs[0].loss.item(), delta=tol * (1 + abs(outs[0].loss.item())))
                for a, d in zip(host, dev):  # cuBLAS rounds differently from the host GEMM
                    self.assertEqual(d.grad.dtype, a.grad.dtype)
                    torch.testing.assert_close(d.grad.cpu().double(), a.grad.double(), rtol=tol,
                                               atol=tol * a.grad.abs().max().item())

    def test_compute_advantages_multi_against_host(self):
        g = torch.Generator().manual_seed(4)
        sizes = [1, 4, 3, 8, 300]
        offsets = torch.tensor([0] + torch.tensor(sizes).cumsum(0).tolist())
        for dtype in (torch.float32, torch.float64):
            rewards = torch.randint(0, 4, (sum(sizes), 3), generator=g).to(dtype)
            for baseline in ("mean", "leave_one_out", "median"):
                kw = dict(weights=[1.0, -0.5, 2.0], baseline=baseline, mask_zero_variance=True)
                host = gk.compute_advantages_multi(rewards, offsets, **kw)
                dev = gk.compute_advantages_multi(rewards.cuda(), offsets.cuda(), **kw)
                with self.subTest(dtype=dtype, baseline=baseline):
                    torch.testing.assert_close(dev.adv.cpu(), host.adv, rtol=1e-5, atol=1e-6)
                    self.assertTrue(torch.equal(dev.seq_mask.cpu(), host.seq_mask))

    def test_compute_advantages_against_host(self):
        g = torch.Generator().manual_seed(3)
        sizes = [1, 4, 3, 8, 600]
        offsets = torch.tensor([0] + torch.tensor(sizes).cumsum(0).tolist())
        for dtype in (torch.float32, torch.float64):
            rewards = torch.randint(0, 4, (sum(sizes),), generator=g).to(dtype)
            lengths = torch.randint(0, 50, (sum(sizes),), generator=g)
            for baseline, scale in (("mean", "group"), ("median", "group"), ("leave_one_out", "group"),
                                    ("opo", "whiten")):
                host = gk.compute_advantages(rewards, offsets, seq_tokens=lengths, baseline=baseline, scale=scale)
                dev = gk.compute_advantages(*cuda(rewards, offsets), seq_tokens=lengths.cuda(), baseline=baseline,
                                            scale=scale)
                with self.subTest(dtype=dtype, baseline=baseline):
                    torch.testing.assert_close(dev.adv.cpu(), host.adv, rtol=1e-6, atol=1e-6)
                    self.assertTrue(torch.equal(dev.seq_mask.cpu(), host.seq_mask))
                    self.assertEqual(gk.advantage_stats_dict(dev.stats.cpu())["groups"], len(sizes))

    def test_optimal_token_baseline_bitwise_the_host(self):
        g = torch.Generator().manual_seed(5)
        lengths = torch.randint(0, 40, (30,), generator=g)
        offsets = torch.tensor([0] + lengths.cumsum(0).tolist())
        group_offsets = torch.tensor([0, 1, 5, 9, 16, 30])
        T = int(offsets[-1])
        pi = torch.rand(T, generator=g, dtype=torch.float64) * 0.98 + 0.01
        args = (torch.randn(T, generator=g, dtype=torch.float64), offsets, group_offsets, pi.log(),
                pi ** 2 + 0.1 * torch.rand(T, generator=g, dtype=torch.float64))
        mask = (torch.rand(T, generator=g) > 0.2).to(torch.uint8)
        is_w = 2 * torch.rand(T, generator=g, dtype=torch.float64)
        for compact, dtype, weights, tail in ((False, torch.float64, None, True), (True, torch.float64, is_w, False),
                                              (False, torch.float32, is_w, True), (True, torch.float32, None, True)):
            kw = dict(token_mask=mask, compact=compact, zero_tail=tail,
                      is_weights=None if weights is None else weights.to(dtype))
            host = gk.optimal_token_baseline(args[0].to(dtype), *args[1:], **kw)
            dev = gk.optimal_token_baseline(*cuda(args[0].to(dtype), *args[1:]),
                                            **{k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in kw.items()})
            with self.subTest(compact=compact, dtype=dtype, is_weights=weights is not None, zero_tail=tail):
                self.assertTrue(torch.equal(dev.adv.cpu(), host.adv))
                self.assertTrue(torch.equal(dev.returns.cpu(), host.returns))
                self.assertTrue(torch.equal(dev.stats.cpu(), host.stats))


@unittest.skipUnless(HAVE_CUDA, f"CUDA operators not tested: {WHY}")
class DeviceErrors(unittest.TestCase):
    def tearDown(self):
        gk.set_sync_errors(True)

    def test_raised_from_the_status_or_nan(self):
        logits, targets, offsets, adv, *_ = cuda(*packed(2, [4, 3], 19, torch.float32))
        bad = targets.clone()
        bad[5] = 19
        with self.assertRaisesRegex(RuntimeError, r"targets\[5\] is out of range"):
            gk.fused_loss(logits, bad, offsets, adv)
        gk.set_sync_errors(False)
        out = gk.fused_loss(logits, bad, offsets, adv)
        self.assertTrue(torch.isnan(out.loss).item())
        self.assertTrue(torch.isnan(out.metrics).all().item())
        ok = gk.fused_loss(logits, targets, offsets, adv)  # a clean call after a bad one
        self.assertTrue(torch.isfinite(ok.loss).item())

    def test_tensors_on_another_device(self):
        logits, targets, offsets, adv, *_ = packed(2, [4, 3], 19, torch.float32)
        with self.assertRaisesRegex(RuntimeError, "targets is on cpu"):
            gk.fused_loss(logits.cuda(), targets, offsets.cuda(), adv.cuda())


@unittest.skipUnless(HAVE_CUDA, f"CUDA operators not tested: {WHY}")
class DeviceGraphsAndCompile(unittest.TestCase):
    def test_cuda_graph_replay(self):
        logits, targets, offsets, adv, old, _ = cuda(*packed(4, [6, 5], 300, torch.float32))
        eager = gk.fused_loss(logits, targets, offsets, adv, logp_old=old)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up outside the capture
            gk.fused_loss(logits, targets, offsets, adv, logp_old=old)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = gk.fused_loss(logits, targets, offsets, adv, logp_old=old)
        graph.replay()
        torch.cuda.synchronize()
        self.assertTrue(torch.equal(captured.loss, eager.loss))
        self.assertTrue(torch.equal(captured.metrics, eager.metrics))

    def test_compile_fullgraph(self):
        torch.manual_seed(0)
        head = torch.nn.Linear(8, 23).cuda()
        hidden = torch.randn(7, 8, device="cuda")
        _, targets, offsets, adv, old, _ = cuda(*packed(12, [3, 4], 23, torch.float32))

        def step(h):
            return gk.fused_linear_loss(h, head.weight, targets, offsets, adv, bias=head.bias, logp_old=old).loss

        eager = step(hidden)
        eager.backward()
        want = head.weight.grad.clone()
        head.weight.grad = None
        got = torch.compile(step, fullgraph=True)(hidden)
        got.backward()
        torch.testing.assert_close(got, eager)
        torch.testing.assert_close(head.weight.grad, want)


if __name__ == "__main__":
    unittest.main()
