// libFuzzer target over every host entry point: shapes, offsets, token ids, values (NaN, inf,
// +-FLT_MAX, +-1e300, subnormals) and configurations (every field, enums out of range) from the
// fuzzer's bytes. Invariants: no crash and no sanitizer report (built with ASan/UBSan); every
// exception is a grpokit::error; with finite inputs and finite clamps, a call that succeeds returns
// finite outputs (documented exceptions: logp = -inf for a pruned target or a target whose scaled
// logit overflows to -inf; the loss terms that grow with logp, when the scaled logits are not
// moderate: moderate_scaled_logits). Logits and rewards may be any finite value (near FLT_MAX / DBL_MAX);
// the other inputs and the configuration must also be moderate (|x| <= 1e15), since a result whose
// true value leaves the floating range (an advantage of 3e38 times a ratio) cannot be finite.
//   clang++ -fsanitize=fuzzer,address,undefined ... (tests/CMakeLists.txt, GRPOKIT_FUZZ=ON)
// Without libFuzzer, tests/fuzz/replay.cpp runs the seed corpus through the same function (CTest).
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <vector>

#include <grpokit/grpokit.hpp>

namespace {

// The fuzzer's bytes as a stream of choices; past the end every read is 0.
class bytes_in {
 public:
  bytes_in(const std::uint8_t* p, std::size_t n) : p_(p), n_(n) {}
  std::uint8_t u8() {
    if (i_ >= n_) return 0;
    return backwards_ ? p_[n_ - 1 - i_++] : p_[i_++];
  }
  // The same bytes read from the last one backwards, by a reader of their own.
  bytes_in reversed() const {
    bytes_in r(p_, n_);
    r.backwards_ = true;
    return r;
  }
  bool flag() { return (u8() & 1) != 0; }
  std::int64_t range(std::int64_t lo, std::int64_t hi) {  // [lo, hi]
    const std::uint32_t r = static_cast<std::uint32_t>(u8()) | (static_cast<std::uint32_t>(u8()) << 8);
    return lo + static_cast<std::int64_t>(r % static_cast<std::uint32_t>(hi - lo + 1));
  }
  // Mostly ordinary values; now and then one of the values that break numerical code. `finite` and
  // `moderate` (|x| <= 1e15) are cleared by a value that is not.
  double value(bool& finite, bool& moderate) {
    static const double special[] = {0.0,   -0.0,     1e-39,   -1e-39,   1e-300, FLT_MAX,  -FLT_MAX, 3e38,
                                     -3e38, 1e30,     -1e30,   1e300,    -1e300, DBL_MAX,  -DBL_MAX, 5e-324,
                                     -800,  800,      -1e4,    1e4,      std::numeric_limits<double>::infinity(),
                                     -std::numeric_limits<double>::infinity(), std::numeric_limits<double>::quiet_NaN()};
    const std::uint8_t k = u8();
    if (k < 224) return (static_cast<double>(k) - 112.0) / 16.0 + static_cast<double>(u8()) / 4096.0;
    const double v = special[k % (sizeof(special) / sizeof(special[0]))];
    finite = finite && std::isfinite(v);
    moderate = moderate && std::fabs(v) <= 1e15;
    return v;
  }

 private:
  const std::uint8_t* p_;
  std::size_t n_;
  std::size_t i_ = 0;
  bool backwards_ = false;
};

// Shapes and offsets: mostly consistent, sometimes not.
std::vector<std::int64_t> offsets(bytes_in& in, std::int64_t segments, std::int64_t total) {
  std::vector<std::int64_t> off{0};
  for (std::int64_t s = 0; s < segments; ++s) off.push_back(off.back() + in.range(0, 6));
  if (!off.empty() && in.u8() < 230) {  // rescale to end at `total`
    const std::int64_t last = off.back();
    for (auto& o : off) o = last > 0 ? o * total / last : (o == 0 ? 0 : total);
    off.back() = total;
    if (segments == 0) off = {0};
  }
  if (in.u8() > 250 && off.size() > 1) off[static_cast<std::size_t>(in.range(0, static_cast<std::int64_t>(off.size()) - 1))] -= 3;
  return off;
}

// What the values drawn so far are: all finite; all moderate (|x| <= 1e15).
struct kind {
  bool finite = true, moderate = true;
};

template <class T>
std::vector<T> values(bytes_in& in, std::int64_t n, kind& k) {
  std::vector<T> v(static_cast<std::size_t>(n > 0 ? n : 0));
  for (auto& x : v) {
    const double d = in.value(k.finite, k.moderate);
    x = static_cast<T>(d);
    k.finite = k.finite && std::isfinite(static_cast<double>(x));  // 3e38 as float is finite, 1e300 is not
  }
  return v;
}

// A span of the right size, or (rarely) one element short / absent: the validation must say so.
template <class T>
grpokit::span<const T> maybe_wrong(bytes_in& in, const std::vector<T>& v) {
  const std::uint8_t k = in.u8();
  if (k == 255 && !v.empty()) return {v.data(), static_cast<std::int64_t>(v.size()) - 1};
  if (k == 254) return {};
  return v;
}

grpokit::loss_config config(bytes_in& in, kind& k) {
  grpokit::loss_config c;
  auto field = [&](double& f, double typical) {
    if (in.u8() < 200) return;
    f = in.u8() < 128 ? typical * static_cast<double>(in.range(0, 4)) : in.value(k.finite, k.moderate);
  };
  // an enum: one of its n values, or now and then the value n (not one of them)
  auto choice = [&](int n) { return in.u8() < 250 ? in.u8() % n : n; };
  c.obj = static_cast<grpokit::objective>(choice(5));
  c.agg = static_cast<grpokit::aggregation>(choice(5));
  c.is = static_cast<grpokit::is_correction>(choice(5));
  c.kl = static_cast<grpokit::kl_estimator>(choice(4));
  c.trm_max_estimator = static_cast<grpokit::divergence>(choice(3));
  field(c.eps_low, 0.1);
  field(c.eps_high, 0.1);
  field(c.dual_clip, 1.5);
  field(c.delta, 1.5);
  field(c.log_ratio_clamp, 5);
  field(c.gspo_log_ratio_max, 5);
  field(c.tau_pos, 0.5);
  field(c.tau_neg, 0.5);
  field(c.is_max, 1);
  field(c.is_log_ratio_clamp, 5);
  field(c.kl_coef, 0.01);
  field(c.kl_input_clamp, 5);
  field(c.kl_output_clamp, 5);
  field(c.entropy_coef, 0.01);
  field(c.temperature, 0.5);
  field(c.global_tokens, 8);
  field(c.norm_constant, 8);
  field(c.dp_size, 1);
  field(c.trm_max_threshold, 0.5);
  field(c.trm_mean_threshold, 0.5);
  field(c.prune_rho, 0.1);
  field(c.importance_hi, 1);
  field(c.opsm_threshold, 0.05);
  field(c.adv.eps, 1e-3);
  field(c.adv.std_floor, 0.1);
  field(c.adv.ess_ratio_ref, 0.25);
  c.adv.scale = static_cast<grpokit::adv_scale>(choice(4));
  field(c.adv.clip_low, -1);  // rejected when positive
  field(c.adv.clip_high, 1);
  c.adv.mask_zero_variance = in.flag();
  c.check_finite = in.u8() < 230;
  // The fields added later are drawn from the end of the bytes, backwards: every other read keeps
  // the bytes it had, so the corpus' older inputs keep their meaning (and gain these options).
  bytes_in tail = in.reversed();
  if (tail.u8() < 40) c.obj = grpokit::objective::gmpo;
  c.dppo = static_cast<grpokit::dppo_divergence>(tail.u8() % 3);
  if (tail.flag()) c.dppo_low = tail.value(k.finite, k.moderate);  // rejected when negative or NaN
  if (tail.flag()) c.dppo_high = 0.05 * static_cast<double>(tail.range(0, 4));
  c.entropy_token_mean = tail.flag();
  c.cispo_clip_frac_any_sign = tail.flag();
  c.kl_straight_through = tail.flag();
  c.kl_is_weighted = tail.flag();
  if (tail.u8() < 40) c.adv.scale = grpokit::adv_scale::whiten;
  c.is_batch_normalize = tail.flag();
  if (tail.u8() < 60) c.positive_nll_coef = tail.value(k.finite, k.moderate);  // rejected when negative or not finite
  const std::uint8_t rho = tail.u8();  // the top-entropy mask: mostly in [0, 1], beyond it and NaN rejected
  if (rho < 60) c.top_entropy_quantile = rho / 50.0;
  else if (rho < 70) c.top_entropy_quantile = tail.value(k.finite, k.moderate);
  if (tail.u8() < 40) {  // KL-Cov: the ratio mostly in [0, 1], beyond it rejected
    c.obj = grpokit::objective::kl_cov;
    c.kl_cov_ratio = tail.u8() / 200.0;
    c.ppo_kl_coef = tail.value(k.finite, k.moderate);
  }
  if (tail.u8() < 40) {  // Clip-Cov: a band (reversed or NaN: rejected) and a seed
    c.obj = grpokit::objective::clip_cov;
    c.clip_cov_ratio = tail.u8() / 200.0;
    c.clip_cov_lb = tail.value(k.finite, k.moderate);
    c.clip_cov_ub = tail.value(k.finite, k.moderate);
    c.clip_cov_seed = tail.u8();
  }
  if (tail.u8() < 40) c.m2po_threshold = tail.value(k.finite, k.moderate);  // M2PO: negative or NaN rejected
  if (tail.u8() < 40) {  // the sampler's support: a negative k, a p outside (0, 1] or NaN rejected
    c.top_k = tail.range(-1, 9);
    c.top_p = tail.flag() ? tail.value(k.finite, k.moderate) : tail.u8() / 255.0;
  }
  return c;
}

bool finite_config(const grpokit::loss_config& c) {  // +inf clamps are "off" and may overflow
  return std::isfinite(c.log_ratio_clamp) && std::isfinite(c.is_log_ratio_clamp) && std::isfinite(c.kl_input_clamp) &&
         std::isfinite(c.kl_output_clamp) && std::isfinite(c.gspo_log_ratio_max) && std::isfinite(c.is_max);
}

[[noreturn]] void violated(const char* what) {
  std::fprintf(stderr, "fuzz_host: invariant violated: %s\n", what);
  std::abort();
}

template <class V>
bool all_finite(const V& v) {
  for (const auto& x : v)
    if (!std::isfinite(grpokit::math::load<double>(x))) return false;
  return true;
}
template <class V>
void require_not_nan(const V& v, const char* what) {
  for (const auto& x : v)
    if (std::isnan(grpokit::math::load<double>(x))) violated(what);
}
template <class V>
void require_finite(const V& v, const char* what, bool allow_minus_inf = false) {
  for (const auto& x : v) {
    const double d = grpokit::math::load<double>(x);
    if (std::isnan(d) || d == std::numeric_limits<double>::infinity()) violated(what);
    if (d == -std::numeric_limits<double>::infinity() && !allow_minus_inf) violated(what);
  }
}

// The largest |logit / temperature| the inputs allow, whichever temperatures apply. The loss terms
// linear in logp (cispo, reinforce, k1, kl_cov's penalty) and k2 (quadratic, and its gradient
// linear) grow with it: their true value leaves the floating range with scaled logits near DBL_MAX
// (logits of 1e308, or a temperature of 1e-300), so they are promised finite only for moderate
// scaled logits.
template <class T>
double max_abs(const std::vector<T>& v) {
  double m = 0;
  for (const auto& x : v) m = std::fmax(m, std::fabs(grpokit::math::load<double>(x)));
  return m;
}
template <class R>
bool moderate_scaled_logits(double max_logit, const std::vector<R>& temperature, double cfg_temperature) {
  double t = cfg_temperature;
  for (const auto& x : temperature) t = std::fmin(t, std::fmin(static_cast<double>(x), static_cast<double>(x) * cfg_temperature));
  return t > 0 && max_logit / t <= 1e12;
}
bool grows_with_logp(const grpokit::loss_config& c) {
  return c.obj == grpokit::objective::cispo || c.obj == grpokit::objective::reinforce ||
         c.obj == grpokit::objective::kl_cov ||  // its penalty ppo_kl_coef |logp - logp_old|
         c.kl == grpokit::kl_estimator::k1 || c.kl == grpokit::kl_estimator::k2 || c.positive_nll_coef != 0;
}

using pf = grpokit::precision<float, float>;
using pd = grpokit::precision<double, double>;
using P0 = grpokit::policy<pf, grpokit::chunk<16>>;  // vectorised host rows
using P1 = grpokit::policy<pf, grpokit::reduction::batch_invariant, grpokit::chunk<8>,
                           grpokit::mask::all_of<grpokit::mask::trust_region, grpokit::mask::vocab_prune>>;
using P2 = grpokit::policy<pd, grpokit::reduction::fast, grpokit::baseline::median, grpokit::mask::importance>;
using P3 = grpokit::policy<pd, grpokit::baseline::ess_scaled, grpokit::chunk<32>, grpokit::mask::vocab_prune>;
using P4 = grpokit::policy<pf, grpokit::baseline::leave_one_out, grpokit::reduction::batch_invariant>;

template <class P>
void run(bytes_in& in, int entry) {
  using R = grpokit::accum_t<P>;
  using S = grpokit::storage_t<P>;
  kind k;  // the configuration and every input but the logits
  const grpokit::loss_config cfg = config(in, k);
  kind logits_kind;
  const std::int64_t T = in.range(0, 24), V = in.range(1, 40), S_ = in.range(0, 6);
  std::vector<std::int64_t> seq_off = offsets(in, S_, T);
  std::vector<std::int64_t> targets(static_cast<std::size_t>(T));
  for (auto& y : targets) y = in.u8() < 250 ? in.range(0, V - 1) : in.range(-2, V + 2);
  const std::vector<S> logits = values<S>(in, T * V, logits_kind);
  std::vector<R> temperature;
  if (in.flag()) temperature = values<R>(in, T, k);
  std::vector<R> adv = values<R>(in, static_cast<std::int64_t>(seq_off.size()) - 1, k);
  std::vector<R> logp_old = values<R>(in, in.flag() ? T : 0, k);
  std::vector<R> logp_ref = values<R>(in, in.flag() ? T : 0, k);
  std::vector<R> logp_rollout = values<R>(in, in.flag() ? T : 0, k);
  std::vector<std::uint8_t> token_mask, seq_mask;
  if (in.flag())
    for (std::int64_t t = 0; t < T; ++t) token_mask.push_back(in.u8() & 1);
  grpokit::rollout_batch<R> b;
  b.seq_offsets = maybe_wrong(in, seq_off);
  b.adv = maybe_wrong(in, adv);
  b.logp_old = logp_old;
  b.logp_ref = logp_ref;
  b.logp_rollout = logp_rollout;
  b.token_mask = token_mask;
  b.seq_mask = seq_mask;
  std::vector<std::uint8_t> positive;  // VAPO's correct rollouts: those with A > 0, drawing no byte
  if (cfg.positive_nll_coef != 0)
    for (const R a : adv) positive.push_back(a > 0 ? 1 : 0);
  b.positive = positive;
  const grpokit::logits_input<S, R> li{{logits.data(), T, V, V}, maybe_wrong(in, targets), temperature};
  // the finiteness promise: finite (and, but for the logits, moderate) inputs, finite clamps
  const bool promised = cfg.check_finite && finite_config(cfg) && logits_kind.finite && k.finite && k.moderate;
  switch (entry) {
    case 0: {  // token_logprobs
      std::vector<R> logp(static_cast<std::size_t>(T)), ent(logp), lse(logp);
      std::vector<R> sum_p2(static_cast<std::size_t>(in.flag() ? T : 0));  // drawn last: older inputs keep their meaning
      const grpokit::span<R> q(sum_p2.data(), maybe_wrong(in, sum_p2).size());
      grpokit::host::token_logprobs<P>(li, cfg, {logp, ent, lse, q});
      if (promised)
        for (const R x : q)
          if (!(x >= R(0) && x <= static_cast<R>(V) * R(1.001))) violated("token_logprobs sum_p2 in [0, V]");
      if (promised) {
        require_finite(ent, "token_logprobs entropy");
        require_finite(lse, "token_logprobs lse");
        require_finite(logp, "token_logprobs logp", /*allow_minus_inf=*/true);
      }
      break;
    }
    case 1: {  // fused_loss
      std::vector<S> dlogits(logits.size());
      std::vector<R> sum_p2(static_cast<std::size_t>(in.flag() ? T : 0));  // drawn last: older inputs keep their meaning
      const grpokit::span<R> q(sum_p2.data(), maybe_wrong(in, sum_p2).size());
      const auto r = grpokit::host::fused_loss<P>(li, b, cfg, {dlogits.data(), T, V, V}, {{}, {}, q});
      const bool moderate = moderate_scaled_logits(max_abs(logits), temperature, cfg.temperature);
      if (promised && (moderate || !grows_with_logp(cfg))) {
        if (!std::isfinite(r.loss)) violated("fused_loss loss");
        if (moderate || cfg.kl != grpokit::kl_estimator::k2) require_finite(dlogits, "fused_loss dlogits");
      }
      // a sum of squared probabilities, each p_v = exp(z_v - lse) <= 1: in [0, V]; in [0, 1] up to
      // rounding unless the scaled logits are so large that lse = max + log(sum) absorbs the log
      // (a float row of 14 ties at FLT_MAX gives 14, as its logp gives 0, not -log 14)
      if (promised)
        for (const R x : q)
          if (!(x >= R(0) && x <= static_cast<R>(V) * R(1.001))) violated("fused_loss sum_p2 in [0, V]");
      break;
    }
    case 2: {  // logits_backward
      std::vector<R> lse = values<R>(in, T, k), ent = values<R>(in, T, k), g = values<R>(in, T, k),
                     ge = values<R>(in, in.flag() ? T : 0, k);
      std::vector<S> dlogits(logits.size());
      grpokit::host::logits_backward<P>(li, {lse, ent, g, ge}, cfg, {dlogits.data(), T, V, V});
      break;  // lse / entropy are arbitrary here: no finiteness promise
    }
    case 3: {  // policy_loss
      std::vector<R> logp = values<R>(in, T, k), ent = values<R>(in, T, k), dlogp(static_cast<std::size_t>(T)),
                     dent(dlogp);
      const std::vector<R> token_adv = values<R>(in, in.flag() ? T : 0, k);  // drawn last: older inputs keep their meaning
      grpokit::rollout_batch<R> bt = b;
      bt.token_adv = maybe_wrong(in, token_adv);
      const auto r = grpokit::host::policy_loss<P>({logp, ent}, bt, cfg, {dlogp, dent});
      if (promised && k.moderate) {
        if (!std::isfinite(r.loss)) violated("policy_loss loss");
        require_finite(dlogp, "policy_loss dlogp");
      }
      break;
    }
    case 4: {  // compute_advantages
      const std::int64_t n = in.range(0, 12);
      kind rk;  // rewards may be any finite value
      const std::vector<R> rewards = values<R>(in, n, rk), lr = values<R>(in, in.flag() ? n : 0, k),
                           w = values<R>(in, in.flag() ? n : 0, k);
      const std::vector<std::int64_t> groups = offsets(in, in.range(0, 4), n);
      const std::vector<R> tokens = values<R>(in, in.flag() ? n : 0, k);  // drawn last: older inputs keep their meaning
      std::vector<R> a(static_cast<std::size_t>(n));
      std::vector<std::uint8_t> keep(static_cast<std::size_t>(n));
      grpokit::host::compute_advantages<P>({rewards, groups, lr, w, {}, tokens}, cfg.adv, {a, keep});
      // without a spread to divide by (adv_scale::none), r - baseline of rewards near the type's
      // max is past it (FLT_MAX - (-3e37) is not a float): promised only for |r| <= max / 4; GPG
      // multiplies r - baseline by alpha <= S: promised for |r| <= max / (4 S)
      const double max_r = static_cast<double>(std::numeric_limits<R>::max());
      const double alpha_max = static_cast<double>(n > 0 ? n : 1);
      // whiten: (r - b - mu) / sigma is a standardised value, at most sqrt(sum of the weights) when every
      // weight is >= 1; a rollout of weight < 1 (0 tokens) can lie any distance from the others' spread
      bool weights_at_least_1 = true;
      for (const R& t : tokens) weights_at_least_1 = weights_at_least_1 && t >= R(1);
      const bool representable = cfg.adv.scale == grpokit::adv_scale::none  ? max_abs(rewards) <= max_r / 4
                                 : cfg.adv.scale == grpokit::adv_scale::gpg ? max_abs(rewards) <= max_r / (4 * alpha_max)
                                 : cfg.adv.scale == grpokit::adv_scale::whiten
                                     ? max_abs(rewards) <= max_r / 4 && weights_at_least_1
                                     : true;
      if (rk.finite && k.finite && k.moderate && representable) require_finite(a, "compute_advantages adv");
      // several rewards per rollout: K columns from the rewards drawn (rotated), weights from the end
      // of the bytes (older inputs keep their meaning)
      if constexpr (grpokit::detail::takes_rewards_only<typename P::baseline_type>) {
        bytes_in tail = in.reversed();
        const std::int64_t K = tail.range(0, 3);
        if (K > 0) {
          std::vector<R> matrix(static_cast<std::size_t>(n * K));
          for (std::int64_t i = 0; i < n; ++i)
            for (std::int64_t c = 0; c < K; ++c)
              matrix[static_cast<std::size_t>(i * K + c)] = rewards[static_cast<std::size_t>((i + c) % n)];
          std::vector<double> weights;
          if (tail.flag())
            for (std::int64_t c = 0; c < K; ++c) weights.push_back(tail.value(k.finite, k.moderate));
          grpokit::host::compute_advantages_multi<P>({{matrix.data(), n, K, K}, groups, weights, tokens}, cfg.adv,
                                                     {a, keep});
          // standardised sums: finite for finite inputs whose weighted sums stay representable
          if (rk.finite && k.finite && k.moderate && representable && cfg.adv.scale != grpokit::adv_scale::none &&
              cfg.adv.scale != grpokit::adv_scale::gpg && weights_at_least_1)
            require_finite(a, "compute_advantages_multi adv");
        }
      }
      if (in.flag()) {  // the optimal token baseline over tokens of the n rollouts (drawn last)
        const std::int64_t Tn = in.range(0, 20);
        kind tk;
        const std::vector<std::int64_t> seqs = offsets(in, n, Tn);
        const std::vector<R> tr = values<R>(in, Tn, rk), lo = values<R>(in, Tn, tk), p2 = values<R>(in, Tn, tk),
                             isw = values<R>(in, in.flag() ? Tn : 0, tk);
        std::vector<std::uint8_t> tm;
        if (in.flag())
          for (std::int64_t t = 0; t < Tn; ++t) tm.push_back(in.u8() & 1);
        grpokit::token_baseline_config oc;
        oc.zero_tail = in.flag();
        oc.compact = in.flag();
        if (in.flag()) oc.epsilon = in.value(tk.finite, tk.moderate);  // negative or not finite: rejected
        std::vector<R> ta(static_cast<std::size_t>(Tn)), ret(ta);
        const grpokit::span<R> out_adv(ta.data(), maybe_wrong(in, ta).size());
        grpokit::host::optimal_token_baseline<R>({tr, maybe_wrong(in, seqs), maybe_wrong(in, groups), lo, p2, isw, tm},
                                                 oc, {out_adv, ret});
      }
      break;
    }
    case 5: {  // fused_linear_loss
      const std::int64_t D = in.range(1, 6), chunk = in.range(1, 9);
      const std::vector<S> hidden = values<S>(in, T * D, k), weight = values<S>(in, V * D, k);
      std::vector<S> dhidden(hidden.size());
      std::vector<R> dweight(weight.size());
      grpokit::linear_grads<S, R> g;
      g.dhidden = {dhidden.data(), T, D, D};
      g.dweight_acc = {dweight.data(), V, D, D};
      // the LM-head norms (drawn last: older inputs keep their meaning)
      const std::int64_t S = static_cast<std::int64_t>(seq_off.size()) - 1;
      const bool norms_wanted = in.flag();
      const std::vector<std::int64_t> groups = norms_wanted ? offsets(in, in.range(0, 3), S) : std::vector<std::int64_t>{};
      std::vector<double> rollout_sq(static_cast<std::size_t>(norms_wanted ? S : 0)),
          group_sq(static_cast<std::size_t>(groups.empty() ? 0 : groups.size() - 1));
      double batch_sq = 0;
      const grpokit::lm_head_norms norms =
          norms_wanted ? grpokit::lm_head_norms{maybe_wrong(in, groups), rollout_sq, group_sq, &batch_sq}
                       : grpokit::lm_head_norms{};
      const auto r = grpokit::host::fused_linear_loss<P>(
          {{hidden.data(), T, D, D}, {weight.data(), V, D, D}, {}, li.targets, li.temperature}, b, cfg, chunk, g, {},
          norms);
      const bool moderate =
          moderate_scaled_logits(max_abs(hidden) * max_abs(weight) * static_cast<double>(D), temperature, cfg.temperature);
      // k now also holds the hidden states and the weight
      if (promised && k.finite && k.moderate && (moderate || !grows_with_logp(cfg))) {
        if (!std::isfinite(r.loss)) violated("fused_linear_loss loss");
        if (moderate || cfg.kl != grpokit::kl_estimator::k2) {
          require_finite(dhidden, "fused_linear_loss dhidden");
          // the norms square the gradient: a finite gradient of 1e222 has a squared norm past DBL_MAX
          // (+inf, rightly), but never NaN while the gradient itself is finite
          if (all_finite(dweight)) {
            require_not_nan(rollout_sq, "fused_linear_loss rollout_sq");
            require_not_nan(group_sq, "fused_linear_loss group_mean_sq");
            if (std::isnan(batch_sq)) violated("fused_linear_loss batch_mean_sq");
          }
        }
      }
      break;
    }
    default: {  // pack_padded and gather
      const std::int64_t B = in.range(0, 5), L = in.range(0, 7);
      std::vector<std::uint8_t> mask(static_cast<std::size_t>(B * L));
      for (auto& m : mask) m = in.u8() & 1;
      const auto packed = grpokit::host::pack_padded(maybe_wrong(in, mask), B, L);
      std::vector<float> padded(static_cast<std::size_t>(in.flag() ? B * L : B * L / 2 + 1));
      (void)packed.gather<float>(padded);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  bytes_in in(data, size);
  const int policy = in.u8() % 5, entry = in.u8() % 7;
  try {
    switch (policy) {
      case 0: run<P0>(in, entry); break;
      case 1: run<P1>(in, entry); break;
      case 2: run<P2>(in, entry); break;
      case 3: run<P3>(in, entry); break;
      default: run<P4>(in, entry); break;
    }
  } catch (const grpokit::error&) {
    // a clear error: the expected outcome for bad input
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz_host: an exception that is not a grpokit::error: %s\n", e.what());
    std::abort();
  }
  return 0;
}
