// A downstream program: computes advantages through grpokit::grpokit.
#include <cstdio>
#include <vector>

#include <grpokit/grpokit.hpp>

int main() {
  using P = grpokit::policy<grpokit::baseline::leave_one_out>;
  std::vector<float> rewards{1, 0, 0}, adv(3);
  std::vector<std::int64_t> offsets{0, 3};
  std::vector<std::uint8_t> keep(3);
  grpokit::host::compute_advantages<P>({rewards, offsets, {}, {}}, {}, {adv, keep});
  std::printf("consumer ok: %.3f %.3f %.3f\n", adv[0], adv[1], adv[2]);
  return adv[0] > 0 && adv[1] < 0 ? 0 : 1;
}
