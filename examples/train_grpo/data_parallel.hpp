#pragma once
// --parallel mpi: data-parallel training over the ranks of a communicator. Every rank samples the
// same global batch (the same seed) and trains on a contiguous share of its sequences (a group may
// straddle two ranks): grpokit's data-parallel compute_advantages and fused_loss give every rank the
// advantages of its share and the loss and metrics of the whole batch; the gradients of the network
// are summed per sequence in global sequence order, so that every rank takes the same Adam step and
// the run is bitwise the same for any number of ranks (the policy is batch_invariant). Summing per
// sequence costs a backward and a gather of the parameter gradient per sequence: the price of a
// result that does not depend on the rank count, fine for this toy network.
#include <algorithm>
#include <cstdint>
#include <vector>

#include <grpokit/comm/callable.hpp>
#include <grpokit/host/distributed.hpp>

#include "policy_net.hpp"
#include "rollouts.hpp"

namespace train_grpo {

using dp_comm = grpokit::callable_communicator;

// Rank r trains on sequences [S r / R, S (r + 1) / R).
struct share {
  std::int64_t s0, s1;
};
inline share share_of(std::int64_t S, int rank, int ranks) { return {S * rank / ranks, S * (rank + 1) / ranks}; }

// The rollouts of sequences [s0, s1): tokens and offsets rebased, group_offsets kept global.
inline rollouts local_share(const rollouts& r, share sh) {
  rollouts out;
  const std::int64_t t0 = r.seq_offsets[static_cast<std::size_t>(sh.s0)],
                     t1 = r.seq_offsets[static_cast<std::size_t>(sh.s1)];
  out.group_offsets = r.group_offsets;
  out.seq_offsets.assign(1, 0);
  for (std::int64_t s = sh.s0; s < sh.s1; ++s) {
    out.seq_prompt.push_back(r.seq_prompt[static_cast<std::size_t>(s)]);
    out.rewards.push_back(r.rewards[static_cast<std::size_t>(s)]);
    out.seq_offsets.push_back(r.seq_offsets[static_cast<std::size_t>(s) + 1] - t0);
  }
  out.tokens.assign(r.tokens.begin() + t0, r.tokens.begin() + t1);
  out.logp_rollout.assign(r.logp_rollout.begin() + t0, r.logp_rollout.begin() + t1);
  out.contexts.assign(r.contexts.begin() + t0 * context_len, r.contexts.begin() + t1 * context_len);
  return out;
}

// Every rank's `width` values per sequence of its share, in global sequence order ([S, width]).
template <class T>
std::vector<T> gather_sequences(const dp_comm& comm, const std::vector<T>& mine, std::int64_t S, std::int64_t width) {
  const int R = comm.size();
  const std::int64_t most = S / R + 1;  // the largest share
  std::vector<T> padded(static_cast<std::size_t>(most * width)), all(padded.size() * static_cast<std::size_t>(R));
  std::copy(mine.begin(), mine.end(), padded.begin());
  comm.all_gather(padded.data(), all.data(), padded.size() * sizeof(T));
  std::vector<T> out;
  for (int r = 0; r < R; ++r) {
    const share sh = share_of(S, r, R);
    const auto* from = all.data() + static_cast<std::size_t>(r) * padded.size();
    out.insert(out.end(), from, from + (sh.s1 - sh.s0) * width);
  }
  return out;
}

// grad = sum over the S sequences of the batch, in order, of each sequence's parameter gradient.
inline void sequence_ordered_gradient(const dp_comm& comm, const mlp_policy& net, const rollouts& local,
                                      const mlp_policy::activations& act, const std::vector<float>& dlogits,
                                      std::int64_t S, std::vector<float>& grad) {
  const std::size_t P = net.params().size();
  const std::size_t n = local.rewards.size();
  std::vector<float> mine(n * P), g;
  std::vector<std::int32_t> ctx;
  std::vector<float> dz;
  mlp_policy::activations rows;
  for (std::size_t s = 0; s < n; ++s) {
    const auto t0 = static_cast<std::size_t>(local.seq_offsets[s]),
               t1 = static_cast<std::size_t>(local.seq_offsets[s + 1]);
    const std::size_t H = act.hidden.size() / std::max<std::size_t>(static_cast<std::size_t>(act.rows), 1);
    rows.rows = static_cast<std::int64_t>(t1 - t0);
    rows.hidden.assign(act.hidden.begin() + t0 * H, act.hidden.begin() + t1 * H);
    rows.logits.assign(act.logits.begin() + t0 * vocab, act.logits.begin() + t1 * vocab);
    ctx.assign(local.contexts.begin() + t0 * context_len, local.contexts.begin() + t1 * context_len);
    dz.assign(dlogits.begin() + t0 * vocab, dlogits.begin() + t1 * vocab);
    net.backward(ctx, rows, dz, g);
    std::copy(g.begin(), g.end(), mine.begin() + s * P);
  }
  const auto all = gather_sequences(comm, mine, S, static_cast<std::int64_t>(P));
  grad.assign(P, 0.f);
  for (std::int64_t s = 0; s < S; ++s)
    for (std::size_t i = 0; i < P; ++i) grad[i] += all[static_cast<std::size_t>(s) * P + i];
}

}  // namespace train_grpo
