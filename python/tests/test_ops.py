"""grpokit_torch against plain PyTorch references (float64), on the CPU: token_logprobs,
fused_loss (loss, metrics, autograd gradient), fused_linear_loss (loss, autograd gradients of the
hidden states, weight and bias), compute_advantages; torch.library.opcheck; torch.compile(fullgraph=True).
Run: python -m unittest discover -s python/tests"""
import math
import unittest

import torch

import grpokit_torch as gk

DTYPES = {torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float64: 1e-12}


def packed(seed, lengths, V, dtype, scale=2.0):
    """A packed batch: logits [T, V], targets, seq_offsets, advantages, old and reference log-probs."""
    g = torch.Generator().manual_seed(seed)
    T = sum(lengths)
    logits = (torch.randn(T, V, generator=g, dtype=torch.float64) * scale).to(dtype)
    targets = torch.randint(0, V, (T,), generator=g)
    offsets = torch.tensor([0] + list(torch.tensor(lengths).cumsum(0).tolist()), dtype=torch.int64)
    adv = torch.randn(len(lengths), generator=g, dtype=torch.float64)
    lp = torch.log_softmax(logits.double(), -1).gather(1, targets[:, None]).squeeze(1)
    old = lp + 0.3 * torch.randn(T, generator=g, dtype=torch.float64)
    ref = lp + 0.3 * torch.randn(T, generator=g, dtype=torch.float64)
    return logits, targets, offsets, adv, old, ref


def reference_rows(logits, targets, temperature=1.0):
    z = logits.double() / temperature
    lp = torch.log_softmax(z, -1)
    return lp.gather(1, targets[:, None]).squeeze(1), -(lp.exp() * lp).sum(-1), torch.logsumexp(z, -1)


def reference_loss(logits, targets, offsets, adv, old, ref, agg, eps_low=0.2, eps_high=0.2, dual_clip=3.0,
                   kl_coef=0.0, entropy_coef=0.0, token_adv=None):
    """verl's PPO clip (dual clip for A < 0), k3 KL to the reference, entropy bonus; float64.
    token_adv: verl's advantages [T] (else adv [S] on every token of its sequence)."""
    lp_all = torch.log_softmax(logits, -1)
    logp = lp_all.gather(1, targets[:, None]).squeeze(1)
    entropy = -(lp_all.exp() * lp_all).sum(-1)
    lengths = (offsets[1:] - offsets[:-1]).tolist()
    A = torch.repeat_interleave(adv, torch.tensor(lengths)) if token_adv is None else token_adv
    ratio = torch.exp(torch.clamp(logp - old, -20, 20))
    pg1, pg2 = -A * ratio, -A * torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    clipped = torch.maximum(pg1, pg2)
    pg = torch.where(A < 0, torch.minimum(clipped, -A * dual_clip), clipped)
    d = torch.clamp(ref - logp, -20, 20)
    kl = torch.clamp(torch.exp(d) - d - 1, -10, 10)
    per_token = pg + kl_coef * kl - entropy_coef * entropy

    def aggregate(x):
        if agg == "token_mean":
            return x.sum() / x.numel()
        seq = [x[a:b].mean() for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist()) if b > a]
        return torch.stack(seq).mean()
    return aggregate(per_token)


class TokenLogprobs(unittest.TestCase):
    def test_against_log_softmax(self):
        for dtype, tol in DTYPES.items():
            for T, V, temperature in [(1, 1, 1.0), (1, 7, 0.7), (13, 101, 1.0), (6, 4099, 1.3)]:
                logits, targets, *_ = packed(T * V, [T], V, dtype)
                out = gk.token_logprobs(logits, targets, temperature=temperature, sum_p2=True)
                z = torch.log_softmax(logits.double() / temperature, -1)
                want = reference_rows(logits, targets, temperature) + ((2 * z).exp().sum(-1),)
                self.assertEqual(len(gk.token_logprobs(logits, targets, temperature=temperature)), 3)
                for got, w, name in zip(out, want, ("logp", "entropy", "lse", "sum_p2")):
                    with self.subTest(dtype=dtype, T=T, V=V, out=name):
                        self.assertEqual(got.dtype, torch.float64 if dtype == torch.float64 else torch.float32)
                        torch.testing.assert_close(got.double(), w, rtol=tol, atol=tol)

    def test_per_token_temperature_and_bad_target(self):
        logits, targets, *_ = packed(3, [9], 31, torch.float32)
        temps = torch.linspace(0.5, 1.5, 9)
        out = gk.token_logprobs(logits, targets, token_temperature=temps)
        want = reference_rows(logits, targets, temps.double()[:, None])
        torch.testing.assert_close(out.logp.double(), want[0], rtol=2e-5, atol=2e-5)
        with self.assertRaisesRegex(RuntimeError, "target"):
            gk.token_logprobs(logits, torch.full((9,), 31))
        with self.assertRaisesRegex(TypeError, "unknown keyword"):
            gk.token_logprobs(logits, targets, temprature=1.0)


class FusedLoss(unittest.TestCase):
    def check(self, dtype, tol, lengths, V, agg, reduction):
        logits, targets, offsets, adv, old, ref = packed(len(lengths) * 7 + V, lengths, V, dtype)
        x = logits.clone().requires_grad_()
        out = gk.fused_loss(x, targets, offsets, adv, logp_old=old, logp_ref=ref, kl="k3", kl_coef=0.05,
                            entropy_coef=0.01, agg=agg, reduction=reduction)
        (2.5 * out.loss).backward()
        xr = logits.double().requires_grad_()
        want = reference_loss(xr, targets, offsets, adv, old, ref, agg, kl_coef=0.05, entropy_coef=0.01)
        (2.5 * want).backward()
        self.assertAlmostEqual(out.loss.item(), want.item(), delta=tol * (1 + abs(want.item())))
        torch.testing.assert_close(x.grad.double(), xr.grad, rtol=tol, atol=tol * xr.grad.abs().max().item())
        m = gk.metrics_dict(out.metrics)
        self.assertEqual(m["tokens"], sum(lengths))
        self.assertAlmostEqual(m["loss"], out.loss.item(), delta=tol * (1 + abs(want.item())))
        lp, ent, _ = reference_rows(logits, targets)
        torch.testing.assert_close(out.logp.double(), lp, rtol=tol, atol=tol)
        torch.testing.assert_close(out.entropy.double(), ent, rtol=tol, atol=tol)

    def test_loss_and_gradient_against_pytorch(self):
        for dtype, tol in DTYPES.items():
            for lengths, V in [([1], 2), ([3, 1, 5], 37), ([7, 2, 11, 4], 257)]:
                for agg in ("token_mean", "seq_mean_token_mean"):
                    for reduction in ("deterministic", "batch_invariant"):
                        with self.subTest(dtype=dtype, lengths=lengths, V=V, agg=agg, reduction=reduction):
                            self.check(dtype, max(tol, 1e-12), lengths, V, agg, reduction)

    def test_token_advantages_against_pytorch(self):
        logits, targets, offsets, adv, old, ref = packed(31, [4, 1, 6, 3], 41, torch.float64)
        token_adv = torch.randn(14, generator=torch.Generator().manual_seed(32), dtype=torch.float64)
        x = logits.clone().requires_grad_()
        out = gk.fused_loss(x, targets, offsets, adv, logp_old=old, token_adv=token_adv, agg="seq_mean_token_mean")
        out.loss.backward()
        xr = logits.clone().requires_grad_()
        want = reference_loss(xr, targets, offsets, adv, old, ref, "seq_mean_token_mean", token_adv=token_adv)
        want.backward()
        self.assertAlmostEqual(out.loss.item(), want.item(), delta=1e-12)
        torch.testing.assert_close(x.grad, xr.grad, rtol=1e-11, atol=1e-13)
        with self.assertRaisesRegex(RuntimeError, "token_adv"):
            gk.fused_loss(logits, targets, offsets, adv, token_adv=token_adv[:5])

    def test_top_k_top_p_against_vllm(self):
        logits, targets, offsets, adv, old, _ = packed(51, [5, 3, 6], 97, torch.float64)
        for k, p in ((0, 0.9), (10, 1.0), (20, 0.7), (1, 0.5)):
            z = logits / 0.8
            s, idx = z.sort(dim=-1)  # vLLM 0.10's _apply_top_k_top_p, ascending
            if k > 0:
                s = s.masked_fill(s < s.gather(1, torch.full((z.shape[0], 1), z.shape[1] - k)), -math.inf)
            if p < 1:
                drop = s.softmax(-1).cumsum(-1) <= 1 - p
                drop[:, -1] = False
                s = s.masked_fill(drop, -math.inf)
            masked = s.scatter(1, idx, s)
            lp = torch.log_softmax(masked, -1)
            want_logp = lp.gather(1, targets[:, None]).squeeze(1)
            probs = lp.exp()
            want_ent = -(probs * lp.masked_fill(probs == 0, 0)).sum(-1)
            with self.subTest(k=k, p=p):
                out = gk.token_logprobs(logits, targets, temperature=0.8, top_k=k, top_p=p)
                torch.testing.assert_close(out.logp, want_logp, rtol=1e-12, atol=1e-12)
                torch.testing.assert_close(out.entropy, want_ent, rtol=1e-12, atol=1e-12)
                x = logits.clone().requires_grad_()
                loss = gk.fused_loss(x, targets, offsets, adv, logp_old=old, temperature=0.8, top_k=k, top_p=p)
                m = gk.metrics_dict(loss.metrics)
                self.assertEqual(m["masked_tokens_vocab_prune"], int((want_logp == -math.inf).sum()))

    def test_batch_invariant_is_bitwise_across_batches(self):
        logits, targets, offsets, adv, old, ref = packed(5, [4, 6, 3], 64, torch.float32)
        a = gk.fused_loss(logits, targets, offsets, adv, logp_old=old, reduction="batch_invariant")
        b = gk.fused_loss(logits[:4], targets[:4], offsets[:2], adv[:1], logp_old=old[:4], reduction="batch_invariant")
        self.assertTrue(torch.equal(a.logp[:4], b.logp))

    def test_masks_and_errors(self):
        logits, targets, offsets, adv, old, ref = packed(9, [5, 4], 50, torch.float32)
        token_mask = torch.tensor([1, 1, 0, 1, 1, 1, 0, 0, 1], dtype=torch.bool)
        out = gk.fused_loss(logits, targets, offsets, adv, logp_old=old, token_mask=token_mask)
        self.assertEqual(gk.metrics_dict(out.metrics)["masked_tokens_padding"], 3)
        pruned = gk.fused_loss(logits, targets, offsets, adv, mask="vocab_prune", prune_rho=0.5)
        self.assertGreater(gk.metrics_dict(pruned.metrics)["masked_tokens_vocab_prune"], 0)
        with self.assertRaisesRegex(RuntimeError, "logp_ref"):
            gk.fused_loss(logits, targets, offsets, adv, kl="k3")
        with self.assertRaisesRegex(ValueError, "agg must be one of"):
            gk.fused_loss(logits, targets, offsets, adv, agg="token_average")
        with self.assertRaisesRegex(RuntimeError, "reduction"):
            gk.fused_loss(logits, targets, offsets, adv, reduction="fastest")
        bad = logits.clone()
        bad[2, 3] = float("nan")
        with self.assertRaisesRegex(RuntimeError, "row 2 contains NaN"):
            gk.fused_loss(bad, targets, offsets, adv)

    def test_gmpo_dppo_and_mismatch_metrics_against_pytorch(self):
        """GMPO as verl's geo_mean (mean over sequences of -A_i exp(mean_t of the sign-aware clipped
        log-ratio)) under seq_mean_token_mean, with its autograd gradient; the DPPO-TV mask's count;
        verl's chi^2 and perplexity-ratio mismatch metrics."""
        logits, targets, offsets, adv, old, rollout = packed(3, [4, 6, 3, 5], 40, torch.float64)
        bounds = list(zip(offsets[:-1].tolist(), offsets[1:].tolist()))
        x = logits.clone().requires_grad_()
        out = gk.fused_loss(x, targets, offsets, adv, logp_old=old, obj="gmpo", eps_low=0.1, eps_high=0.15,
                            agg="seq_mean_token_mean")
        out.loss.backward()
        xr = logits.clone().requires_grad_()
        logp = torch.log_softmax(xr, -1).gather(1, targets[:, None]).squeeze(1)
        A = torch.repeat_interleave(adv, torch.tensor([b - a for a, b in bounds]))
        d, sgn = logp - old, torch.sign(A)
        clipped = sgn * torch.minimum(sgn * d, sgn * torch.clamp(d, -0.1, 0.15))
        want = torch.stack([-adv[i] * torch.exp(clipped[a:b].mean()) for i, (a, b) in enumerate(bounds)]).mean()
        want.backward()
        self.assertAlmostEqual(out.loss.item(), want.item(), delta=1e-12)
        torch.testing.assert_close(x.grad, xr.grad, rtol=1e-10, atol=1e-12)

        out = gk.fused_loss(logits, targets, offsets, adv, logp_old=old, logp_rollout=rollout, dppo="tv",
                            dppo_low=0.002, dppo_high=0.003)
        m = gk.metrics_dict(out.metrics)
        dp = logp.detach().exp() - old.exp()
        dropped = torch.where(A > 0, dp > 0.003, dp < -0.002)
        self.assertGreater(dropped.sum().item(), 0)
        self.assertEqual(m["masked_tokens_dppo"], dropped.sum().item())
        keep = ~dropped  # the mismatch metrics are over the tokens the token-level masks keep
        lam = (old - rollout).clamp(-20, 20)
        self.assertAlmostEqual(m["mismatch_chi2_token"], (lam[keep].exp() ** 2).mean().item() - 1, delta=1e-12)
        seq_sum = [lam[a:b][keep[a:b]].sum() for a, b in bounds if keep[a:b].any()]
        seq_mean = [lam[a:b][keep[a:b]].mean() for a, b in bounds if keep[a:b].any()]
        self.assertAlmostEqual(m["mismatch_chi2_seq"],
                               torch.stack([(2 * v).exp() for v in seq_sum]).mean().item() - 1, delta=1e-12)
        self.assertAlmostEqual(m["mismatch_ppl_ratio"], torch.stack([(-v).exp() for v in seq_mean]).mean().item(),
                               delta=1e-12)

    def test_is_batch_normalize_and_positive_nll_against_verl_and_nemo_rl(self):
        """verl's rollout_is_batch_normalize (token level: the truncated weights over their mean on the
        response tokens) with REINFORCE, plus NeMo-RL's VAPO term (mu times the mean -logp over the
        tokens of the correct rollouts), loss and autograd gradient."""
        logits, targets, offsets, adv, old, rollout = packed(4, [4, 6, 3, 5], 40, torch.float64)
        lengths = (offsets[1:] - offsets[:-1])
        positive = torch.tensor([1, 0, 1, 0], dtype=torch.uint8)
        x = logits.clone().requires_grad_()
        out = gk.fused_loss(x, targets, offsets, adv, logp_old=old, logp_rollout=rollout, positive=positive,
                            obj="reinforce", is_correction="token_truncate", is_max=1.02, is_batch_normalize=True,
                            positive_nll_coef=0.3)
        out.loss.backward()
        xr = logits.clone().requires_grad_()
        logp = torch.log_softmax(xr, -1).gather(1, targets[:, None]).squeeze(1)
        A = torch.repeat_interleave(adv, lengths)
        w = torch.exp((old - rollout).clamp(-20, 20)).clamp(max=1.02)
        self.assertLess(w.mean().item(), 0.99)  # the normalisation bites
        w = w / w.mean()
        correct = torch.repeat_interleave(positive.bool(), lengths)
        want = (w * -A * logp).mean() + 0.3 * (-logp[correct]).mean()
        want.backward()
        m = gk.metrics_dict(out.metrics)
        self.assertAlmostEqual(out.loss.item(), want.item(), delta=1e-12)
        self.assertAlmostEqual(m["loss_nll"], 0.3 * (-logp[correct]).mean().item(), delta=1e-12)
        self.assertAlmostEqual(m["is_weight_mean"], 1.0, delta=1e-12)
        torch.testing.assert_close(x.grad, xr.grad, rtol=1e-10, atol=1e-12)
        with self.assertRaisesRegex(RuntimeError, "positive_nll_coef != 0 needs batch.positive"):
            gk.fused_loss(logits, targets, offsets, adv, positive_nll_coef=0.3)

    def test_top_entropy_quantile_against_trl(self):
        """TRL's get_high_entropy_mask: tau = torch.quantile(entropies of the completion tokens,
        1 - top_entropy_quantile), the mask H >= tau multiplies the clipped PPO term; the KL term (k3,
        beta) stays on every token; the denominator is every completion token (TRL's bnpo / dapo)."""
        logits, targets, offsets, adv, old, ref = packed(6, [5, 1, 7, 4, 6], 33, torch.float64)
        lengths = offsets[1:] - offsets[:-1]
        token_mask = torch.ones(targets.numel(), dtype=torch.uint8)
        token_mask[[2, 9, 10]] = 0  # padding: no candidate of the quantile
        for rho in (0.2, 0.5, 0.0):
            x = logits.clone().requires_grad_()
            out = gk.fused_loss(x, targets, offsets, adv, logp_old=old, logp_ref=ref, token_mask=token_mask,
                                dual_clip=0.0, kl="k3", kl_coef=0.04, top_entropy_quantile=rho)
            out.loss.backward()
            xr = logits.clone().requires_grad_()
            logp_all = torch.log_softmax(xr, -1)
            logp = logp_all.gather(1, targets[:, None]).squeeze(1)
            with torch.no_grad():
                entropy = -(logp_all.exp() * logp_all).sum(-1)
            m = token_mask.bool()
            tau = torch.quantile(entropy[m], 1 - rho)
            high = (entropy >= tau) & m
            A = torch.repeat_interleave(adv, lengths)
            r = torch.exp(logp - old)
            pg = -torch.min(r * A, r.clamp(0.8, 1.2) * A) * high
            k3 = torch.exp(ref - logp) - (ref - logp) - 1
            want = ((pg + 0.04 * k3) * m).sum() / m.sum()
            want.backward()
            got = gk.metrics_dict(out.metrics)
            self.assertAlmostEqual(got["entropy_threshold"], tau.item(), delta=1e-12)
            self.assertEqual(got["masked_tokens_entropy"], (m & ~high).sum().item())
            self.assertGreater(got["masked_tokens_entropy"], 0)
            self.assertAlmostEqual(out.loss.item(), want.item(), delta=1e-12)
            torch.testing.assert_close(x.grad, xr.grad, rtol=1e-10, atol=1e-12)

    def test_m2po_against_areal(self):
        """AReaL's _get_m2po_loss_mask: the response tokens' (logp_rollout - logp_old)^2 sorted in
        descending order, the tokens before the first suffix whose mean is below m2_threshold masked
        (one kept when none is); here with the clipped PPO term, the denominator every response token."""
        logits, targets, offsets, adv, old, rollout = packed(9, [6, 2, 7, 5], 31, torch.float64)
        lengths = offsets[1:] - offsets[:-1]
        token_mask = torch.ones(targets.numel(), dtype=torch.uint8)
        token_mask[[3, 11]] = 0  # padding: no candidate
        m = token_mask.bool()
        second = (rollout - old) ** 2
        for tau in (0.1, 0.03, 0.0):
            x = logits.clone().requires_grad_()
            out = gk.fused_loss(x, targets, offsets, adv, logp_old=old, logp_rollout=rollout, token_mask=token_mask,
                                dual_clip=0.0, m2po_threshold=tau)
            out.loss.backward()
            values, order = torch.sort(second[m], descending=True)
            suffix_mean = values.flip(0).cumsum(0).flip(0) / torch.arange(values.numel(), 0, -1)
            below = torch.nonzero(suffix_mean < tau)
            n_masked = below[0].item() if below.numel() > 0 else values.numel() - 1
            keep_sorted = torch.ones_like(values, dtype=torch.bool)
            keep_sorted[:n_masked] = False
            keep = torch.zeros_like(m)
            keep[torch.nonzero(m).squeeze(1)[order]] = keep_sorted
            xr = logits.clone().requires_grad_()
            logp = torch.log_softmax(xr, -1).gather(1, targets[:, None]).squeeze(1)
            A = torch.repeat_interleave(adv, lengths)
            r = torch.exp(logp - old)
            pg = -torch.min(r * A, r.clamp(0.8, 1.2) * A)
            want = (pg * keep).sum() / m.sum()
            want.backward()
            got = gk.metrics_dict(out.metrics)
            self.assertGreater(n_masked, 0)
            self.assertEqual(got["masked_tokens_m2po"], n_masked)
            self.assertAlmostEqual(out.loss.item(), want.item(), delta=1e-12)
            torch.testing.assert_close(x.grad, xr.grad, rtol=1e-10, atol=1e-12)
        with self.assertRaisesRegex(RuntimeError, "m2po_threshold < \\+inf needs logp_rollout"):
            gk.fused_loss(logits, targets, offsets, adv, logp_old=old, m2po_threshold=0.1)

    def test_kl_cov_against_verl(self):
        """verl's compute_policy_loss_kl_cov: -A r on every response token, plus ppo_kl_coef |logp -
        logp_old| on the top max(1, int(N kl_cov_ratio)) tokens by (A - mean A)(logp - mean logp)
        over the N response tokens (torch.topk), token-mean; loss and autograd gradient."""
        logits, targets, offsets, adv, old, _ = packed(8, [6, 3, 8, 5], 29, torch.float64)
        lengths = offsets[1:] - offsets[:-1]
        token_mask = torch.ones(targets.numel(), dtype=torch.uint8)
        token_mask[[4, 12]] = 0
        for ratio in (0.3, 0.01):
            x = logits.clone().requires_grad_()
            out = gk.fused_loss(x, targets, offsets, adv, logp_old=old, token_mask=token_mask, obj="kl_cov",
                                kl_cov_ratio=ratio, ppo_kl_coef=0.2)
            out.loss.backward()
            xr = logits.clone().requires_grad_()
            logp = torch.log_softmax(xr, -1).gather(1, targets[:, None]).squeeze(1)
            A = torch.repeat_interleave(adv, lengths)
            d = logp - old
            pg = -A * torch.exp(d)
            valid = torch.nonzero(token_mask.bool()).squeeze(1)
            va, vl = A[valid], logp.detach()[valid]
            cov = (va - va.mean()) * (vl - vl.mean())
            top = valid[torch.topk(cov, max(1, int(len(cov) * ratio))).indices]
            pg = pg.clone()
            pg[top] = pg[top] + 0.2 * d[top].abs()
            want = pg[valid].mean()
            want.backward()
            got = gk.metrics_dict(out.metrics)
            self.assertEqual(got["cov_tokens"], len(top))
            self.assertAlmostEqual(out.loss.item(), want.item(), delta=1e-12)
            torch.testing.assert_close(x.grad, xr.grad, rtol=1e-10, atol=1e-12)

    def test_clip_cov_against_verl(self):
        """verl's compute_policy_loss_clip_cov: the plain PPO clip; of the response tokens with
        lb < (A - mean A)(logp - mean logp) < ub and -A clip(r) <= -A r, a random max(1, int(N ratio))
        have corr = 0. The subset (read from the gradient rows that vanish) has that size, lies in the
        candidates, changes with the seed, and the loss and gradient are verl's with that corr."""
        logits, targets, offsets, adv, old, _ = packed(9, [7, 4, 9, 6], 31, torch.float64)
        lengths = offsets[1:] - offsets[:-1]
        A = torch.repeat_interleave(adv, lengths)
        subsets = []
        for seed in (1, 2):
            x = logits.clone().requires_grad_()
            out = gk.fused_loss(x, targets, offsets, adv, logp_old=old, obj="clip_cov", clip_cov_ratio=0.2,
                                clip_cov_lb=-0.6, clip_cov_ub=0.6, clip_cov_seed=seed)
            out.loss.backward()
            vanished = (x.grad == 0).all(dim=1)  # the subset, and the tokens the clip holds
            xr = logits.clone().requires_grad_()
            logp = torch.log_softmax(xr, -1).gather(1, targets[:, None]).squeeze(1)
            r = torch.exp(logp - old)
            pg1, pg2 = -A * r, -A * r.clamp(0.8, 1.2)
            cov = (A - A.mean()) * (logp - logp.detach().mean())
            cand = (cov > -0.6) & (cov < 0.6) & ~(pg2 > pg1)
            want_n = min(max(1, int(0.2 * A.numel())), int(cand.sum()))
            chosen = vanished & cand  # a candidate keeps a gradient unless it is chosen
            self.assertEqual(int(chosen.sum()), want_n)
            self.assertEqual(int((vanished & ~cand & ~(pg2 > pg1)).sum()), 0)  # no other token chosen
            corr = (~chosen).double()
            want = (torch.maximum(pg1, pg2) * corr).mean()
            want.backward()
            self.assertEqual(gk.metrics_dict(out.metrics)["cov_tokens"], want_n)
            self.assertAlmostEqual(out.loss.item(), want.item(), delta=1e-12)
            torch.testing.assert_close(x.grad, xr.grad, rtol=1e-10, atol=1e-12)
            subsets.append(chosen)
        self.assertFalse(torch.equal(subsets[0], subsets[1]))  # the seed draws the subset

    def test_defaults_are_the_cpp_defaults(self):
        d = gk.loss_config_defaults
        self.assertEqual((d["obj"], d["eps_low"], d["agg"], d["kl"], d["check_finite"]),
                         ("ppo_clip", 0.2, "token_mean", "none", True))
        self.assertTrue(math.isinf(d["trm_max_threshold"]))


def lm_head_batch(seed, lengths, D, V, dtype, bias=True):
    """hidden [T, D], weight [V, D], bias [V] (or None) in dtype, and a packed batch over their logits."""
    g = torch.Generator().manual_seed(seed)
    T = sum(lengths)
    hidden = torch.randn(T, D, generator=g, dtype=torch.float64).to(dtype)
    weight = (torch.randn(V, D, generator=g, dtype=torch.float64) / math.sqrt(D) * 2).to(dtype)
    b = (0.5 * torch.randn(V, generator=g, dtype=torch.float64)).to(dtype) if bias else None
    logits = hidden.double() @ weight.double().T + (b.double() if bias else 0)
    _, targets, offsets, adv, old, ref = packed(seed, lengths, V, torch.float64)
    lp = torch.log_softmax(logits, -1).gather(1, targets[:, None]).squeeze(1)
    g2 = torch.Generator().manual_seed(seed + 1)
    old = lp + 0.3 * torch.randn(T, generator=g2, dtype=torch.float64)
    ref = lp + 0.3 * torch.randn(T, generator=g2, dtype=torch.float64)
    return hidden, weight, b, targets, offsets, adv, old, ref


class FusedLinearLoss(unittest.TestCase):
    def check(self, dtype, tol, lengths, D, V, chunk, bias, agg):
        hidden, weight, b, targets, offsets, adv, old, ref = lm_head_batch(len(lengths) + D + V, lengths, D, V, dtype,
                                                                           bias)
        leaves = [t.clone().requires_grad_() for t in (hidden, weight) + ((b,) if bias else ())]
        out = gk.fused_linear_loss(leaves[0], leaves[1], targets, offsets, adv, bias=leaves[2] if bias else None,
                                   token_chunk=chunk, logp_old=old, logp_ref=ref, kl="k3", kl_coef=0.05,
                                   entropy_coef=0.01, agg=agg)
        (1.5 * out.loss).backward()
        refs = [t.double().requires_grad_() for t in (hidden, weight) + ((b,) if bias else ())]
        logits = refs[0] @ refs[1].T + (refs[2] if bias else 0)
        want = reference_loss(logits, targets, offsets, adv, old, ref, agg, kl_coef=0.05, entropy_coef=0.01)
        (1.5 * want).backward()
        self.assertAlmostEqual(out.loss.item(), want.item(), delta=tol * (1 + abs(want.item())))
        for got, w, name in zip(leaves, refs, ("hidden", "weight", "bias")):
            with self.subTest(grad=name):
                self.assertEqual(got.grad.dtype, dtype)
                torch.testing.assert_close(got.grad.double(), w.grad, rtol=tol, atol=tol * w.grad.abs().max().item())
        lp, ent, _ = reference_rows(logits.detach(), targets)
        torch.testing.assert_close(out.logp.double(), lp, rtol=tol, atol=tol)
        torch.testing.assert_close(out.entropy.double(), ent, rtol=tol, atol=tol)
        self.assertEqual(gk.metrics_dict(out.metrics)["tokens"], sum(lengths))

    def test_loss_and_gradients_against_pytorch(self):
        # token chunks of 1, not dividing T, and larger than T; V prime; with and without a bias
        for dtype, tol in DTYPES.items():
            for lengths, D, V, chunk, bias in [([1], 1, 2, 1, True), ([3, 1, 5], 8, 37, 4, False),
                                               ([7, 2, 11, 4], 16, 257, 5, True), ([2, 3], 5, 11, 64, True)]:
                for agg in ("token_mean", "seq_mean_token_mean"):
                    with self.subTest(dtype=dtype, lengths=lengths, D=D, V=V, chunk=chunk, bias=bias, agg=agg):
                        self.check(dtype, max(tol, 1e-12), lengths, D, V, chunk, bias, agg)

    def test_same_as_fused_loss_on_the_logits(self):
        # float64 rows: the chunked loss is fused_loss's on hidden @ weight.T + bias
        hidden, weight, b, targets, offsets, adv, old, _ = lm_head_batch(4, [5, 8], 6, 31, torch.float64)
        a = gk.fused_linear_loss(hidden, weight, targets, offsets, adv, bias=b, token_chunk=3, logp_old=old)
        f = gk.fused_loss(hidden @ weight.T + b, targets, offsets, adv, logp_old=old)
        torch.testing.assert_close(a.loss, f.loss, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(a.metrics, f.metrics, rtol=1e-12, atol=1e-12)

    def test_errors(self):
        hidden, weight, b, targets, offsets, adv, *_ = lm_head_batch(2, [3, 2], 4, 9, torch.float32)
        with self.assertRaisesRegex(RuntimeError, "weight must be \\[V, D\\]"):
            gk.fused_linear_loss(hidden, weight[:, :3], targets, offsets, adv)
        with self.assertRaisesRegex(RuntimeError, "weight must have hidden's dtype"):
            gk.fused_linear_loss(hidden, weight.double(), targets, offsets, adv)
        with self.assertRaisesRegex(RuntimeError, "bias must be \\[V\\]"):
            gk.fused_linear_loss(hidden, weight, targets, offsets, adv, bias=b[:4])
        with self.assertRaisesRegex(RuntimeError, "token_chunk"):
            gk.fused_linear_loss(hidden, weight, targets, offsets, adv, token_chunk=0)
        with self.assertRaisesRegex(RuntimeError, "target"):
            gk.fused_linear_loss(hidden, weight, torch.full((5,), 9), offsets, adv)


class ComputeAdvantages(unittest.TestCase):
    def test_mean_baseline_against_reference(self):
        g = torch.Generator().manual_seed(1)
        sizes = [1, 4, 3, 8]
        for dtype, tol in ((torch.float32, 1e-6), (torch.float64, 1e-12)):
            rewards = torch.randint(0, 3, (sum(sizes),), generator=g).to(dtype)
            offsets = torch.tensor([0] + torch.tensor(sizes).cumsum(0).tolist())
            out = gk.compute_advantages(rewards, offsets, eps=1e-6)
            want = []
            for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist()):
                r = rewards[a:b].double()
                std = r.std() if b - a > 1 else torch.tensor(0.0, dtype=torch.float64)
                want.append((r - r.mean()) / (std + 1e-6))
            torch.testing.assert_close(out.adv.double(), torch.cat(want), rtol=tol, atol=tol)
            self.assertEqual(gk.advantage_stats_dict(out.stats)["groups"], len(sizes))
            self.assertEqual(out.seq_mask.dtype, torch.uint8)

    def test_gpg_scale_and_clip(self):
        # GPG: (r - group mean) * S / #(r != 0); then clamp(A, clip_low, clip_high); singletons 0
        g = torch.Generator().manual_seed(2)
        sizes = [3, 1, 5, 4]
        rewards = torch.randint(0, 3, (sum(sizes),), generator=g).double()
        offsets = torch.tensor([0] + torch.tensor(sizes).cumsum(0).tolist())
        out = gk.compute_advantages(rewards, offsets, scale="gpg", clip_low=-0.9, clip_high=1.1)
        alpha = rewards.numel() / max(int((rewards != 0).sum()), 1)
        want = torch.cat([(rewards[a:b] - rewards[a:b].mean()) * alpha if b - a > 1 else torch.zeros(1).double()
                          for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]).clamp(-0.9, 1.1)
        torch.testing.assert_close(out.adv, want, rtol=1e-12, atol=1e-12)
        self.assertTrue(bool((out.adv == 1.1).any() or (out.adv == -0.9).any()))  # the clip binds
        with self.assertRaisesRegex(RuntimeError, "clip_low must be <= 0"):
            gk.compute_advantages(rewards, offsets, clip_low=0.5)

    def test_pass_at_k(self):
        # only the best rollout gets (r_max - r_second) / (std + eps); equal maxima: 0 throughout
        rewards = torch.tensor([0.0, 2.0, 1.0, 2.0, 0.5, 3.0, 1.0], dtype=torch.float64)
        out = gk.compute_advantages(rewards, torch.tensor([0, 4, 7]), baseline="pass_at_k")
        second = rewards[4:7]
        want = [0.0] * 5 + [(3.0 - 1.0) / (second.std().item() + 1e-6), 0.0]  # group 0: the top two tie
        torch.testing.assert_close(out.adv, torch.tensor(want, dtype=torch.float64), rtol=1e-12, atol=1e-12)

    def test_opo_and_whiten_against_verl(self):
        """OPO's length-weighted baseline (verl compute_opo_outcome_advantage) and REINFORCE++-baseline's
        whitening of r - group mean tiled over each response (verl masked_whiten; grpokit's sigma + eps)."""
        rewards = torch.tensor([1.0, 0.0, 0.5, 2.0, 2.0, 0.0, 1.0], dtype=torch.float64)
        offsets, groups = torch.tensor([0, 3, 7]), ((0, 3), (3, 7))
        lengths = torch.tensor([5, 2, 9, 1, 4, 4, 7])
        out = gk.compute_advantages(rewards, offsets, seq_tokens=lengths, baseline="opo", scale="none")
        want = [rewards[a:b] - (lengths[a:b] * rewards[a:b]).sum() / lengths[a:b].sum() for a, b in groups]
        torch.testing.assert_close(out.adv, torch.cat(want), rtol=1e-12, atol=1e-12)
        out = gk.compute_advantages(rewards, offsets, seq_tokens=lengths, scale="whiten", eps=0.0)
        centred = torch.cat([rewards[a:b] - rewards[a:b].mean() for a, b in groups])
        tiled = torch.repeat_interleave(centred, lengths)
        torch.testing.assert_close(out.adv, (centred - tiled.mean()) / tiled.std(), rtol=1e-12, atol=1e-12)
        with self.assertRaisesRegex(RuntimeError, "seq_tokens: the opo baseline needs"):
            gk.compute_advantages(rewards, offsets, baseline="opo")

    def test_multi_reward_against_nemo_rl(self):
        """GDPO as NeMo-RL's "gdpo" computes it (leave-one-out baseline and std per prompt and reward,
        divided where the std > 0, the weighted sum, then (A - mean) / std over the batch): with eps = 0
        the same numbers; the seq_mask keeps every rollout."""
        g = torch.Generator().manual_seed(3)
        sizes = [4, 3, 5, 2]
        offsets = torch.tensor([0] + torch.tensor(sizes).cumsum(0).tolist())
        rewards = torch.randint(0, 3, (sum(sizes), 2), generator=g).double() * 0.5
        weights = [1.0, 0.5]
        out = gk.compute_advantages_multi(rewards, offsets, weights=weights, baseline="leave_one_out", eps=0.0)
        total = torch.zeros(sum(sizes), dtype=torch.float64)
        for k, w in enumerate(weights):
            r = rewards[:, k]
            a = torch.empty_like(r)
            for lo, hi in zip(offsets[:-1].tolist(), offsets[1:].tolist()):
                x, n = r[lo:hi], hi - lo
                base = (x.sum() - x) / (n - 1)  # the mean of the others
                var = ((x * x).mean() - x.mean() ** 2) * n / (n - 1)  # NeMo-RL's leave-one-out std (Bessel)
                std = var.clamp(min=0).sqrt()
                a[lo:hi] = (x - base) / std if std > 0 else x - base
            total += w * a
        want = (total - total.mean()) / total.std()
        torch.testing.assert_close(out.adv, want, rtol=1e-12, atol=1e-12)
        self.assertTrue(bool(out.seq_mask.all()))
        with self.assertRaisesRegex(RuntimeError, "needs per-rollout log-ratios or per-group baselines"):
            gk.compute_advantages_multi(rewards, offsets, baseline="external")
        with self.assertRaisesRegex(RuntimeError, "weights: needs 2 weights"):
            gk.compute_advantages_multi(rewards, offsets, weights=[1.0])

    def test_median_and_errors(self):
        rewards = torch.tensor([0.0, 1.0, 3.0, 5.0, 2.0], dtype=torch.float64)
        out = gk.compute_advantages(rewards, torch.tensor([0, 5]), baseline="median", scale="none")
        self.assertEqual(out.adv.tolist(), [-2.0, -1.0, 1.0, 3.0, 0.0])  # r - median, unscaled
        with self.assertRaisesRegex(RuntimeError, "baseline"):
            gk.compute_advantages(rewards, torch.tensor([0, 5]), baseline="mode")
        with self.assertRaisesRegex(RuntimeError, "offsets"):
            gk.compute_advantages(rewards, torch.tensor([0, 4]))


def verl_optimal_token_baseline(rewards, mask, index, old_log_probs, sum_pi_squared, is_weights, tir):
    """verl's compute_optimal_token_baseline_advantage (tir: its multi-turn variant), rewritten from
    verl/trainer/ppo/core_algos.py on padded [bs, L] tensors, handle_zero_tail on, epsilon 1e-8."""
    returns = (rewards * mask).flip(-1).cumsum(-1).flip(-1)
    w = 1 - 2 * torch.exp(old_log_probs) + sum_pi_squared
    if is_weights is not None:
        w = w * is_weights ** 2
    W = (w * mask).cumsum(-1)
    lengths = mask.sum(-1).long()
    if tir:  # the response tokens of each row, packed to the left
        L = int(lengths.max())
        W_rows, R_rows = W.new_zeros(len(lengths), L), W.new_zeros(len(lengths), L)
        for i, n in enumerate(lengths.tolist()):
            W_rows[i, :n], R_rows[i, :n] = W[i, mask[i].bool()], returns[i, mask[i].bool()]
        mask_rows = (torch.arange(L)[None, :] < lengths[:, None]).double()
    else:
        W_rows, R_rows, mask_rows = W, returns, mask
    base = torch.zeros_like(R_rows)
    groups = {}
    for i, g in enumerate(index):
        if not tir or lengths[i] > 0:
            groups.setdefault(g, []).append(i)
    for members in groups.values():
        if len(members) == 1:
            continue
        idx = torch.tensor(members)
        num = (R_rows[idx] * W_rows[idx] * mask_rows[idx]).sum(0)
        den = (W_rows[idx] * mask_rows[idx]).sum(0) + 1e-8
        base[idx] = (num / den)[None, :]
        lens = lengths[idx]
        ordered = torch.sort(lens).values
        longest = (lens == ordered[-1]).nonzero()[:, 0]
        if longest.numel() == 1 and ordered[-1] > ordered[-2]:
            base[members[int(longest[0])], int(ordered[-2]):] = 0
    adv_rows = R_rows - base
    if not tir:
        return adv_rows * mask, returns
    adv = torch.zeros_like(returns)
    for i, n in enumerate(lengths.tolist()):
        adv[i, mask[i].bool()] = adv_rows[i, :n]
    return adv * mask, returns


class OptimalTokenBaseline(unittest.TestCase):
    def test_against_verl(self):
        g = torch.Generator().manual_seed(41)
        bs, L = 11, 9
        index = [0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 4]
        lengths = torch.randint(0, L + 1, (bs,), generator=g)
        lengths[3] = lengths[4]  # a group whose two responses are equally long: no zero tail
        mask = (torch.arange(L)[None, :] < lengths[:, None]).double()
        holes = (torch.rand(bs, L, generator=g) < 0.2).double()
        holes[:, 0] = 0  # a response starts with a response token, as verl's rows do
        mask = mask * (1 - holes)
        rewards = torch.zeros(bs, L, dtype=torch.float64)
        rewards[torch.arange(bs), (lengths - 1).clamp(min=0)] = torch.randint(0, 3, (bs,), generator=g).double()
        rewards += 0.05 * torch.randn(bs, L, generator=g, dtype=torch.float64)
        pi = torch.rand(bs, L, generator=g, dtype=torch.float64) * 0.98 + 0.01
        sum_p2 = pi ** 2 + torch.rand(bs, L, generator=g, dtype=torch.float64) * (1 - pi) ** 2
        is_w = 2 * torch.rand(bs, L, generator=g, dtype=torch.float64)
        # packed: every row is a sequence of L tokens (the padding masked)
        offsets = torch.arange(0, bs * L + 1, L)
        group_offsets = torch.tensor([0, 3, 5, 6, 10, 11])
        for tir in (False, True):
            for weights in (None, is_w):
                with self.subTest(tir=tir, is_weights=weights is not None):
                    want, want_ret = verl_optimal_token_baseline(rewards, mask, index, pi.log(), sum_p2, weights, tir)
                    out = gk.optimal_token_baseline(
                        rewards.flatten(), offsets, group_offsets, pi.log().flatten(), sum_p2.flatten(),
                        is_weights=None if weights is None else weights.flatten(), token_mask=mask.flatten(),
                        compact=tir)
                    torch.testing.assert_close(out.adv, want.flatten(), rtol=1e-12, atol=1e-12)
                    torch.testing.assert_close(out.returns, want_ret.flatten(), rtol=1e-12, atol=1e-12)
                    st = gk.token_baseline_stats_dict(out.stats)
                    self.assertEqual(st["groups"], 5)
                    self.assertEqual(st["response_tokens"], int(mask.sum()))
        with self.assertRaisesRegex(RuntimeError, "group_offsets"):
            gk.optimal_token_baseline(rewards.flatten(), offsets, torch.tensor([0, 3, 3, 11]), pi.log().flatten(),
                                      sum_p2.flatten())


class Compile(unittest.TestCase):
    def test_opcheck(self):
        logits, targets, offsets, adv, old, ref = packed(11, [3, 4], 29, torch.float32)
        x = logits.clone().requires_grad_()
        cfg = gk._config(gk._LOSS_FIELDS, {}, "opcheck")
        torch.library.opcheck(torch.ops.grpokit.token_logprobs.default,
                              (logits, targets, None, False, cfg, "deterministic", "padding"))
        torch.library.opcheck(torch.ops.grpokit.token_logprobs.default,
                              (logits, targets, None, True, cfg, "deterministic", "padding"))
        vapo = gk._config(gk._LOSS_FIELDS, {"positive_nll_coef": 0.1}, "opcheck")
        positive = torch.tensor([1, 0], dtype=torch.uint8)
        torch.library.opcheck(torch.ops.grpokit.fused_loss.default,
                              (x, targets, offsets, adv, old, None, None, None, None, positive, None, None, vapo,
                               "deterministic", "padding"))
        torch.library.opcheck(torch.ops.grpokit.fused_loss.default,
                              (x, targets, offsets, adv, old, None, None, None, None, None, torch.randn(7), None, cfg,
                               "deterministic", "padding"))
        hidden, weight, b, targets, offsets, adv, old, _ = lm_head_batch(3, [2, 3], 4, 13, torch.float32)
        torch.library.opcheck(torch.ops.grpokit.fused_linear_loss.default,
                              (hidden.requires_grad_(), weight.requires_grad_(), b.requires_grad_(), targets, offsets,
                               adv, old, None, None, None, None, None, None, None, 2, cfg, "deterministic", "padding"))
        acfg = gk._config(gk._ADV_FIELDS, {}, "opcheck")
        torch.library.opcheck(torch.ops.grpokit.compute_advantages_multi.default,
                              (torch.tensor([[1.0, 0.0], [0.0, 0.5], [2.0, 1.0]]), torch.tensor([0, 3]), [1.0, 2.0],
                               None, acfg, "mean"))
        torch.library.opcheck(torch.ops.grpokit.compute_advantages.default,
                              (torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0, 3]), None, None, None, None, acfg,
                               "mean"))
        torch.library.opcheck(torch.ops.grpokit.optimal_token_baseline.default,
                              (torch.tensor([0.0, 1.0, 0.0, 2.0, 1.0]), torch.tensor([0, 2, 4, 5]),
                               torch.tensor([0, 2, 3]), torch.full((5,), -0.7), torch.full((5,), 0.4), None, None,
                               True, False, 1e-8))

    def test_compile_fullgraph(self):
        torch.manual_seed(0)
        head = torch.nn.Linear(8, 23)
        hidden = torch.randn(7, 8)
        _, targets, offsets, adv, old, _ = packed(12, [3, 4], 23, torch.float32)

        def step(h):
            logits = head(h)
            return gk.fused_loss(logits, targets, offsets, adv, logp_old=old, entropy_coef=0.01).loss

        eager = step(hidden)
        eager.backward()
        want = head.weight.grad.clone()
        head.weight.grad = None
        compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
        got = compiled(hidden)
        got.backward()
        torch.testing.assert_close(got, eager)
        torch.testing.assert_close(head.weight.grad, want)

    def test_compile_fullgraph_linear(self):
        torch.manual_seed(1)
        body, head = torch.nn.Linear(6, 8), torch.nn.Linear(8, 23)
        x = torch.randn(7, 6)
        _, targets, offsets, adv, old, _ = packed(13, [3, 4], 23, torch.float32)

        def step(inp):
            return gk.fused_linear_loss(torch.tanh(body(inp)), head.weight, targets, offsets, adv, bias=head.bias,
                                        token_chunk=3, logp_old=old).loss

        eager = step(x)
        eager.backward()
        want = [p.grad.clone() for p in (body.weight, head.weight, head.bias)]
        for p in (body.weight, body.bias, head.weight, head.bias):
            p.grad = None
        got = torch.compile(step, fullgraph=True, backend="aot_eager")(x)
        got.backward()
        torch.testing.assert_close(got, eager)
        for p, w in zip((body.weight, head.weight, head.bias), want):
            torch.testing.assert_close(p.grad, w)


if __name__ == "__main__":
    unittest.main()
