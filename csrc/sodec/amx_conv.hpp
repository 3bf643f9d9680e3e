// The SODEC fixed-point layer on Intel AMX-INT8 tiles (Impl::kAmx); internal to csrc/sodec.
#pragma once

#include <atomic>
#include <cstdint>

#include "sodec/int_params.hpp"

namespace cod_fast::sodec {

// Whether this CPU and OS run the AMX kernel: AMX-TILE, AMX-INT8 and the AVX-512 subsets the
// packing and the store use (F, BW, VL, DQ, VBMI), and Linux granted the process the tile data
// state (arch_prctl ARCH_REQ_XCOMP_PERM, requested once here). False on other systems.
bool amx_available();

// Fills ph.amx_* from ph.wpair (co output channels, ci input channels). Any CPU may run it.
void amx_prepare_phase(Phase& ph, int64_t ci, int64_t co);

// Test hook: 64-tap steps per exact int32 chunk of the AMX kernel (default 1024, the bound in
// amx_conv.cpp; values below it are exact too). The fuzz driver lowers it to reach the multi-chunk
// int64 path with small layers. Not used in production code.
std::atomic<int64_t>& amx_chunk_steps();

// conv_requant_padded on AMX (same arguments; requires amx_available() and prepared phases).
void conv_amx(const PreparedConv& prep, const int16_t* xp, int64_t h, int64_t w, const int64_t* bias,
              const int64_t* mult, const int64_t* shift, int64_t lo, int64_t hi, const OutView& out,
              int threads, const ScaleIndexer* index, int64_t index_channels);

}  // namespace cod_fast::sodec
