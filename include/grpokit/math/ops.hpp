#pragma once
// The two arithmetic flavours of the row reductions. `platform_ops` uses the platform's exp/log
// and lets the compiler schedule freely (fast, deterministic); `invariant_ops` uses grpokit's own
// exp/log and non-contractible operations (batch_invariant: host == device, bit for bit).
#include <cmath>

#include "exp_log.hpp"
#include "rounding.hpp"

namespace grpokit::math {

struct platform_ops {
  template <class R>
  GRPOKIT_HD static R exp(R x) { return std::exp(x); }
  template <class R>
  GRPOKIT_HD static R log(R x) { return std::log(x); }
  template <class R>
  GRPOKIT_HD static R add(R a, R b) { return a + b; }
  template <class R>
  GRPOKIT_HD static R sub(R a, R b) { return a - b; }
  template <class R>
  GRPOKIT_HD static R mul(R a, R b) { return a * b; }
  template <class R>
  GRPOKIT_HD static R div(R a, R b) { return a / b; }
};

struct invariant_ops {
  template <class R>
  GRPOKIT_HD static R exp(R x) { return exp_bi(x); }
  template <class R>
  GRPOKIT_HD static R log(R x) { return log_bi(x); }
  template <class R>
  GRPOKIT_HD static R add(R a, R b) { return add_rn(a, b); }
  template <class R>
  GRPOKIT_HD static R sub(R a, R b) { return sub_rn(a, b); }
  template <class R>
  GRPOKIT_HD static R mul(R a, R b) { return mul_rn(a, b); }
  template <class R>
  GRPOKIT_HD static R div(R a, R b) { return div_rn(a, b); }
};

}  // namespace grpokit::math
