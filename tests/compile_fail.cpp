// Each GRPOKIT_CASE_* must fail to compile with the message the CMake test expects.
#include <grpokit/grpokit.hpp>

struct not_a_policy_arg {};
struct baseline_without_center {
  using policy_axis = grpokit::axis::baseline;
};
struct mask_without_keep {
  using policy_axis = grpokit::axis::mask;
};

#if defined(GRPOKIT_CASE_not_a_policy)
using P = grpokit::policy<not_a_policy_arg>;
#elif defined(GRPOKIT_CASE_two_baselines)
using P = grpokit::policy<grpokit::baseline::mean, grpokit::baseline::median>;
#elif defined(GRPOKIT_CASE_two_masks)
using P = grpokit::policy<grpokit::mask::padding, grpokit::mask::trust_region>;
#elif defined(GRPOKIT_CASE_bad_chunk)
using P = grpokit::policy<grpokit::chunk<1000>>;
#elif defined(GRPOKIT_CASE_bad_accum)
using P = grpokit::policy<grpokit::precision<float, int>>;
#elif defined(GRPOKIT_CASE_narrow_accum)
using P = grpokit::policy<grpokit::precision<double, float>>;
#elif defined(GRPOKIT_CASE_baseline_without_center)
using P = grpokit::policy<baseline_without_center>;
#elif defined(GRPOKIT_CASE_mask_without_keep)
using P = grpokit::policy<mask_without_keep>;
#elif defined(GRPOKIT_CASE_raw_type_as_policy)
using P = grpokit::baseline::mean;
#endif

int main() {
  std::vector<float> r{1, 0}, adv(2);
  std::vector<std::int64_t> off{0, 2};
  std::vector<std::uint8_t> keep(2);
  grpokit::host::compute_advantages<P>({r, off, {}, {}}, {}, {adv, keep});
  return 0;
}
