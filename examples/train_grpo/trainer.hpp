#pragma once
// The GRPO loop: sample G rollouts per prompt from an "inference engine", score them, compute the
// advantages and the loss with grpokit, backpropagate d loss / d logits through the policy, Adam.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include <grpokit/grpokit.hpp>

#include "data_parallel.hpp"
#include "loss_backend.hpp"
#include "options.hpp"
#include "policy_net.hpp"
#include "rollouts.hpp"
#include "task.hpp"

namespace train_grpo {

// The inference engine's deviation from the trainer: on a fraction `rate` of the tokens, Gaussian
// noise of std `sigma` on every logit. rate 1 with a small sigma stands for different numerics;
// a small rate with a large sigma for rare tokens whose logits differ completely (e.g. another MoE
// routing), the kind that importance weights and trust regions are meant to catch.
struct engine_mismatch {
  double sigma = 0, rate = 1;
};

// The inference engine: samples at temperature 1 from the policy's logits with the mismatch above
// and reports its own log-probs. The samples follow the perturbed distribution, so that the weight
// pi_trainer / pi_engine is the right correction (perturbing only the reported log-probs would turn
// every correction into noise).
inline rollouts sample(const mlp_policy& net, const std::vector<int>& prompts, int per_prompt,
                       const engine_mismatch& mismatch, rng& gen) {
  const std::size_t S = prompts.size() * static_cast<std::size_t>(per_prompt);
  std::vector<std::vector<int>> resp(S);
  std::vector<std::vector<float>> logp(S);
  std::vector<std::size_t> live(S);  // sequences without EOS yet
  for (std::size_t s = 0; s < S; ++s) live[s] = s;
  auto prompt_of = [&](std::size_t s) { return prompts[s / static_cast<std::size_t>(per_prompt)]; };
  mlp_policy::activations act;
  std::vector<std::int32_t> ctx;
  std::vector<double> p(vocab);
  for (int pos = 0; pos < max_new && !live.empty(); ++pos) {
    ctx.resize(live.size() * context_len);
    for (std::size_t i = 0; i < live.size(); ++i)
      write_context(prompt_of(live[i]), resp[live[i]].data(), pos, &ctx[i * context_len]);
    net.forward(ctx, act);
    std::vector<std::size_t> still;
    for (std::size_t i = 0; i < live.size(); ++i) {
      const bool hit = mismatch.sigma > 0 && (mismatch.rate >= 1 || gen.uniform() < mismatch.rate);
      const float* z = &act.logits[i * vocab];
      double top = -INFINITY, total = 0;
      for (std::size_t v = 0; v < p.size(); ++v)
        top = std::max(top, p[v] = z[v] + (hit ? mismatch.sigma * gen.normal() : 0.0));
      for (double& x : p) total += (x = std::exp(x - top));
      double u = gen.uniform() * total;
      std::size_t tok = 0;
      while (tok + 1 < p.size() && (u -= p[tok]) >= 0) ++tok;
      resp[live[i]].push_back(static_cast<int>(tok));
      logp[live[i]].push_back(static_cast<float>(std::log(p[tok] / total)));
      if (tok != tok_eos) still.push_back(live[i]);
    }
    live.swap(still);
  }
  rollouts r;
  for (std::size_t s = 0; s < S; ++s) {
    const std::vector<int>& y = resp[s];
    const int id = prompt_of(s);
    for (std::size_t j = 0; j < y.size(); ++j) {
      r.tokens.push_back(y[j]);
      r.contexts.resize(r.contexts.size() + context_len);
      write_context(id, y.data(), static_cast<int>(j), &r.contexts[r.contexts.size() - context_len]);
    }
    r.logp_rollout.insert(r.logp_rollout.end(), logp[s].begin(), logp[s].end());
    r.seq_offsets.push_back(static_cast<std::int64_t>(r.tokens.size()));
    r.seq_prompt.push_back(id);
    r.rewards.push_back(static_cast<float>(reward(id, y.data(), static_cast<int>(y.size()))));
    if ((s + 1) % static_cast<std::size_t>(per_prompt) == 0)
      r.group_offsets.push_back(static_cast<std::int64_t>(s + 1));
  }
  return r;
}

inline grpokit::logits_input<float, float> logits_of(const mlp_policy::activations& a,
                                                     const std::vector<std::int64_t>& targets) {
  return {{a.logits.data(), a.rows, vocab, vocab}, targets, {}};
}

// Exact expected reward of each prompt under the policy. With the prefix reward,
// E[r] = (1/n) sum_k prod_{j <= k} pi(answer_j | prompt, answer_<j): only the answer path is needed.
template <class P>
std::vector<double> expected_rewards(const mlp_policy& net, const std::vector<int>& prompts,
                                     const grpokit::loss_config& cfg, loss_backend<P>& loss) {
  std::vector<std::int32_t> ctx;
  std::vector<std::int64_t> targets;
  for (int id : prompts) {
    const auto want = answer(id);
    for (int j = 0; j < answer_len; ++j) {
      targets.push_back(want[static_cast<std::size_t>(j)]);
      ctx.resize(ctx.size() + context_len);
      write_context(id, want.data(), j, &ctx[ctx.size() - context_len]);
    }
  }
  mlp_policy::activations act;
  net.forward(ctx, act);
  const std::vector<float> logp = loss.logprobs(logits_of(act, targets), cfg);
  std::vector<double> out;
  std::size_t t = 0;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    double path = 0, sum = 0;
    for (int j = 0; j < answer_len; ++j, ++t) sum += std::exp(path += logp[t]);
    out.push_back(sum / answer_len);
  }
  return out;
}

inline double mean_of(const std::vector<double>& x) {
  double s = 0;
  for (double v : x) s += v;
  return x.empty() ? 0 : s / static_cast<double>(x.size());
}

// What one step logs. Loss metrics are averaged over the 1 + K updates of the step.
struct step_log {
  int step = 0;
  double seconds = 0, reward = 0, exact = 0, eval = 0;
  double kl_ref = 0, kl_old = 0, clip = 0, entropy = 0, loss = 0;
  double flips = 0, zeroed = 0;  // fractions of `compared`, see score()
  int compared = 0;
  int paired = 0, paired_flips_mean = 0, paired_flips_median = 0;  // counts, see score()
  double trm_seqs = 0, is_mean = 0, mismatch = 0;
  // --noise: the LM head's gradient noise of the first update (fresh rollouts) and the mean over
  // the K reuse updates (0 without reuse); rollouts per prompt for the critical batch sizes
  grpokit::noise_components fresh, reused;
  int rollouts_per_prompt = 0;

  void add(const grpokit::loss_result& res, int updates) {
    const grpokit::loss_metrics& m = res.metrics;
    loss += res.loss / updates;
    kl_ref += m.kl_ref / updates;
    kl_old += m.approx_kl_old / updates;
    clip += (m.clip_frac_low + m.clip_frac_high) / updates;
    entropy += m.entropy_mean / updates;
    trm_seqs += static_cast<double>(m.masked_seqs_trust_region) / updates;
    is_mean += m.is_weight_mean / updates;
    mismatch += m.mismatch_abs_mean / updates;
  }
};

// The gradient noise of the LM head at the policy of `act` (its hidden states): fused_linear_loss
// with lm_head_norms over the prompts' groups, into estimate_noise (docs/gradient_noise.md). The
// network's own gradient is not touched: this is a second, measuring pass.
template <class P>
grpokit::noise_components lm_head_noise(const mlp_policy& net, const mlp_policy::activations& act,
                                        const rollouts& r, const grpokit::rollout_batch<float>& batch,
                                        const grpokit::loss_config& cfg) {
  const std::int64_t T = act.rows, H = net.hidden_units(), S = static_cast<std::int64_t>(r.rewards.size());
  std::vector<float> dweight(static_cast<std::size_t>(vocab * H));
  grpokit::linear_grads<float, float> g;
  g.dweight_acc = {dweight.data(), vocab, H, H};
  std::vector<double> rollout_sq(static_cast<std::size_t>(S)), group_sq(r.group_offsets.size() - 1);
  double batch_sq = 0;
  grpokit::host::fused_linear_loss<P>(
      {{act.hidden.data(), T, H, H}, {net.head_weight(), vocab, H, H}, {net.head_bias(), vocab}, r.tokens, {}}, batch,
      cfg, std::max<std::int64_t>(T, 1), g, {}, {r.group_offsets, rollout_sq, group_sq, &batch_sq});
  return grpokit::host::estimate_noise(rollout_sq, r.group_offsets, group_sq, batch_sq);
}

// Rollouts whose advantage has the sign opposite to that of r - E[r | prompt], with E[r] exact under
// the trainer's policy at sampling (the sampling distribution itself when there is no mismatch).
inline int count_flips(const rollouts& r, const std::vector<float>& adv, const std::vector<double>& value,
                       int per_prompt) {
  int flips = 0;
  for (std::size_t s = 0; s < adv.size(); ++s)
    flips += adv[s] * (r.rewards[s] - value[s / static_cast<std::size_t>(per_prompt)]) < 0;
  return flips;
}

template <class Baseline>
int count_flips_with(const rollouts& r, const std::vector<double>& value, int per_prompt,
                     const grpokit::advantage_config& cfg) {
  std::vector<float> adv(r.rewards.size());
  std::vector<std::uint8_t> seq_mask(r.rewards.size());
  grpokit::host::compute_advantages<grpokit::policy<Baseline>>({r.rewards, r.group_offsets, {}, {}}, cfg,
                                                               {adv, seq_mask});
  return count_flips(r, adv, value, per_prompt);
}

// Batch reward and the advantages' sign errors: flips and zeroed (A = 0 while r != E[r]) as
// fractions of the rollouts in the loss with r != E[r]; and, on the same rollouts, the flips the
// mean and the median baselines would make (the paired comparison of docs/reproductions.md).
inline void score(const rollouts& r, const std::vector<float>& adv, const std::vector<std::uint8_t>& seq_mask,
                  const std::vector<double>& value, int per_prompt, const grpokit::advantage_config& cfg, step_log& l) {
  const std::size_t S = r.rewards.size();
  for (std::size_t s = 0; s < S; ++s) {
    const double truth = r.rewards[s] - value[s / static_cast<std::size_t>(per_prompt)];
    l.reward += r.rewards[s] / static_cast<double>(S);
    l.exact += (r.rewards[s] == 1.f) / static_cast<double>(S);
    l.paired += truth != 0;
    if (!seq_mask[s] || truth == 0) continue;
    ++l.compared;
    l.zeroed += adv[s] == 0;
  }
  l.flips = static_cast<double>(count_flips(r, adv, value, per_prompt)) / std::max(l.compared, 1);
  l.zeroed /= std::max(l.compared, 1);
  l.paired_flips_mean = count_flips_with<grpokit::baseline::mean>(r, value, per_prompt, cfg);
  l.paired_flips_median = count_flips_with<grpokit::baseline::median>(r, value, per_prompt, cfg);
}

// "[#####...............]": the fraction of the steps done, one line per log step (logs and CI
// keep every line; no carriage returns).
inline std::string progress_bar(int step, int steps, int width = 20) {
  const int done = static_cast<int>(static_cast<long long>(step) * width / std::max(steps, 1));
  return "[" + std::string(static_cast<std::size_t>(done), '#') +
         std::string(static_cast<std::size_t>(width - done), '.') + "]";
}

class csv_log {
 public:
  explicit csv_log(const std::string& path) : out_(path) {
    if (!path.empty() && !out_) throw std::runtime_error("cannot write " + path);
    if (out_)
      out_ << "step,time_s,reward,exact,eval_reward,kl_ref,approx_kl_old,clip_frac,entropy,loss,flip_frac,"
              "zero_adv_frac,compared,paired,paired_flips_mean,paired_flips_median,trm_masked_seqs,is_weight_mean,"
              "mismatch_abs_mean,rollouts_per_prompt,noise_grad_sq,noise_tr_inter,noise_tr_intra,reuse_grad_sq,"
              "reuse_tr_inter,reuse_tr_intra\n";
  }
  void write(const step_log& l) {
    if (!out_) return;
    char line[768];
    std::snprintf(line, sizeof line,
                  "%d,%.3f,%.5f,%.5f,%.5f,%.6g,%.6g,%.5f,%.5f,%.6g,%.5f,%.5f,%d,%d,%d,%d,%.3f,%.5f,%.5f,%d,%.6g,%.6g,%.6g,"
                  "%.6g,%.6g,%.6g\n",
                  l.step, l.seconds, l.reward, l.exact, l.eval, l.kl_ref, l.kl_old, l.clip, l.entropy, l.loss, l.flips,
                  l.zeroed, l.compared, l.paired, l.paired_flips_mean, l.paired_flips_median, l.trm_seqs, l.is_mean,
                  l.mismatch, l.rollouts_per_prompt, l.fresh.grad_sq, l.fresh.tr_inter, l.fresh.tr_intra,
                  l.reused.grad_sq, l.reused.tr_inter, l.reused.tr_intra);
    out_ << line;
  }

 private:
  std::ofstream out_;
};

// comm: the data-parallel ranks (--parallel mpi), or null for one process. Data-parallel runs are
// the batch_invariant instantiations, and only they are (train_grpo.cpp's dispatch): each
// instantiation compiles the one path it runs (a third of the build time of this example).
template <class P>
int train(const options& o, const dp_comm* comm = nullptr) {
  static_assert(std::is_same<grpokit::accum_t<P>, float>::value && std::is_same<grpokit::storage_t<P>, float>::value,
                "the example network is fp32");
  constexpr bool data_parallel = P::order == grpokit::reduction_order::batch_invariant;
  if ((comm != nullptr) != data_parallel)
    throw std::logic_error("train_grpo: a data-parallel run is a batch_invariant one, and only it is");
  // MC-GRPO samples G + 1 rollouts so that G remain after the pivot is dropped.
  const bool median = std::is_same<typename P::baseline_type, grpokit::baseline::median>::value;
  const int per_prompt = o.group_size + (median ? 1 : 0);
  const engine_mismatch mismatch{o.mismatch_sigma(), o.mismatch_rate};

  grpokit::loss_config cfg = grpokit::presets::grpo::config();  // PPO clip 0.2, k3 KL 0.001, token mean
  cfg.is = o.is;
  cfg.trm_max_threshold = o.trm_max;  // read only by mask::trust_region
  cfg.entropy_coef = o.entropy_coef;
  cfg.adv.scale = o.adv_scale;

  std::unique_ptr<loss_backend<P>> loss;
  if (o.device == device_kind::cuda) {
#if defined(TRAIN_GRPO_WITH_CUDA)
    // device_loss.cu instantiates TRAIN_GRPO_POLICIES; data-parallel runs stay on the host (parse()
    // refuses --parallel mpi with --device cuda)
    if constexpr (!data_parallel)
      loss = make_device_loss<P>();
    else
      throw std::logic_error("--device cuda with --parallel mpi (parse() refuses it)");
#else
    throw std::logic_error("--device cuda in a build without CUDA (parse() refuses it)");
#endif
  } else {
    loss = std::make_unique<host_loss<P>>();
  }

  rng gen(o.seed);
  mlp_policy net(o.hidden, gen);
  const mlp_policy ref = net;  // the KL reference: the initial policy
  adam opt(net.params().size());
  const bool lead = comm == nullptr || comm->rank() == 0;  // prints and writes the files
  csv_log csv(lead ? o.csv : std::string());

  // A fixed held-out set, the same for every seed: the exact expected reward on it is the
  // noise-free learning curve.
  std::vector<int> held_out(256);
  rng eval_gen(12345);
  for (int& p : held_out) p = eval_gen.below(num_prompts);
  const double eval0 = mean_of(expected_rewards<P>(net, held_out, cfg, *loss));
  if (lead)
    std::printf(
        "train_grpo: baseline %s (scale %s), mask %s, is %s, %d prompts x %d rollouts, K = %d, mismatch %.2f on %.0f%% "
        "of tokens, seed %llu, loss on the %s\n",
        name_of(baselines, o.baseline), name_of(scales, o.adv_scale), name_of(masks, o.mask),
        name_of(corrections, o.is), o.prompts, per_prompt, o.off_policy_steps, mismatch.sigma, 100 * mismatch.rate,
        static_cast<unsigned long long>(o.seed), o.device == device_kind::cuda ? "GPU" : "CPU");
  if (lead) std::printf("step 0  expected reward %.3f\n", eval0);
  if (lead && comm != nullptr) std::printf("data parallel over %d ranks\n", comm->size());

  const auto start = std::chrono::steady_clock::now();
  mlp_policy::activations act, ref_act;
  std::vector<float> grad, dlogits;
  std::vector<double> rewards;  // batch reward of every step
  int reached = 0;              // first step whose expected reward is >= 0.9
  double eval = eval0, seconds = 0;
  for (int step = 1; step <= o.steps; ++step) {
    std::vector<int> prompts(static_cast<std::size_t>(o.prompts));
    for (int& p : prompts) p = gen.below(num_prompts);
    const rollouts r = sample(net, prompts, per_prompt, mismatch, gen);
    const auto S = static_cast<std::int64_t>(r.rewards.size());
    // the sequences this process trains on: all of them, or its data-parallel share
    const rollouts share_r = data_parallel ? local_share(r, share_of(S, comm->rank(), comm->size())) : rollouts{};
    const rollouts& mine = data_parallel ? share_r : r;
    const auto n_mine = static_cast<std::int64_t>(mine.rewards.size());
    const auto T = static_cast<std::int64_t>(mine.tokens.size());

    // The trainer's log-probs at sampling (pi_old) and the reference's.
    net.forward(mine.contexts, act);
    ref.forward(mine.contexts, ref_act);
    const std::vector<float> logp_old = loss->logprobs(logits_of(act, mine.tokens), cfg);
    const std::vector<float> logp_ref = loss->logprobs(logits_of(ref_act, mine.tokens), cfg);

    // ess_scaled weighs each rollout by its trainer / engine likelihood ratio.
    std::vector<float> seq_log_ratio(static_cast<std::size_t>(n_mine), 0.f), adv(static_cast<std::size_t>(n_mine));
    std::vector<std::uint8_t> seq_mask(static_cast<std::size_t>(n_mine));
    for (std::size_t s = 0; s < seq_log_ratio.size(); ++s)
      for (auto t = static_cast<std::size_t>(mine.seq_offsets[s]);
           t < static_cast<std::size_t>(mine.seq_offsets[s + 1]); ++t)
        seq_log_ratio[s] += logp_old[t] - mine.logp_rollout[t];
    const grpokit::advantage_inputs<float> adv_in{mine.rewards, mine.group_offsets, seq_log_ratio, {}};
    if constexpr (data_parallel)
      grpokit::host::compute_advantages<P>(adv_in, cfg.adv, {adv, seq_mask}, grpokit::data_parallel(*comm));
    else
      loss->compute_advantages(adv_in, cfg.adv, {adv, seq_mask});

    step_log l;
    l.step = step;
    score(r, comm != nullptr ? gather_sequences(*comm, adv, S, 1) : adv,
          comm != nullptr ? gather_sequences(*comm, seq_mask, S, 1) : seq_mask,
          expected_rewards<P>(net, prompts, cfg, *loss), per_prompt, cfg.adv, l);

    grpokit::rollout_batch<float> batch;
    batch.seq_offsets = mine.seq_offsets;
    batch.adv = adv;
    batch.logp_old = logp_old;
    batch.logp_ref = logp_ref;
    batch.logp_rollout = mine.logp_rollout;
    batch.seq_mask = seq_mask;
    dlogits.resize(static_cast<std::size_t>(T * vocab));
    const int updates = 1 + o.off_policy_steps;
    for (int u = 0; u < updates; ++u) {
      if (u > 0) net.forward(mine.contexts, act);  // the first update reuses the logits of pi_old
      if (o.noise) {
        const grpokit::noise_components c = lm_head_noise<P>(net, act, mine, batch, cfg);
        auto& into = u == 0 ? l.fresh : l.reused;
        const double w = u == 0 ? 1.0 : 1.0 / o.off_policy_steps;
        into.grad_sq += w * c.grad_sq;
        into.tr_inter += w * c.tr_inter;
        into.tr_intra += w * c.tr_intra;
        l.rollouts_per_prompt = per_prompt;
      }
      const grpokit::matrix_view<float> dz{dlogits.data(), T, vocab, vocab};
      if constexpr (data_parallel) {
        l.add(grpokit::host::fused_loss<P>(logits_of(act, mine.tokens), batch, cfg, dz, grpokit::data_parallel(*comm)),
              updates);
        sequence_ordered_gradient(*comm, net, mine, act, dlogits, S, grad);
      } else {
        l.add(loss->fused_loss(logits_of(act, mine.tokens), batch, cfg, dz), updates);
        net.backward(mine.contexts, act, dlogits, grad);
      }
      opt.step(net.params(), grad, o.lr);
    }

    eval = l.eval = mean_of(expected_rewards<P>(net, held_out, cfg, *loss));
    seconds = l.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (reached == 0 && eval >= 0.9) reached = step;
    rewards.push_back(l.reward);
    csv.write(l);
    if (lead && o.log_every > 0 && (step % o.log_every == 0 || step == o.steps))
      std::printf(
          "%s %4d/%d  reward %.3f  exact %.3f  E[r] %.3f  kl %.4f  clip %.3f  entropy %.3f  flips %.3f  %.1fs\n",
          progress_bar(step, o.steps).c_str(), step, o.steps, l.reward, l.exact, l.eval, l.kl_ref, l.clip, l.entropy,
          l.flips, l.seconds);
  }
  const std::vector<double> last(rewards.end() - std::min<std::ptrdiff_t>(10, o.steps), rewards.end());
  const std::string first = reached > 0 ? "from step " + std::to_string(reached) : "never";
  if (!o.params_out.empty() && lead) {
    std::ofstream out(o.params_out, std::ios::binary);
    out.write(reinterpret_cast<const char*>(net.params().data()),
              static_cast<std::streamsize>(net.params().size() * sizeof(float)));
    if (!out) throw std::runtime_error("cannot write " + o.params_out);
  }
  if (lead)
    std::printf(
        "done: %d steps in %.1f s; expected reward %.3f -> %.3f (>= 0.9 %s); batch reward of the last %zu steps %.3f\n",
        o.steps, seconds, eval0, eval, first.c_str(), last.size(), mean_of(last));
  if (o.check >= 0) {
    const bool ok = eval - eval0 >= o.check;
    if (lead) std::printf("check: gain %.3f %s %.3f\n", eval - eval0, ok ? ">=" : "<", o.check);
    return ok ? 0 : 1;
  }
  return 0;
}

}  // namespace train_grpo
