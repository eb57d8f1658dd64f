// The weight gradient of a depthwise convolution on the CPU (fp32, channels-last): for each
// channel c and tap (i, j), the sum over images and output positions of the input under the tap
// times the output gradient. Each thread takes a fixed block of output rows; for each block of
// channels and row of taps it sums over all its rows in registers (contiguous, vectorised
// multiply-adds over channels), then adds them into its own accumulator once.
// Built at first use by torch.utils.cpp_extension (roadmap/models/depthwise.py), which falls
// back to PyTorch's own kernel where it cannot be built.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>

namespace {

struct Geometry {
  int64_t C, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw;
};

constexpr int64_t L = 16;  // channels a vector holds (AVX-512; two AVX2 registers)
typedef float vec16 __attribute__((vector_size(16 * sizeof(float))));
typedef float vec8 __attribute__((vector_size(8 * sizeof(float))));

template <typename V>
static inline __attribute__((always_inline)) V load(const float* p) {
  V v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

// The input row that tap row i reads for output row r (image r / Ho, output row r % Ho), or
// nullptr where it falls in the padding.
static inline __attribute__((always_inline)) const float* input_row(
    const float* X, const Geometry& q, int64_t i, int64_t r) {
  const int64_t n = r / q.Ho, h = (r % q.Ho) * q.sh + i - q.ph;
  return h < 0 || h >= q.H ? nullptr : X + (n * q.H + h) * q.W * q.C;
}

// Taps (i, 0..KW-1) of the channels [c0, c0 + lanes of V) over output rows [r0, r1) (row r:
// image r / Ho, output row r % Ho): KW accumulators held in registers across all the rows and
// added to acc once, the output gradient loaded once per column; the columns where every tap
// meets the input run without a bounds check.
template <int64_t KW, typename V>
static inline __attribute__((always_inline)) void taps_block(
    float* acc, const float* X, const float* G, const Geometry& q, int64_t i, int64_t c0,
    int64_t r0, int64_t r1) {
  constexpr int64_t lanes = sizeof(V) / sizeof(float);
  const int64_t C = q.C;
  V a[KW] = {};
  // interior: wo * sw - pw >= 0 and wo * sw - pw + KW - 1 < W
  const int64_t lo = (q.pw + q.sw - 1) / q.sw;
  const int64_t hi_edge = q.W - KW + q.pw;  // wo * sw <= hi_edge
  const int64_t hi = hi_edge < 0 ? -1 : std::min(q.Wo - 1, hi_edge / q.sw);
  for (int64_t r = r0; r < r1; ++r) {
    const float* xrow = input_row(X, q, i, r);
    if (xrow == nullptr) continue;
    const float* grow = G + r * q.Wo * C;
    for (int64_t wo = 0; wo < q.Wo; ++wo) {
      const V g = load<V>(grow + wo * C + c0);
      const int64_t base = wo * q.sw - q.pw;
      if (wo >= lo && wo <= hi) {
        const float* x = xrow + base * C + c0;
#pragma GCC unroll 16
        for (int64_t j = 0; j < KW; ++j) a[j] += load<V>(x + j * C) * g;
      } else {
        for (int64_t j = 0; j < KW; ++j) {
          const int64_t wi = base + j;
          if (wi >= 0 && wi < q.W) a[j] += load<V>(xrow + wi * C + c0) * g;
        }
      }
    }
  }
  for (int64_t j = 0; j < KW; ++j) {
    float* out = acc + (i * q.kw + j) * C + c0;
    for (int64_t c = 0; c < lanes; ++c) out[c] += a[j][c];
  }
}

// The taps of channels [c0, C) over output rows [r0, r1), one channel at a time (any kernel
// width).
static inline void taps_scalar(float* acc, const float* X, const float* G, const Geometry& q,
                               int64_t i, int64_t c0, int64_t r0, int64_t r1) {
  const int64_t C = q.C;
  for (int64_t r = r0; r < r1; ++r) {
    const float* xrow = input_row(X, q, i, r);
    if (xrow == nullptr) continue;
    const float* grow = G + r * q.Wo * C;
    for (int64_t j = 0; j < q.kw; ++j) {
      float* out = acc + (i * q.kw + j) * C;
      for (int64_t wo = 0; wo < q.Wo; ++wo) {
        const int64_t wi = wo * q.sw - q.pw + j;
        if (wi < 0 || wi >= q.W) continue;
        for (int64_t c = c0; c < C; ++c) out[c] += xrow[wi * C + c] * grow[wo * C + c];
      }
    }
  }
}

template <typename V>
static inline __attribute__((always_inline)) bool taps(
    float* acc, const float* X, const float* G, const Geometry& q, int64_t i, int64_t c0,
    int64_t r0, int64_t r1) {
  switch (q.kw) {
    case 1: taps_block<1, V>(acc, X, G, q, i, c0, r0, r1); return true;
    case 3: taps_block<3, V>(acc, X, G, q, i, c0, r0, r1); return true;
    case 5: taps_block<5, V>(acc, X, G, q, i, c0, r0, r1); return true;
    case 7: taps_block<7, V>(acc, X, G, q, i, c0, r0, r1); return true;
    case 9: taps_block<9, V>(acc, X, G, q, i, c0, r0, r1); return true;
    case 11: taps_block<11, V>(acc, X, G, q, i, c0, r0, r1); return true;
    default: return false;
  }
}

// Adds output rows [r0, r1)'s share into acc (kh, kw, C), in chunks of rows whose input and
// output gradient stay in cache: within a chunk, channel block by channel block and tap row by
// tap row, so that each block's accumulators stay in registers over the chunk's rows.
__attribute__((target_clones("avx512f", "avx2", "default")))
void add_rows(float* acc, const float* X, const float* G, const Geometry& q, int64_t r0,
              int64_t r1, int64_t chunk) {
  const int64_t C = q.C;
  for (int64_t c_r0 = r0; c_r0 < r1; c_r0 += chunk) {
    const int64_t c_r1 = std::min(r1, c_r0 + chunk);
    for (int64_t i = 0; i < q.kh; ++i) {
      int64_t c0 = 0;
      for (; c0 + 16 <= C; c0 += 16) {
        if (!taps<vec16>(acc, X, G, q, i, c0, c_r0, c_r1)) break;
      }
      for (; c0 + 8 <= C; c0 += 8) {
        if (!taps<vec8>(acc, X, G, q, i, c0, c_r0, c_r1)) break;
      }
      if (c0 < C) taps_scalar(acc, X, G, q, i, c0, c_r0, c_r1);
    }
  }
}

}  // namespace

// x: (N, C, H, W), grad: (N, C, Ho, Wo), both read channels-last; returns (C, 1, kh, kw).
torch::Tensor weight_grad(const torch::Tensor& x, const torch::Tensor& grad, int64_t kh,
                          int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && grad.scalar_type() == at::kFloat,
              "depthwise weight_grad: fp32 only");
  auto xs = x.contiguous(at::MemoryFormat::ChannelsLast);
  auto gs = grad.contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Ho = grad.size(2), Wo = grad.size(3);
  const float* X = xs.data_ptr<float>();
  const float* G = gs.data_ptr<float>();
  const int64_t rows = N * Ho, taps = kh * kw * C;
  const Geometry q{C, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw};
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), rows));
  auto partial = torch::zeros({threads, kh, kw, C}, x.options());
  float* P = partial.data_ptr<float>();
  // one fixed block of rows per accumulator: the sums' order depends on the thread count only
  const int64_t block = (rows + threads - 1) / threads;
  // rows per chunk: about 256 KB of output gradient and input rows (a core's L2 holds them)
  const int64_t chunk = std::max<int64_t>(
      1, (256 * 1024) / (static_cast<int64_t>(sizeof(float)) * C * (Wo + W * sh)));
  at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      add_rows(P + t * taps, X, G, q, t * block, std::min(rows, (t + 1) * block), chunk);
    }
  });
  return partial.sum(0).permute({2, 0, 1}).unsqueeze(1).contiguous();
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("weight_grad", &weight_grad, "depthwise conv weight gradient (CPU, fp32)");
}
