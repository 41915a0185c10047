// The NCCL communicator on real GPUs: one process opens a communicator over min(GPUs, 4) devices
// (ncclCommInitAll: one rank per GPU, NCCL refuses two ranks on one device) and
//  1. gathers a rank-stamped array through nccl_communicator on each rank's stream, with no host
//     synchronisation inside the gather: every rank's array in rank order;
//  2. runs the data-parallel device::policy_loss (device/distributed.cuh) through it, a host thread
//     per rank, each rank holding a random run of the sequences: the loss and metrics bitwise the
//     one-process device call over the whole batch (batch_invariant), dlogp of its tokens too.
// Exit 77 (skipped) without a GPU.
#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include <grpokit/comm/nccl.cuh>
#include <grpokit/device/distributed.cuh>

#define CHECK_CUDA(x)                                                                              \
  do {                                                                                             \
    const cudaError_t e = (x);                                                                     \
    if (e != cudaSuccess) {                                                                        \
      std::printf("%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e));               \
      return 1;                                                                                    \
    }                                                                                              \
  } while (0)

static_assert(grpokit::detail::is_communicator<grpokit::nccl_communicator>::value,
              "nccl_communicator models the communicator concept (on device buffers)");


namespace {

template <class T>
T* to_device(const std::vector<T>& h) {
  T* d = nullptr;
  if (cudaMalloc(&d, (h.empty() ? 1 : h.size()) * sizeof(T)) != cudaSuccess) return nullptr;
  if (!h.empty()) cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice);
  return d;
}
template <class T>
std::vector<T> to_host(const T* d, std::size_t n) {
  std::vector<T> h(n);
  if (n) cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost);
  return h;
}

// One rank's policy_loss inputs on its device: sequences [s0, s1) of the whole batch.
struct rank_batch {
  std::vector<void*> owned;
  grpokit::current_policy<float> cur;
  grpokit::rollout_batch<float> batch;
  grpokit::policy_grads<float> grads;
  template <class T>
  grpokit::span<const T> put(const std::vector<T>& h) {
    T* d = to_device(h);
    owned.push_back(d);
    return {d, static_cast<std::int64_t>(h.size())};
  }
  rank_batch(const std::vector<std::int64_t>& off, const std::vector<float>& tok, const std::vector<float>& seq,
             std::int64_t s0, std::int64_t s1) {
    const std::int64_t t0 = off[s0], t1 = off[s1], T = t1 - t0;
    std::vector<std::int64_t> o;
    for (std::int64_t s = s0; s <= s1; ++s) o.push_back(off[s] - t0);
    auto part = [&](std::int64_t k) { return std::vector<float>(tok.begin() + k * off.back() + t0, tok.begin() + k * off.back() + t1); };
    cur.logp = put(part(0));
    cur.entropy = put(part(1));
    batch.seq_offsets = put(o);
    batch.adv = put(std::vector<float>(seq.begin() + s0, seq.begin() + s1));
    batch.logp_old = put(part(2));
    batch.logp_ref = put(part(3));
    float* dl = nullptr;
    cudaMalloc(&dl, (T > 0 ? T : 1) * sizeof(float));
    owned.push_back(dl);
    grads.dlogp = {dl, T};
  }
  ~rank_batch() {
    for (void* p : owned) cudaFree(p);
  }
};

int data_parallel_policy_loss(const std::vector<ncclComm_t>& the_comms, const std::vector<int>& devices) {
  const int ranks = static_cast<int>(the_comms.size());
  using P = grpokit::policy<grpokit::reduction::batch_invariant, grpokit::precision<float, float>>;
  std::mt19937_64 rng(2026);
  std::uniform_int_distribution<std::int64_t> len(0, 9), cut(0, 13);
  std::vector<std::int64_t> off{0};
  for (int s = 0; s < 13; ++s) off.push_back(off.back() + len(rng));
  const std::int64_t T = off.back(), S = 13;
  std::normal_distribution<float> n(0.f, 0.3f);
  std::vector<float> tok(static_cast<std::size_t>(4 * T)), seq(static_cast<std::size_t>(S));
  for (std::int64_t t = 0; t < T; ++t) {
    tok[t] = -1.5f + n(rng);                   // logp
    tok[T + t] = 2.0f + n(rng);                // entropy
    tok[2 * T + t] = tok[t] + n(rng);          // logp_old
    tok[3 * T + t] = tok[t] + n(rng);          // logp_ref
  }
  for (auto& a : seq) a = 3 * n(rng);
  std::vector<std::int64_t> cuts{0};
  for (int r = 1; r < ranks; ++r) cuts.push_back(cut(rng));
  std::sort(cuts.begin(), cuts.end());
  cuts.push_back(S);
  grpokit::loss_config cfg{};
  cfg.kl = grpokit::kl_estimator::k3;
  cfg.kl_coef = 0.05;
  std::vector<int> mismatches(ranks, 0);
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r)
    threads.emplace_back([&, r] {
      try {
        cudaSetDevice(devices[r]);
        cudaStream_t stream;
        cudaStreamCreate(&stream);
        rank_batch whole(off, tok, seq, 0, S), mine(off, tok, seq, cuts[r], cuts[r + 1]);
        const grpokit::device::shape one{T, 0, S};
        void* ws1 = nullptr;
        const std::size_t b1 = grpokit::device::workspace_bytes<P>(one);
        cudaMalloc(&ws1, b1);
        const auto want = grpokit::device::policy_loss<P>(whole.cur, whole.batch, cfg, whole.grads, ws1, b1, stream);
        std::int64_t most = 0;
        for (int q = 0; q < ranks; ++q) most = std::max(most, cuts[q + 1] - cuts[q]);
        const grpokit::device::shape planned{T, 0, most};
        const auto layout = grpokit::data_parallel(grpokit::nccl_communicator(the_comms[r], stream));
        void* ws = nullptr;
        const std::size_t b = grpokit::device::workspace_bytes<P>(planned, layout);
        cudaMalloc(&ws, b);
        const auto got = grpokit::device::policy_loss<P>(mine.cur, mine.batch, cfg, mine.grads, ws, b, planned, layout, stream);
        mismatches[r] += std::memcmp(&got, &want, sizeof(got)) != 0;
        const auto dw = to_host(whole.grads.dlogp.data(), static_cast<std::size_t>(T));
        const auto dm = to_host(mine.grads.dlogp.data(), static_cast<std::size_t>(mine.grads.dlogp.size()));
        mismatches[r] += std::memcmp(dm.data(), dw.data() + off[cuts[r]], dm.size() * sizeof(float)) != 0;
        cudaFree(ws);
        cudaFree(ws1);
        cudaStreamDestroy(stream);
      } catch (const std::exception& e) {
        std::printf("test_nccl: rank %d: %s\n", r, e.what());
        mismatches[r] += 1;
      }
    });
  for (auto& t : threads) t.join();
  int total = 0;
  for (int m : mismatches) total += m;
  return total;
}

}  // namespace

int main() {
  int gpus = 0;
  if (cudaGetDeviceCount(&gpus) != cudaSuccess || gpus == 0) {
    std::printf("test_nccl: no GPU, skipped\n");
    return 77;
  }
  const int ranks = gpus < 4 ? gpus : 4;
  std::vector<int> devices(ranks);
  for (int r = 0; r < ranks; ++r) devices[r] = r;
  std::vector<ncclComm_t> comms(ranks);
  if (ncclCommInitAll(comms.data(), ranks, devices.data()) != ncclSuccess) {
    std::printf("test_nccl: ncclCommInitAll failed\n");
    return 1;
  }
  constexpr int n = 37;  // doubles per rank
  std::vector<cudaStream_t> streams(ranks);
  std::vector<double*> send(ranks), recv(ranks);
  std::vector<grpokit::nccl_communicator> comm;
  for (int r = 0; r < ranks; ++r) {
    CHECK_CUDA(cudaSetDevice(r));
    CHECK_CUDA(cudaStreamCreate(&streams[r]));
    CHECK_CUDA(cudaMalloc(&send[r], n * sizeof(double)));
    CHECK_CUDA(cudaMalloc(&recv[r], ranks * n * sizeof(double)));
    std::vector<double> mine(n);
    for (int i = 0; i < n; ++i) mine[i] = 1000.0 * r + i;
    CHECK_CUDA(cudaMemcpy(send[r], mine.data(), n * sizeof(double), cudaMemcpyHostToDevice));
    comm.emplace_back(comms[r], streams[r]);
    if (comm.back().rank() != r || comm.back().size() != ranks) {
      std::printf("test_nccl: rank %d of %d reported as %d of %d\n", r, ranks, comm.back().rank(), comm.back().size());
      return 1;
    }
  }
  ncclGroupStart();  // one process drives every rank
  for (int r = 0; r < ranks; ++r) comm[r].all_gather(send[r], recv[r], n * sizeof(double));
  ncclGroupEnd();
  int bad = 0;
  for (int r = 0; r < ranks; ++r) {
    CHECK_CUDA(cudaSetDevice(r));
    CHECK_CUDA(cudaStreamSynchronize(streams[r]));
    std::vector<double> all(static_cast<std::size_t>(ranks) * n);
    CHECK_CUDA(cudaMemcpy(all.data(), recv[r], all.size() * sizeof(double), cudaMemcpyDeviceToHost));
    for (int q = 0; q < ranks; ++q)
      for (int i = 0; i < n; ++i) bad += all[static_cast<std::size_t>(q) * n + i] != 1000.0 * q + i;
    cudaFree(send[r]);
    cudaFree(recv[r]);
    cudaStreamDestroy(streams[r]);
  }
  std::printf("test_nccl: %d rank(s), %d wrong values\n", ranks, bad);
  const int bad_loss = data_parallel_policy_loss(comms, devices);
  for (int r = 0; r < ranks; ++r) ncclCommDestroy(comms[r]);
  std::printf("test_nccl: data-parallel policy_loss on %d rank(s): %d mismatch(es)\n", ranks, bad_loss);
  return bad == 0 && bad_loss == 0 ? 0 : 1;
}
