#pragma once
// Test helpers: run the host path on a ref::problem and evaluate the reference on the same data.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <grpokit/grpokit.hpp>

#include "reference.hpp"

namespace support {

template <class S>
std::vector<S> to_storage(const std::vector<double>& x) {
  std::vector<S> out(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) out[i] = grpokit::math::store<S>(x[i]);
  return out;
}
template <class S>
std::vector<double> to_double(const std::vector<S>& x) {
  std::vector<double> out(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) out[i] = grpokit::math::load<double>(x[i]);
  return out;
}
template <class R, class T>
std::vector<R> cast(const std::vector<T>& x) {
  return std::vector<R>(x.begin(), x.end());
}
inline std::vector<std::uint8_t> bytes(const std::vector<int>& x) { return cast<std::uint8_t>(x); }

// Rounds the problem's logits to the storage type S so that the reference sees the stored values.
template <class S>
void round_logits(ref::problem& p) {
  p.logits = to_double(to_storage<S>(p.logits));
}

// A policy in words, for the INFO of a test over a policy list (Catch2 names those by index).
template <class P>
std::string describe() {
  const char* storage[] = {"float", "double", "fp16", "bf16"};
  const char* order[] = {"fast", "deterministic", "batch_invariant"};
  std::ostringstream os;
  os << "policy<precision<" << storage[static_cast<int>(grpokit::storage_traits<typename P::storage_type>::kind)] << ", "
     << (sizeof(typename P::accum_type) == 8 ? "double" : "float") << ">, "
     << order[static_cast<int>(P::order)] << ", chunk<" << P::chunk_size << ">" << (P::vocab_prune ? ", vocab_prune" : "")
     << (P::trust_region ? ", trust_region" : "") << ">";
  return os.str();
}

// Vocabulary sizes at the edges of policy P's row definition: 1, 2, 7, and one below, at and above
// the 16-byte block (vector_width), the lanes' span (chunk_lanes x vector_width) and the tile
// (chunk_size), and a tile and a half.
template <class P>
std::vector<std::int64_t> awkward_vocab_sizes() {
  const std::int64_t W = P::vector_width, LW = P::chunk_lanes * P::vector_width, N = P::chunk_size;
  std::vector<std::int64_t> v{1, 2, 7};
  for (std::int64_t edge : {W, LW, N})
    for (std::int64_t d : {-1, 0, 1}) v.push_back(edge + d);
  v.push_back(N + N / 2 + 1);
  std::vector<std::int64_t> out;
  for (std::int64_t x : v)
    if (x >= 1 && std::find(out.begin(), out.end(), x) == out.end()) out.push_back(x);
  return out;
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

// Everything the host path produces for a problem.
template <class P>
struct host_run {
  using S = typename P::storage_type;
  using R = typename P::accum_type;
  std::vector<S> logits;
  std::vector<R> temperature, adv, logp_old, logp_ref, logp_rollout;
  std::vector<std::uint8_t> token_mask, seq_mask, positive;
  std::vector<R> logp, entropy;
  std::vector<S> dlogits;
  grpokit::loss_result result;

  grpokit::logits_input<S, R> input(const ref::problem& p) const {
    return {{logits.data(), p.T, p.V, p.V}, p.targets, temperature};
  }
  grpokit::rollout_batch<R> batch(const ref::problem& p) const {
    grpokit::rollout_batch<R> b;
    b.seq_offsets = p.b.seq_offsets;
    b.adv = adv;
    b.logp_old = logp_old;
    b.logp_ref = logp_ref;
    b.logp_rollout = logp_rollout;
    b.token_mask = token_mask;
    b.seq_mask = seq_mask;
    b.positive = positive;
    return b;
  }
};

// The problem's per-token and per-sequence batch inputs in the policy's accumulation type.
template <class P>
void load_batch(host_run<P>& h, const ref::problem& p) {
  using R = typename P::accum_type;
  h.temperature = cast<R>(p.temperature);
  h.adv = cast<R>(p.b.adv);
  h.logp_old = cast<R>(p.b.logp_old);
  h.logp_ref = cast<R>(p.b.logp_ref);
  h.logp_rollout = cast<R>(p.b.logp_rollout);
  h.token_mask = bytes(p.b.token_mask);
  h.seq_mask = bytes(p.b.seq_mask);
  h.positive = bytes(p.b.positive);
}

template <class P>
host_run<P> run_fused(const ref::problem& p, const grpokit::loss_config& cfg) {
  using S = typename P::storage_type;
  host_run<P> h;
  h.logits = to_storage<S>(p.logits);
  load_batch(h, p);
  h.logp.resize(static_cast<std::size_t>(p.T));
  h.entropy.resize(static_cast<std::size_t>(p.T));
  h.dlogits.resize(h.logits.size());
  h.result = grpokit::host::fused_loss<P>(h.input(p), h.batch(p), cfg, {h.dlogits.data(), p.T, p.V, p.V},
                                          {h.logp, h.entropy});
  return h;
}

// Reference log-probs and entropies of every row of `logits` (long double).
inline void ref_rows(const ref::problem& p, const std::vector<ref::ld>& logits, const grpokit::loss_config& cfg,
                     bool prune, std::vector<ref::ld>& logp, std::vector<ref::ld>& entropy) {
  logp.resize(static_cast<std::size_t>(p.T));
  entropy.resize(static_cast<std::size_t>(p.T));
  for (std::int64_t t = 0; t < p.T; ++t) {
    std::vector<ref::ld> x(logits.begin() + t * p.V, logits.begin() + (t + 1) * p.V);
    const auto r = ref::row(x, p.targets[t], ref::temperature_of(p, t, cfg), prune, cfg.prune_rho);
    logp[t] = r.logp;
    entropy[t] = r.entropy;
  }
}

// The reference loss as a function of the logits; detached quantities are evaluated at `base`.
struct reference_loss {
  const ref::problem& p;
  const grpokit::loss_config& cfg;
  ref::mask_features mf;
  std::vector<ref::ld> base_logp, base_entropy;

  reference_loss(const ref::problem& p_, const grpokit::loss_config& c, ref::mask_features m)
      : p(p_), cfg(c), mf(m) {
    ref_rows(p, std::vector<ref::ld>(p.logits.begin(), p.logits.end()), cfg, mf.vocab_prune, base_logp, base_entropy);
  }
  ref::loss_out at(const std::vector<ref::ld>& logits) const {
    std::vector<ref::ld> logp, entropy;
    ref_rows(p, logits, cfg, mf.vocab_prune, logp, entropy);
    // a pruned target stays masked; its (constant) logp does not matter
    for (std::size_t t = 0; t < logp.size(); ++t)
      if (base_logp[t] == -ref::inf) logp[t] = -ref::inf;
    return ref::policy_loss(logp, entropy, base_logp, p.b, cfg, mf);
  }
  ref::loss_out at_base() const { return at(std::vector<ref::ld>(p.logits.begin(), p.logits.end())); }
  // Central difference of the loss with respect to logits[t, v].
  ref::ld derivative(std::int64_t t, std::int64_t v, ref::ld h = 1e-6L) const {
    std::vector<ref::ld> x(p.logits.begin(), p.logits.end());
    const std::size_t i = static_cast<std::size_t>(t * p.V + v);
    x[i] += h;
    const ref::ld up = at(x).loss;
    x[i] -= 2 * h;
    const ref::ld down = at(x).loss;
    return (up - down) / (2 * h);
  }
};

// |got - want| in units in the last place of want rounded to Real (1e9 for a wrong infinity).
template <class Real>
double ulp_error(Real got, long double want) {
  if (std::isinf(want)) return got == want ? 0 : 1e9;
  const Real w = static_cast<Real>(want);
  const Real ulp = std::nextafter(std::fabs(w), std::numeric_limits<Real>::infinity()) - std::fabs(w);
  return static_cast<double>(std::fabs(static_cast<long double>(got) - want) / ulp);
}

inline bool close(double got, double want, double rel, double abs) {
  return std::fabs(got - want) <= abs + rel * std::fabs(want);
}

// A random GRPO-lambda batch: G groups of 1..max_group rollouts, lengths 0..max_len (a quarter of
// the groups with equal lengths), three in four rollouts correct.
struct grpo_lambda_batch {
  std::vector<std::int64_t> groups{0}, seq_off{0};
  std::vector<std::uint8_t> correct;
};
template <class Rng>
grpo_lambda_batch random_grpo_lambda_batch(Rng& rng, int G, int max_group, int max_len) {
  std::uniform_int_distribution<int> gsize(1, max_group), len(0, max_len), coin(0, 3);
  grpo_lambda_batch b;
  for (int g = 0; g < G; ++g) {
    const int n = gsize(rng);
    b.groups.push_back(b.groups.back() + n);
    const bool equal_lengths = coin(rng) == 0;
    const int l0 = len(rng);
    for (int i = 0; i < n; ++i) {
      b.seq_off.push_back(b.seq_off.back() + (equal_lengths ? l0 : len(rng)));
      b.correct.push_back(coin(rng) != 0);
    }
  }
  return b;
}

// A random batch for the optimal token baseline: G groups of 1..max_group sequences, each a prompt
// of the group's length (token_mask 0) then 0..max_len response positions with holes (a fifth
// masked), an outcome reward on the last token plus small token rewards, sum_p2 between pi^2 and
// pi^2 + (1 - pi)^2 (a real distribution's range), IS weights in [0, 2) when asked; a third of the
// groups have two equally long responses.
struct otb_batch {
  std::vector<std::int64_t> groups{0}, seq_off{0};
  std::vector<double> rewards, logp_old, sum_p2, is_weights;
  std::vector<std::uint8_t> mask;
  grpokit::token_baseline_inputs<double> inputs(bool with_mask = true) const {
    return {rewards, seq_off, groups, logp_old, sum_p2, is_weights, with_mask ? grpokit::span<const std::uint8_t>(mask)
                                                                              : grpokit::span<const std::uint8_t>()};
  }
};
template <class Rng>
otb_batch random_otb_batch(Rng& rng, int G, int max_group, int max_len, bool with_is) {
  std::uniform_int_distribution<int> gsize(1, max_group), len(0, max_len), prompt(0, 3), coin(0, 4);
  std::uniform_real_distribution<double> u(0, 1), lp(-4, 0);
  otb_batch b;
  for (int g = 0; g < G; ++g) {
    const int n = gsize(rng), P = prompt(rng), twins = coin(rng) < 2 ? len(rng) : -1;
    b.groups.push_back(b.groups.back() + n);
    for (int i = 0; i < n; ++i) {
      const int L = i < 2 && twins >= 0 ? twins : len(rng);
      for (int k = 0; k < P + L; ++k) {
        const bool response = k >= P && (coin(rng) != 0 || k == P);
        const double pi = std::exp(lp(rng));
        b.mask.push_back(response);
        b.rewards.push_back(k == P + L - 1 ? std::floor(u(rng) * 3) : 0.1 * (u(rng) - 0.5));
        b.logp_old.push_back(std::log(pi));
        b.sum_p2.push_back(pi * pi + u(rng) * (1 - pi) * (1 - pi));
        if (with_is) b.is_weights.push_back(2 * u(rng));
      }
      b.seq_off.push_back(b.seq_off.back() + P + L);
    }
  }
  return b;
}

// A packed problem of `seqs` sequences of 0..max_len tokens with old / ref / rollout log-probs near
// -2 (the distributed tests: every rank builds the same one from the seed).
inline ref::problem packed_problem(std::uint64_t seed, std::int64_t V, int seqs, std::int64_t max_len,
                                   bool per_token_temperature = false) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::int64_t> len(0, max_len);
  std::vector<std::int64_t> lengths(static_cast<std::size_t>(seqs));
  for (auto& n : lengths) n = len(rng);
  auto p = ref::make_problem(rng, lengths, V);
  ref::add_policies(rng, p, std::vector<ref::ld>(static_cast<std::size_t>(p.T), -2.0L), 0.4);
  if (per_token_temperature) {
    std::uniform_real_distribution<double> temp(0.6, 1.4);
    for (std::int64_t t = 0; t < p.T; ++t) p.temperature.push_back(temp(rng));
  }
  return p;
}

}  // namespace support
