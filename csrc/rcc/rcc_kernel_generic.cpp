// Baseline-ISA instance of the encoder hot loop (see rcc_cpu_kernel.h).
#include "rcc/rcc_cpu.h"
#include "rcc/rcc_cpu_kernel.h"

namespace rcc {
namespace cpu {

void log_weights_generic(const float* mu_lay, int64_t n_blocks, uint32_t k_begin, uint32_t k_end,
                         uint32_t key0, uint32_t key1, uint32_t step, uint32_t stream, float* out) {
  log_weights_impl(mu_lay, n_blocks, k_begin, k_end, key0, key1, step, stream, out);
}

}  // namespace cpu
}  // namespace rcc
