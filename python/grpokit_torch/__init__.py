"""grpokit from PyTorch: custom operators over grpokit's host path (CPU tensors) and device path
(CUDA tensors, when the extension was built with CUDA: has_cuda()) (docs/pytorch.md).

    import grpokit_torch as gk
    out = gk.fused_loss(logits, targets, seq_offsets, adv, logp_old=old, kl="k3", kl_coef=0.05)
    out.loss.backward()                      # logits.grad = grad_out * dlogits
    gk.metrics_dict(out.metrics)["clip_frac_high"]
    out = gk.fused_linear_loss(hidden, lm_head.weight, targets, seq_offsets, adv)  # no [T, V] logits

Every loss_config field is a keyword argument with its C++ name and default (`is` is
`is_correction`); enum fields take their C++ names as strings. The precision is the logits' dtype;
`reduction` and `mask` (and `baseline` for compute_advantages) choose among the built policies.
"""
from typing import NamedTuple, Optional

import torch

from . import _C  # registers the operators torch.ops.grpokit.*

__all__ = ["token_logprobs", "fused_loss", "fused_linear_loss", "compute_advantages", "compute_advantages_multi",
           "optimal_token_baseline", "metrics_dict", "advantage_stats_dict", "token_baseline_stats_dict",
           "loss_config_defaults", "advantage_config_defaults", "metric_names", "advantage_stat_names",
           "token_baseline_stat_names", "has_cuda", "set_sync_errors"]

def has_cuda() -> bool:
    """Whether the CUDA operators (grpokit's device path) were built."""
    return bool(_C.has_cuda())


def set_sync_errors(on: bool) -> None:
    """CUDA operators: on (the default), each call reads its error status back (a small copy and a
    synchronisation of the current stream, skipped while a CUDA graph is captured) and raises
    grpokit's message, as the CPU operators do. Off: nothing synchronises, and a data error (a
    target out of range, a NaN logit, bad offsets) turns every output of the call into NaN."""
    _C.set_sync_errors(bool(on))


metric_names = list(_C.metric_names())
advantage_stat_names = list(_C.advantage_stat_names())
token_baseline_stat_names = list(_C.token_baseline_stat_names())
_LOSS_FIELDS = list(_C.loss_config_fields())
_ADV_FIELDS = list(_C.advantage_config_fields())


def _defaults(fields):
    out = {}
    for name, default, choices, is_bool in fields:
        out[name] = choices[int(default)] if choices else (bool(default) if is_bool else default)
    return out


loss_config_defaults = _defaults(_LOSS_FIELDS)
advantage_config_defaults = _defaults(_ADV_FIELDS)


def _config(fields, kwargs, what):
    """The config values in the operator's order: every field from kwargs or its C++ default."""
    unknown = set(kwargs) - {f[0] for f in fields}
    if unknown:
        raise TypeError(f"grpokit.{what}: unknown keyword argument(s) {sorted(unknown)}; "
                        f"the config fields are {[f[0] for f in fields]}")
    values = []
    for name, default, choices, is_bool in fields:
        v = kwargs.get(name, None)
        if v is None:
            values.append(float(default))
        elif choices:
            if v not in choices:
                raise ValueError(f"grpokit.{what}: {name} must be one of {choices}, got {v!r}")
            values.append(float(choices.index(v)))
        else:
            values.append(float(v))
    return values


class TokenStats(NamedTuple):
    logp: torch.Tensor
    entropy: torch.Tensor
    lse: torch.Tensor


class TokenStatsSumP2(NamedTuple):  # token_logprobs(..., sum_p2=True)
    logp: torch.Tensor
    entropy: torch.Tensor
    lse: torch.Tensor
    sum_p2: torch.Tensor    # [T] sum_v p_v^2


class LossOutput(NamedTuple):
    loss: torch.Tensor      # 0-dim, float32 (float64 for float64 logits); differentiable w.r.t. logits
    metrics: torch.Tensor   # float64 [len(metric_names)]: metrics_dict(metrics)
    logp: torch.Tensor      # [T] detached
    entropy: torch.Tensor   # [T] detached


class LinearLossOutput(NamedTuple):
    loss: torch.Tensor      # 0-dim; differentiable w.r.t. hidden, weight and bias
    metrics: torch.Tensor   # float64 [len(metric_names)]: metrics_dict(metrics)
    logp: torch.Tensor      # [T] detached
    entropy: torch.Tensor   # [T] detached


class Advantages(NamedTuple):
    adv: torch.Tensor       # [S]
    seq_mask: torch.Tensor  # [S] uint8, 0 = excluded
    stats: torch.Tensor     # float64 [len(advantage_stat_names)]: advantage_stats_dict(stats)


def metrics_dict(metrics: torch.Tensor) -> dict:
    return dict(zip(metric_names, metrics.tolist()))


def advantage_stats_dict(stats: torch.Tensor) -> dict:
    return dict(zip(advantage_stat_names, stats.tolist()))


def token_baseline_stats_dict(stats: torch.Tensor) -> dict:
    return dict(zip(token_baseline_stat_names, stats.tolist()))


def token_logprobs(logits, targets, *, token_temperature=None, sum_p2=False, reduction="deterministic",
                   mask="padding", **config):
    """logp of the target, entropy and log-sum-exp of every row of logits [T, V] (no softmax kept):
    TokenStats; with sum_p2=True a TokenStatsSumP2 that adds sum_v p_v^2 (the old policy's, for
    optimal_token_baseline)."""
    cfg = _config(_LOSS_FIELDS, config, "token_logprobs")
    out = torch.ops.grpokit.token_logprobs(logits, targets, token_temperature, bool(sum_p2), cfg, reduction, mask)
    return TokenStatsSumP2(*out) if sum_p2 else TokenStats(*out[:3])


def fused_loss(logits, targets, seq_offsets, adv, *, logp_old=None, logp_ref=None, logp_rollout=None,
               token_mask=None, seq_mask=None, positive=None, token_adv=None, token_temperature=None,
               reduction="deterministic", mask="padding", **config) -> LossOutput:
    """The policy-gradient loss of a packed batch from its logits [T, V] (docs/pytorch.md). positive:
    [S] flags of the correct rollouts, for VAPO's NLL term (positive_nll_coef). token_adv: [T]
    advantages per token (optimal_token_baseline), used by the token terms instead of adv; adv [S]
    still gives OPSM its sign and the advantage metrics (e.g. each sequence's mean token_adv)."""
    cfg = _config(_LOSS_FIELDS, config, "fused_loss")
    loss, metrics, _, logp, entropy = torch.ops.grpokit.fused_loss(
        logits, targets, seq_offsets, adv, logp_old, logp_ref, logp_rollout, token_mask, seq_mask, positive,
        token_adv, token_temperature, cfg, reduction, mask)
    return LossOutput(loss, metrics, logp, entropy)


def fused_linear_loss(hidden, weight, targets, seq_offsets, adv, *, bias=None, token_chunk=1024, logp_old=None,
                      logp_ref=None, logp_rollout=None, token_mask=None, seq_mask=None, positive=None,
                      token_adv=None, token_temperature=None, reduction="deterministic", mask="padding",
                      **config) -> LinearLossOutput:
    """The loss of fused_loss from hidden [T, D] and the LM head weight [V, D] (bias [V]): logits
    hidden @ weight.T + bias are made token_chunk rows at a time and never kept (docs/pytorch.md)."""
    cfg = _config(_LOSS_FIELDS, config, "fused_linear_loss")
    loss, metrics, _, _, _, logp, entropy = torch.ops.grpokit.fused_linear_loss(
        hidden, weight, bias, targets, seq_offsets, adv, logp_old, logp_ref, logp_rollout, token_mask, seq_mask,
        positive, token_adv, token_temperature, token_chunk, cfg, reduction, mask)
    return LinearLossOutput(loss, metrics, logp, entropy)


def compute_advantages(rewards, group_offsets, *, seq_log_ratio=None, seq_weight=None, group_baseline=None,
                       seq_tokens=None, baseline="mean", **config) -> Advantages:
    """Group advantages of rewards [S], groups [G + 1] offsets (docs/baseline.md). seq_tokens: the
    response lengths [S] (baseline="opo", scale="whiten"), any numeric dtype."""
    cfg = _config(_ADV_FIELDS, config, "compute_advantages")
    return Advantages(*torch.ops.grpokit.compute_advantages(rewards, group_offsets, seq_log_ratio, seq_weight,
                                                            group_baseline, seq_tokens, cfg, baseline))


def compute_advantages_multi(rewards, group_offsets, *, weights=None, seq_tokens=None, baseline="mean",
                             **config) -> Advantages:
    """Several rewards per rollout (GDPO, NeMo-RL's "gdpo"): rewards [S, K]; each reward's group
    advantages (the baseline, scale and eps of the config, unclipped), their sum weighted by
    `weights` (K numbers, default 1 each), whitened over the batch (mean and Bessel std, weighted by
    seq_tokens when given), then clipped; seq_mask keeps the rollouts every reward keeps
    (docs/baseline.md)."""
    cfg = _config(_ADV_FIELDS, config, "compute_advantages_multi")
    w = [] if weights is None else [float(x) for x in weights]
    return Advantages(*torch.ops.grpokit.compute_advantages_multi(rewards, group_offsets, w, seq_tokens, cfg,
                                                                  baseline))


class TokenAdvantages(NamedTuple):
    adv: torch.Tensor       # [T] (G_t - B_t) m_t, the token_rewards' dtype
    returns: torch.Tensor   # [T] rewards-to-go G_t
    stats: torch.Tensor     # float64 [len(token_baseline_stat_names)]: token_baseline_stats_dict(stats)


def optimal_token_baseline(token_rewards, seq_offsets, group_offsets, logp_old, sum_p2, *, is_weights=None,
                           token_mask=None, zero_tail=True, compact=False, epsilon=1e-8) -> TokenAdvantages:
    """verl's optimal token baseline (docs/baseline.md): a baseline per group and per step weighted
    by each trajectory's realised energy sum_j (1 - 2 pi_j + sum_p2_j) rho_j^2, and advantages per
    token for fused_loss(token_adv=...). token_rewards [T] (float32 / float64); logp_old, sum_p2
    (fused_loss's sum_p2 of the old policy), is_weights [T]; compact: verl's tir_ variant."""
    return TokenAdvantages(*torch.ops.grpokit.optimal_token_baseline(
        token_rewards, seq_offsets, group_offsets, logp_old, sum_p2, is_weights, token_mask, bool(zero_tail),
        bool(compact), float(epsilon)))


# ---- fake (meta) kernels: shapes and dtypes only, for torch.compile and FakeTensor ----
def _accum(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


@torch.library.register_fake("grpokit::token_logprobs")
def _token_logprobs_fake(logits, targets, token_temperature, want_sum_p2, config, reduction, mask):
    T = logits.shape[0]
    out = logits.new_empty((T,), dtype=_accum(logits.dtype))
    return (out, torch.empty_like(out), torch.empty_like(out),
            logits.new_empty((T if want_sum_p2 else 0,), dtype=out.dtype))


@torch.library.register_fake("grpokit::fused_loss")
def _fused_loss_fake(logits, targets, seq_offsets, adv, logp_old, logp_ref, logp_rollout, token_mask, seq_mask,
                     positive, token_adv, token_temperature, config, reduction, mask):
    acc = _accum(logits.dtype)
    T = logits.shape[0]
    return (logits.new_empty((), dtype=acc), logits.new_empty((len(metric_names),), dtype=torch.float64),
            torch.empty_like(logits, memory_format=torch.contiguous_format), logits.new_empty((T,), dtype=acc),
            logits.new_empty((T,), dtype=acc))


@torch.library.register_fake("grpokit::fused_linear_loss")
def _fused_linear_loss_fake(hidden, weight, bias, targets, seq_offsets, adv, logp_old, logp_ref, logp_rollout,
                            token_mask, seq_mask, positive, token_adv, token_temperature, token_chunk, config, reduction,
                            mask):
    acc = _accum(hidden.dtype)
    T, V = hidden.shape[0], weight.shape[0]
    return (hidden.new_empty((), dtype=acc), hidden.new_empty((len(metric_names),), dtype=torch.float64),
            torch.empty_like(hidden, memory_format=torch.contiguous_format),
            torch.empty_like(weight, memory_format=torch.contiguous_format),
            weight.new_empty((V if bias is not None else 0,)), hidden.new_empty((T,), dtype=acc),
            hidden.new_empty((T,), dtype=acc))


@torch.library.register_fake("grpokit::compute_advantages")
def _compute_advantages_fake(rewards, group_offsets, seq_log_ratio, seq_weight, group_baseline, seq_tokens, config,
                             baseline):
    S = rewards.shape[0]
    return (rewards.new_empty((S,)), rewards.new_empty((S,), dtype=torch.uint8),
            rewards.new_empty((len(advantage_stat_names),), dtype=torch.float64))


@torch.library.register_fake("grpokit::optimal_token_baseline")
def _optimal_token_baseline_fake(token_rewards, seq_offsets, group_offsets, logp_old, sum_p2, is_weights, token_mask,
                                 zero_tail, compact, epsilon):
    T = token_rewards.shape[0]
    return (token_rewards.new_empty((T,)), token_rewards.new_empty((T,)),
            token_rewards.new_empty((len(token_baseline_stat_names),), dtype=torch.float64))


@torch.library.register_fake("grpokit::compute_advantages_multi")
def _compute_advantages_multi_fake(rewards, group_offsets, weights, seq_tokens, config, baseline):
    S = rewards.shape[0]
    return (rewards.new_empty((S,)), rewards.new_empty((S,), dtype=torch.uint8),
            rewards.new_empty((len(advantage_stat_names),), dtype=torch.float64))


# ---- autograd: the gradients are computed by the forward; only the loss is differentiable ----
def _scaled(grad_loss, g):
    # grad_out · g in the loss's dtype (the accumulation type), returned in g's
    return (grad_loss * g).to(g.dtype)


def _fused_loss_setup(ctx, inputs, output):
    ctx.save_for_backward(output[2])


def _fused_loss_backward(ctx, grad_loss, grad_metrics, grad_dlogits, grad_logp, grad_entropy):
    (dlogits,) = ctx.saved_tensors
    return (_scaled(grad_loss, dlogits),) + (None,) * 14


torch.library.register_autograd("grpokit::fused_loss", _fused_loss_backward, setup_context=_fused_loss_setup)


# d loss / d (hidden, weight, bias) = (dhidden, dweight, dbias), computed by the forward
def _fused_linear_loss_setup(ctx, inputs, output):
    ctx.has_bias = inputs[2] is not None
    ctx.save_for_backward(output[2], output[3], output[4])


def _fused_linear_loss_backward(ctx, grad_loss, *unused):
    dhidden, dweight, dbias = ctx.saved_tensors
    return (_scaled(grad_loss, dhidden), _scaled(grad_loss, dweight),
            _scaled(grad_loss, dbias) if ctx.has_bias else None) + (None,) * 15


torch.library.register_autograd("grpokit::fused_linear_loss", _fused_linear_loss_backward,
                                setup_context=_fused_linear_loss_setup)
