// The SIMD row kernels, written once over the sixteen-lane operations V and compiled once per
// target by simd_rows.hpp, which includes this file inside the target's namespace with
// GRPOKIT_SIMD_INLINE / GRPOKIT_SIMD_ENTRY carrying the target (no include guard, on purpose).
// A function needs its target on itself: the compilers will not inline the target's intrinsics into
// a function compiled without it, so the kernels cannot be one template over V.
//
// The schedule, the same on every target (so AVX2 and AVX-512 give the same bits): column j of a
// row goes to lane j % 16 of a block of 1024 columns; a lane sums its block on its own, then adds the
// block sum to its total; the last partial group of sixteen is read into a full vector padded with
// values that contribute nothing; the lanes' totals are added by V::sum's fixed tree.

using vec = typename V::vec;

// The argument below which e^x is 0 in float (also for the subnormals), the clamp of exp_fma.
constexpr float exp_floor = -104.f;

// e^x for x in [-104, 89]: Cody-Waite reduction x = k ln2 + r (|r| <= ln2 / 2) with FMA, a degree-6
// polynomial for e^r in Horner form (1 and r exact; c2..c6 a minimax fit of the relative error on
// [-ln2/2, ln2/2], rounded to float: 3e-9 before rounding), then y 2^k rounded once (V::scale).
// At most 0.91 ulp for normal results over every float of the range (checked exhaustively; the
// tests sample it); subnormal results within one subnormal step. Eleven vector operations.
GRPOKIT_SIMD_INLINE vec exp_in_range(vec x) {
  const vec k = V::round(V::mul(x, V::set1(1.44269504088896341f)));
  vec r = V::fma(k, V::set1(-0.693359375f), x);  // ln2 = 0.693359375 - 2.12194440e-4 (the first exact in 9 bits)
  r = V::fma(k, V::set1(2.12194440e-4f), r);
  vec p = V::set1(1.381461275741458e-3f);
  p = V::fma(p, r, V::set1(8.368710055947304e-3f));
  p = V::fma(p, r, V::set1(4.166838899254799e-2f));
  p = V::fma(p, r, V::set1(1.666652113199234e-1f));
  p = V::fma(p, r, V::set1(4.999999403953552e-1f));
  p = V::fma(p, r, V::set1(1.f));
  return V::scale(V::fma(p, r, V::set1(1.f)), k);
}
// e^x for every x: -inf -> 0, +inf -> inf, NaN -> NaN ([-104, 89] holds every x whose e^x is
// neither 0 nor inf).
GRPOKIT_SIMD_INLINE vec exp_fma(vec x) { return exp_in_range(V::clamp(x, exp_floor, 89.f)); }

// The first n < 16 values at p as a vector, the other lanes `fill`.
template <class S>
GRPOKIT_SIMD_INLINE vec load_first(const S* p, std::int64_t n, S fill) {
  S padded[16];
  for (std::int64_t l = 0; l < 16; ++l) padded[l] = l < n ? p[l] : fill;
  return V::template load<S>(padded);
}
template <class Out>
GRPOKIT_SIMD_INLINE void store_first(Out* p, std::int64_t n, vec v) {
  Out lanes[16];
  V::template store<Out>(lanes, v);
  for (std::int64_t l = 0; l < n; ++l) p[l] = lanes[l];
}

// Adds sixteen columns to a lane block's sums s (e^t) and u (e^t t), t = x inv_t - offset rounded
// once (FMA; offset >= every kept z up to that rounding); with `Prune` a column with z = x inv_t
// below the threshold adds nothing. The exp takes t clamped at exp_floor (below it e^t = 0, and u
// gains e^t t = -0, which changes no sum). With `FindInf` u takes the unclamped t instead: a column
// whose t is -inf (e^t = 0) then makes u NaN, which is how online() finds a -Inf logit without a
// test per column.
template <bool Prune, bool FindInf = false>
GRPOKIT_SIMD_INLINE void add_columns(vec x, vec inv_t, vec neg_offset, vec threshold, vec& s, vec& u) {
  const vec t = V::fma(x, inv_t, neg_offset);
  const vec clamped = V::max(V::set1(exp_floor), t);
  vec e = exp_in_range(clamped);
  if constexpr (Prune) e = V::zero_unless(V::ge(V::mul(x, inv_t), threshold), e);
  s = V::add(s, e);
  u = V::fma(e, FindInf ? t : clamped, u);
}

// What the dlogits of a row's columns share, broadcast; g_logp and g_entropy times -inv_t.
struct dlogit_row {
  vec inv_t, threshold, neg_lse, entropy, g_logp, g_entropy;
};
// The softmax part of sixteen columns' dlogits, -p (g_logp + g_entropy (log p + H)) / T with
// log p = x inv_t - lse rounded once (FMA), exactly +0 where p = 0: log p is clamped to
// exp_in_range's domain (p = 0 below it, and the product is a finite +-0; above it only with an lse too small for the row, where both targets then give the
// same inf) and the FMA with +0 turns a -0 product into +0. Notes a NaN / Inf of x in `flags`.
template <bool Prune>
GRPOKIT_SIMD_INLINE vec softmax_dlogit(const dlogit_row& row, vec x, vec& flags) {
  flags = V::note_non_finite(flags, x);
  const vec log_p = V::clamp(V::fma(x, row.inv_t, row.neg_lse), exp_floor, 89.f);
  vec p = exp_in_range(log_p);
  if constexpr (Prune) p = V::zero_unless(V::ge(V::mul(x, row.inv_t), row.threshold), p);
  const vec inner = V::fma(row.g_entropy, V::add(log_p, row.entropy), row.g_logp);
  return V::fma(p, inner, V::set1(0.f));
}

struct rows {
  // The largest value of x[0, n) (the caller scales it: rounding by 1 / T > 0 is monotone); sets
  // `bad` when a value is NaN or Inf (the maximum is then meaningless).
  template <class S>
  GRPOKIT_SIMD_ENTRY static float max(const S* x, std::int64_t n, bool& bad) {
    vec m = V::set1(-std::numeric_limits<float>::infinity());
    vec flags = V::set1(0.f);
    std::int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
      const vec v = V::template load<S>(x + j);
      flags = V::note_non_finite(flags, v);
      m = V::max(m, v);
    }
    if (j < n) {  // padded with a value of the row: changes neither the max nor the finiteness
      const vec v = load_first<S>(x + j, n - j, x[j]);
      flags = V::note_non_finite(flags, v);
      m = V::max(m, v);
    }
    bad = V::any_nan(flags);
    return V::max_of(m);
  }

  // {offset, sum e^t, sum e^t t} over the columns of x[0, n) with z = x inv_t >= threshold,
  // t = z - offset (offset >= every kept z); the logits are finite.
  template <class S>
  GRPOKIT_SIMD_ENTRY static math::lse_partial<float> partial(const S* x, std::int64_t n, float inv_t, float offset,
                                                             float threshold) {
    return threshold == -std::numeric_limits<float>::infinity() ? partial_of<false>(x, n, inv_t, offset, threshold)
                                                                : partial_of<true>(x, n, inv_t, offset, threshold);
  }
  template <bool Prune, class S>
  GRPOKIT_SIMD_INLINE static math::lse_partial<float> partial_of(const S* x, std::int64_t n, float inv_t, float offset,
                                                                 float threshold) {
    const vec scale = V::set1(inv_t), shift = V::set1(-offset), keep_from = V::set1(threshold);
    const vec zero = V::set1(0.f);
    vec s_total = zero, u_total = zero;
    // padding: -inf gives e^t = 0, which adds nothing
    const S padding = math::store<S>(-std::numeric_limits<float>::infinity());
    std::int64_t j = 0;
    do {
      const std::int64_t block_end = j + 1024 < n ? j + 1024 : n;
      vec s = zero, u = zero;
      for (; j + 16 <= block_end; j += 16)
        add_columns<Prune>(V::template load<S>(x + j), scale, shift, keep_from, s, u);
      if (j < block_end) add_columns<Prune>(load_first<S>(x + j, block_end - j, padding), scale, shift, keep_from, s, u);
      j = block_end;
      s_total = V::add(s_total, s);
      u_total = V::add(u_total, u);
    } while (j < n);
    return {offset, V::sum(s_total), V::sum(u_total)};
  }

  // The partial {m, s, u} of the whole finite row x[0, n) in one read (no pruning): each block of
  // 1024 columns is read twice while it is in L1, first for its max, then for its sums against the
  // running offset m = the largest scaled value so far; a larger block max first moves the totals
  // to it (s e^d, (u + d s) e^d with d = old - new, as math::merge). Sets `bad` when a value is NaN
  // or Inf (the partial is then meaningless), found without a test per column: a NaN or +Inf makes
  // the offset or the sums NaN / Inf, a -Inf makes u NaN (add_columns' FindInf); the padded last
  // group is tested on its own. A finite row whose scaled values overflow is reported too: the
  // caller then takes the two-pass path, which handles it.
  template <class S>
  GRPOKIT_SIMD_ENTRY static math::lse_partial<float> online(const S* x, std::int64_t n, float inv_t, bool& bad) {
    const vec scale = V::set1(inv_t), zero = V::set1(0.f), floor = V::set1(exp_floor);
    const vec none = V::set1(-std::numeric_limits<float>::infinity());
    const S padding = math::store<S>(-std::numeric_limits<float>::infinity());
    vec s_total = zero, u_total = zero, flags = zero;
    float offset = -std::numeric_limits<float>::infinity();
    std::int64_t j = 0;
    do {
      const std::int64_t block_end = j + 1024 < n ? j + 1024 : n;
      vec m = none;
      std::int64_t i = j;
      for (; i + 16 <= block_end; i += 16) m = V::max(m, V::template load<S>(x + i));
      const bool tail = i < block_end;  // the last columns, padded with one of them for the max
      if (tail) {
        const vec v = load_first<S>(x + i, block_end - i, x[i]);
        flags = V::note_non_finite(flags, v);
        m = V::max(m, v);
      }
      const float block_max = V::max_of(m) * inv_t;
      if (block_max > offset) {
        if (offset != -std::numeric_limits<float>::infinity()) {
          const vec d = V::max(floor, V::set1(offset - block_max));
          const vec e = exp_in_range(d);
          u_total = V::mul(V::fma(d, s_total, u_total), e);
          s_total = V::mul(s_total, e);
        }
        offset = block_max;
      }
      const vec shift = V::set1(-offset);
      vec s = zero, u = zero;
      for (i = j; i + 16 <= block_end; i += 16)
        add_columns<false, true>(V::template load<S>(x + i), scale, shift, none, s, u);
      if (tail) add_columns<false>(load_first<S>(x + i, block_end - i, padding), scale, shift, none, s, u);
      j = block_end;
      s_total = V::add(s_total, s);
      u_total = V::add(u_total, u);
    } while (j < n);
    const float s_sum = V::sum(s_total), u_sum = V::sum(u_total);
    // a NaN max may have been dropped by V::max (it returns its second operand on NaN), leaving the
    // offset -inf: then every t is NaN or +inf
    bad = V::any_nan(flags) || !math::is_finite_bits(offset) || !math::is_finite_bits(s_sum) ||
          !math::is_finite_bits(u_sum);
    return {offset, s_sum, u_sum};
  }

  // The softmax part of every column's dlogit (math::dlogit without the target's term), times
  // inv_t, written to dx[0, n): -p (g_logp + g_entropy (log p + H)) / T with p = e^(z - lse), and
  // exactly +0 where p = 0 or the column is pruned (z < threshold). x may be dx (read first).
  // `stream`: non-temporal stores where dx is aligned for them. Returns whether a value of x is NaN
  // or Inf.
  template <class S, class Out>
  GRPOKIT_SIMD_ENTRY static bool softmax_dlogits(const S* x, Out* dx, std::int64_t n, float inv_t, float threshold,
                                                 float lse, float entropy, float g_logp, float g_entropy,
                                                 bool stream) {
    dlogit_row row;  // assigned, not brace-initialised: nvcc's host pass rejects vector members in braces
    row.inv_t = V::set1(inv_t);
    row.threshold = V::set1(threshold);
    row.neg_lse = V::set1(-lse);
    row.entropy = V::set1(entropy);
    row.g_logp = V::set1(-g_logp * inv_t);
    row.g_entropy = V::set1(-g_entropy * inv_t);
    // the columns before dx reaches the stream alignment: 64 bytes (16 floats) or 32 (16 halves)
    const std::uintptr_t misaligned = reinterpret_cast<std::uintptr_t>(dx) % (16 * sizeof(Out));
    stream = stream && misaligned % sizeof(Out) == 0;
    std::int64_t head =
        stream && misaligned != 0 ? static_cast<std::int64_t>((16 * sizeof(Out) - misaligned) / sizeof(Out)) : 0;
    if (head > n) head = n;
    const bool prune = threshold != -std::numeric_limits<float>::infinity();
    vec flags = V::set1(0.f);
    if (head > 0) store_first<Out>(dx, head, softmax_dlogit<true>(row, load_first<S>(x, head, x[0]), flags));
    std::int64_t j = head;
    if (stream && prune)
      j = dlogit_columns<true, true>(row, x, dx, j, n, flags);
    else if (stream)
      j = dlogit_columns<false, true>(row, x, dx, j, n, flags);
    else if (prune)
      j = dlogit_columns<true, false>(row, x, dx, j, n, flags);
    else
      j = dlogit_columns<false, false>(row, x, dx, j, n, flags);
    if (j < n) store_first<Out>(dx + j, n - j, softmax_dlogit<true>(row, load_first<S>(x + j, n - j, x[j]), flags));
    if (stream) V::fence();  // the non-temporal stores ordered before the caller's next stores
    return V::any_nan(flags);
  }
  // The full groups of sixteen columns from j; returns the first column not written.
  template <bool Prune, bool Stream, class S, class Out>
  GRPOKIT_SIMD_INLINE static std::int64_t dlogit_columns(const dlogit_row& row, const S* x, Out* dx, std::int64_t j,
                                                         std::int64_t n, vec& flags) {
    for (; j + 16 <= n; j += 16) {
      const vec d = softmax_dlogit<Prune>(row, V::template load<S>(x + j), flags);
      if constexpr (Stream)
        V::template stream<Out>(dx + j, d);
      else
        V::template store<Out>(dx + j, d);
    }
    return j;
  }

  // For the tests: the loads and stores of the storage types, and the exp above, over n values.
  template <class S>
  GRPOKIT_SIMD_ENTRY static void load_values(const S* x, float* y, std::int64_t n) {
    std::int64_t j = 0;
    for (; j + 16 <= n; j += 16) V::template store<float>(y + j, V::template load<S>(x + j));
    if (j < n) store_first<float>(y + j, n - j, load_first<S>(x + j, n - j, x[j]));
  }
  template <class Out>
  GRPOKIT_SIMD_ENTRY static void store_values(const float* x, Out* y, std::int64_t n) {
    std::int64_t j = 0;
    for (; j + 16 <= n; j += 16) V::template store<Out>(y + j, V::template load<float>(x + j));
    if (j < n) store_first<Out>(y + j, n - j, load_first<float>(x + j, n - j, x[j]));
  }
  GRPOKIT_SIMD_ENTRY static void exp_values(const float* x, float* y, std::int64_t n) {
    std::int64_t j = 0;
    for (; j + 16 <= n; j += 16) V::template store<float>(y + j, exp_fma(V::template load<float>(x + j)));
    if (j < n) store_first<float>(y + j, n - j, exp_fma(load_first<float>(x + j, n - j, 0.f)));
  }
};
