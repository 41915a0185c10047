#pragma once
// Padded [B, L] + mask -> packed (varlen) layout: the tokens of row b whose mask is 1, in order,
// become sequence b. Returns the seq_offsets [B + 1]; `gather` copies any [B, L] per-token array.
#include <cstdint>
#include <limits>
#include <vector>

#include "../detail/validate.hpp"
#include "../span.hpp"

namespace grpokit::host {

struct packing {
  std::vector<std::int64_t> seq_offsets;  // [B + 1]
  std::vector<std::int64_t> source;       // [T] index b * L + l of every packed token
  std::int64_t padded_size = 0;           // B * L: the size of every padded array

  // Packs a padded [B, L] per-token array (e.g. logp_old, targets) along the mask.
  template <class T>
  std::vector<T> gather(span<const T> padded) const {
    detail::require_size("pack_padded gather: padded", padded, padded_size);
    std::vector<T> out(source.size());
    for (std::size_t i = 0; i < source.size(); ++i) out[i] = padded[source[i]];
    return out;
  }
};

inline packing pack_padded(span<const std::uint8_t> mask, std::int64_t batch, std::int64_t length) {
  GRPOKIT_REQUIRE(batch >= 0 && length >= 0, "pack_padded: negative shape [", batch, ", ", length, "]");
  GRPOKIT_REQUIRE(length == 0 || batch <= std::numeric_limits<std::int64_t>::max() / length, "pack_padded: [", batch,
                  ", ", length, "] has more elements than an int64 counts");
  detail::require_size("mask", mask, batch * length);
  packing p;
  p.padded_size = batch * length;
  p.seq_offsets.assign(1, 0);
  for (std::int64_t b = 0; b < batch; ++b) {
    for (std::int64_t l = 0; l < length; ++l)
      if (mask[b * length + l]) p.source.push_back(b * length + l);
    p.seq_offsets.push_back(static_cast<std::int64_t>(p.source.size()));
  }
  return p;
}

}  // namespace grpokit::host
