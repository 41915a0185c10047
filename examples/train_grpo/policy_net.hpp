#pragma once
// The policy network, its backward pass from d loss / d logits, Adam, and a seeded generator.
// Everything grpokit does not do: grpokit only sees the logits and returns their gradient.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "task.hpp"

namespace train_grpo {

// mt19937_64 is specified bit for bit by the standard; the std:: distributions are not, so the
// uniform and normal variates are derived here to make a seed reproduce on any standard library.
class rng {
 public:
  explicit rng(std::uint64_t seed) : gen_(seed) {}
  double uniform() { return static_cast<double>(gen_() >> 11) * 0x1.0p-53; }  // [0, 1)
  // Box-Muller
  double normal() {
    const double u = 1.0 - uniform(), v = uniform();
    return std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v);
  }
  int below(int n) { return static_cast<int>(uniform() * n); }

 private:
  std::mt19937_64 gen_;
};

// Eight independent partial sums: vectorised without -ffast-math, and the same result everywhere.
inline float dot(const float* a, const float* b, int n) {
  float acc[8] = {};
  int k = 0;
  for (; k + 8 <= n; k += 8)
    for (int u = 0; u < 8; ++u) acc[u] += a[k + u] * b[k + u];
  for (; k < n; ++k) acc[0] += a[k] * b[k];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

inline void axpy(float alpha, const float* x, float* y, int n) {
  for (int k = 0; k < n; ++k) y[k] += alpha * x[k];
}

// Embedding + one ReLU hidden layer + LM head over a fixed window of context_len positions. Each
// position has its own slot in the hidden layer's input, so the order of the tokens is kept. The
// parameters are one flat vector: Adam and the frozen reference copy need no per-tensor code.
//
// The hidden layer's input is a concatenation of embeddings, so W1 x = sum_i W1_i E[c_i]: both
// passes go through the table W1_i E[v] of every slot i and token v, which costs one pass over W1
// per call instead of one per row.
class mlp_policy {
 public:
  static constexpr int embed = 8;
  static constexpr int input = context_len * embed;
  static constexpr int tokens = vocab + 1;  // with pad

  struct activations {
    std::int64_t rows = 0;
    std::vector<float> hidden;  // [rows, H] after the ReLU
    std::vector<float> logits;  // [rows, vocab]
  };

  mlp_policy(int hidden, rng& init) : H_(hidden) {
    w1_ = e_ + tokens * embed;
    b1_ = w1_ + H_ * input;
    w2_ = b1_ + H_;
    b2_ = w2_ + vocab * H_;
    p_.assign(static_cast<std::size_t>(b2_ + vocab), 0.f);
    auto fill = [&](std::int64_t at, std::int64_t n, double scale) {
      for (std::int64_t i = 0; i < n; ++i)
        p_[static_cast<std::size_t>(at + i)] = static_cast<float>(scale * init.normal());
    };
    fill(e_, tokens * embed, 1.0);
    fill(w1_, H_ * input, 1.0 / std::sqrt(static_cast<double>(input)));
    // A small head: the untrained policy is close to uniform, i.e. the reward starts near chance.
    fill(w2_, vocab * H_, 0.1 / std::sqrt(static_cast<double>(H_)));
  }

  // The LM head: logits = hidden W2^T + b2, W2 [vocab, H] (what fused_linear_loss takes).
  int hidden_units() const { return H_; }
  const float* head_weight() const { return at(w2_); }
  const float* head_bias() const { return at(b2_); }

  std::vector<float>& params() { return p_; }
  const std::vector<float>& params() const { return p_; }

  // ctx: [rows, context_len] token ids (pad allowed).
  void forward(const std::vector<std::int32_t>& ctx, activations& a) const {
    const std::int64_t rows = static_cast<std::int64_t>(ctx.size()) / context_len;
    a.rows = rows;
    a.hidden.resize(static_cast<std::size_t>(rows * H_));
    a.logits.resize(static_cast<std::size_t>(rows * vocab));
    std::vector<float> table(static_cast<std::size_t>(context_len * tokens * H_));
    for (int i = 0; i < context_len; ++i)
      for (int v = 0; v < tokens; ++v)
        for (int j = 0; j < H_; ++j) table[slot(i, v) + static_cast<std::size_t>(j)] = dot(w1(j, i), e(v), embed);
    for (std::int64_t t = 0; t < rows; ++t) {
      const std::int32_t* c = &ctx[static_cast<std::size_t>(t * context_len)];
      float* h = &a.hidden[static_cast<std::size_t>(t * H_)];
      std::copy(at(b1_), at(b1_) + H_, h);
      for (int i = 0; i < context_len; ++i) axpy(1.f, &table[slot(i, c[i])], h, H_);
      for (int j = 0; j < H_; ++j) h[j] = std::max(h[j], 0.f);
      float* z = &a.logits[static_cast<std::size_t>(t * vocab)];
      for (int v = 0; v < vocab; ++v) z[v] = *at(b2_ + v) + dot(at(w2_ + v * H_), h, H_);
    }
  }

  // grad = d loss / d params from dlogits [rows, vocab] (overwritten, not accumulated).
  void backward(const std::vector<std::int32_t>& ctx, const activations& a, const std::vector<float>& dlogits,
                std::vector<float>& grad) const {
    grad.assign(p_.size(), 0.f);
    std::vector<float> dtable(static_cast<std::size_t>(context_len * tokens * H_), 0.f);
    std::vector<float> dpre(static_cast<std::size_t>(H_));
    for (std::int64_t t = 0; t < a.rows; ++t) {
      const float* dz = &dlogits[static_cast<std::size_t>(t * vocab)];
      const float* h = &a.hidden[static_cast<std::size_t>(t * H_)];
      if (std::all_of(dz, dz + vocab, [](float g) { return g == 0.f; })) continue;  // masked row
      std::fill(dpre.begin(), dpre.end(), 0.f);
      for (int v = 0; v < vocab; ++v) {
        grad[static_cast<std::size_t>(b2_ + v)] += dz[v];
        axpy(dz[v], h, &grad[static_cast<std::size_t>(w2_ + v * H_)], H_);
        axpy(dz[v], at(w2_ + v * H_), dpre.data(), H_);
      }
      for (int j = 0; j < H_; ++j) dpre[static_cast<std::size_t>(j)] *= h[j] > 0.f ? 1.f : 0.f;  // ReLU'
      axpy(1.f, dpre.data(), &grad[static_cast<std::size_t>(b1_)], H_);
      const std::int32_t* c = &ctx[static_cast<std::size_t>(t * context_len)];
      for (int i = 0; i < context_len; ++i) axpy(1.f, dpre.data(), &dtable[slot(i, c[i])], H_);
    }
    // table[i, v, j] = W1_i[j] . E[v]
    for (int i = 0; i < context_len; ++i) {
      for (int v = 0; v < tokens; ++v) {
        const float* d = &dtable[slot(i, v)];
        for (int j = 0; j < H_; ++j) {
          if (d[j] == 0.f) continue;
          axpy(d[j], e(v), &grad[static_cast<std::size_t>(w1_ + j * input + i * embed)], embed);
          axpy(d[j], w1(j, i), &grad[static_cast<std::size_t>(e_ + v * embed)], embed);
        }
      }
    }
  }

 private:
  const float* at(std::int64_t offset) const { return &p_[static_cast<std::size_t>(offset)]; }
  const float* e(int v) const { return at(e_ + v * embed); }
  const float* w1(int j, int i) const { return at(w1_ + j * input + i * embed); }  // W1_i row j
  std::size_t slot(int i, int v) const { return static_cast<std::size_t>((i * tokens + v) * H_); }

  int H_;
  std::int64_t e_ = 0, w1_, b1_, w2_, b2_;  // offsets of E [tokens, embed], W1 [H, input], b1, W2 [vocab, H], b2
  std::vector<float> p_;
};

class adam {
 public:
  explicit adam(std::size_t n) : m_(n, 0.0), v_(n, 0.0) {}
  void step(std::vector<float>& p, const std::vector<float>& g, double lr) {
    const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
    ++t_;
    const double c1 = 1.0 - std::pow(b1, t_), c2 = 1.0 - std::pow(b2, t_);
    for (std::size_t i = 0; i < p.size(); ++i) {
      m_[i] = b1 * m_[i] + (1 - b1) * g[i];
      v_[i] = b2 * v_[i] + (1 - b2) * static_cast<double>(g[i]) * g[i];
      p[i] -= static_cast<float>(lr * (m_[i] / c1) / (std::sqrt(v_[i] / c2) + eps));
    }
  }

 private:
  std::vector<double> m_, v_;
  int t_ = 0;
};

}  // namespace train_grpo
