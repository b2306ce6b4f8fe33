// Feature-only backward of 3DGS alpha blending, as a small matrix product per tile.
//
// For channels whose blending weights are constants (the segmentation features of
// render(..., feature_geometry_grad=False)), the gradient of Gaussian g's feature is
//     dL/df_g = sum over pixels p of w_gp * dL/dimg_p,   w_gp = alpha_gp * T_gp,
// a product of the sparse weight matrix W^T with the output gradient V. gsplat's backward kernel
// computes it (and every geometry gradient, which these channels discard) with one warp reduction
// per channel and Gaussian. Here each 16x16 tile recomputes the weights of a batch of 32 Gaussians
// front to back exactly as gsplat's forward does (same formulas, thresholds and early stop), keeps
// them in shared memory with the tile's output gradient, and multiplies: 32 x 256 weights times
// 256 x CP gradients, four (CP = 32) or eight (CP = 64) outputs per thread, then one atomicAdd per
// nonzero (Gaussian, channel). No geometry gradients, no per-channel warp reductions.
//
// SPARSE (``--feature_backward tile_sparse``): the product runs over the batch's active pixels only,
// those with a nonzero weight for at least one of its Gaussians (compacted in pixel order with warp
// ballots). Small Gaussians cover a few pixels of a tile and pixels stop early, so most of the 256
// columns of a batch are zero; the skipped terms are exact zeros and the order of the others is
// kept, so the result is bit-identical to the dense product's.
//
// Layout (one camera): means2d [N, 2], conics [N, 3], opacities [N] float32; tile_offsets
// [tile_height * tile_width] int32 and flatten_ids [n_isects] int32 from gsplat's isect_tiles /
// isect_offset_encode; v_render: the output gradient, pixel p's channel c at v_render[p * v_stride + c]
// (c < C); v_feat float32, zeroed by the caller, receives the gradient: Gaussian g's channel c at
// v_feat[g * out_stride + c] (out_stride >= C; C for an [N, C] block, wider to write the feature columns of
// the whole colour gradient in place, so the caller never concatenates).
#include <cstdint>
#include <cuda_runtime.h>

namespace {

constexpr int TILE = 16;
constexpr int BLOCK = TILE * TILE;  // pixels (threads) per tile
constexpr int BATCH = 32;           // Gaussians per shared-memory batch
constexpr int WSTRIDE = BLOCK + 1;  // padded row of the weight matrix: no bank conflicts in the product
constexpr float ALPHA_MIN = 1.f / 255.f;

// After a batch's weights are in W (and each thread knows whether its pixel had a nonzero one, ``any``):
// the batch's rows of W^T times the tile's output gradient V, added to out[gid[r] * out_stride + c] for the
// C channels. Thread tr computes row r = tr / 8, channels c0 .. c0 + CP / 8 - 1. SPARSE: over the pixels with
// a nonzero weight only (compacted in pixel order with warp ballots; the skipped terms are exact zeros).
// Every thread of the block calls it (it holds barriers).
template <int CP, bool SPARSE>
__device__ __forceinline__ void add_batch_product(const float *W, const float *V, int *active, int *warp_active,
                                                  bool any, const int32_t *gid, int n, float *out, int out_stride,
                                                  int C, int tr) {
    constexpr int PER = CP / 8;
    const int r = tr >> 3;
    const int c0 = (tr & 7) * PER;
    int n_active = BLOCK;
    if (SPARSE) {
        const int lane = tr & 31, warp = tr >> 5;
        const unsigned ballot = __ballot_sync(0xffffffffu, any);
        if (lane == 0) {
            warp_active[warp] = __popc(ballot);
        }
        __syncthreads();
        int offset = 0;
        n_active = 0;
#pragma unroll
        for (int k = 0; k < BLOCK / 32; ++k) {
            offset += k < warp ? warp_active[k] : 0;
            n_active += warp_active[k];
        }
        if (any) {
            active[offset + __popc(ballot & ((1u << lane) - 1u))] = tr;
        }
    }
    __syncthreads();
    float acc[PER];
#pragma unroll
    for (int k = 0; k < PER; ++k) {
        acc[k] = 0.f;
    }
    const float *wrow = W + r * WSTRIDE;
    for (int q = 0; q < n_active; ++q) {
        const int p = SPARSE ? active[q] : q;
        const float w = wrow[p];
        const float *v = V + p * CP + c0;
#pragma unroll
        for (int k = 0; k < PER; ++k) {
            acc[k] = fmaf(w, v[k], acc[k]);
        }
    }
    if (r < n) {
        float *row = out + (size_t)gid[r] * out_stride;
#pragma unroll
        for (int k = 0; k < PER; ++k) {
            if (c0 + k < C && acc[k] != 0.f) {
                atomicAdd(row + c0 + k, acc[k]);
            }
        }
    }
}

template <int CP, bool SPARSE>
__global__ void feature_bwd_kernel(const float *__restrict__ means2d, const float *__restrict__ conics,
                                   const float *__restrict__ opacities, const int32_t *__restrict__ tile_offsets,
                                   const int32_t *__restrict__ flatten_ids, int n_isects,
                                   const float *__restrict__ v_render, int v_stride, int C,
                                   float *__restrict__ v_feat, int out_stride, int width, int height, int tile_width,
                                   int tile_height) {
    extern __shared__ float smem[];
    float *W = smem;                                  // [BATCH][WSTRIDE] weights of the batch on each pixel
    float *V = W + BATCH * WSTRIDE;                   // [BLOCK][CP] output gradient of the tile's pixels
    float *xyo = V + BLOCK * CP;                      // [BATCH][3] mean x, mean y, opacity
    float *con = xyo + BATCH * 3;                     // [BATCH][3] conic
    int32_t *gid = reinterpret_cast<int32_t *>(con + BATCH * 3);  // [BATCH] Gaussian ids
    __shared__ int active[SPARSE ? BLOCK : 1];  // SPARSE: the batch's active pixels, in pixel order
    __shared__ int warp_active[BLOCK / 32];     // SPARSE: active pixels per warp

    const int tile_id = blockIdx.y * tile_width + blockIdx.x;
    const int tr = threadIdx.y * TILE + threadIdx.x;
    const int i = blockIdx.y * TILE + threadIdx.y;
    const int j = blockIdx.x * TILE + threadIdx.x;
    const bool inside = i < height && j < width;
    const float px = (float)j + 0.5f, py = (float)i + 0.5f;

    // the tile's output gradient, zero-padded to CP channels and zero outside the image
    for (int c = 0; c < CP; ++c) {
        V[tr * CP + c] = (inside && c < C) ? v_render[(size_t)(i * width + j) * v_stride + c] : 0.f;
    }

    const int range_start = tile_offsets[tile_id];
    const int range_end = tile_id == tile_width * tile_height - 1 ? n_isects : tile_offsets[tile_id + 1];
    float T = 1.f;
    bool done = !inside;

    for (int batch_start = range_start; batch_start < range_end; batch_start += BATCH) {
        if (__syncthreads_count(done) >= BLOCK) {
            break;  // every pixel of the tile has stopped (the forward's early exit)
        }
        const int n = min(BATCH, range_end - batch_start);
        if (tr < n) {
            const int32_t g = flatten_ids[batch_start + tr];
            gid[tr] = g;
            xyo[tr * 3 + 0] = means2d[2 * g];
            xyo[tr * 3 + 1] = means2d[2 * g + 1];
            xyo[tr * 3 + 2] = opacities[g];
            con[tr * 3 + 0] = conics[3 * g];
            con[tr * 3 + 1] = conics[3 * g + 1];
            con[tr * 3 + 2] = conics[3 * g + 2];
        }
        __syncthreads();
        // this pixel's weight for each Gaussian of the batch, front to back as in gsplat's forward
        bool any = false;
        for (int t = 0; t < BATCH; ++t) {
            float w = 0.f;
            if (t < n && !done) {
                const float dx = xyo[t * 3 + 0] - px, dy = xyo[t * 3 + 1] - py;
                const float sigma = 0.5f * (con[t * 3 + 0] * dx * dx + con[t * 3 + 2] * dy * dy) +
                                    con[t * 3 + 1] * dx * dy;
                const float alpha = fminf(0.999f, xyo[t * 3 + 2] * __expf(-sigma));
                if (!(sigma < 0.f || alpha < ALPHA_MIN)) {
                    const float next_T = T * (1.f - alpha);
                    if (next_T <= 1e-4f) {
                        done = true;  // exclusive: this Gaussian does not blend into the pixel
                    } else {
                        w = alpha * T;
                        T = next_T;
                    }
                }
            }
            W[t * WSTRIDE + tr] = w;
            any |= w != 0.f;
        }
        add_batch_product<CP, SPARSE>(W, V, active, warp_active, any, gid, n, v_feat, out_stride, C, tr);
        // the next batch's __syncthreads_count orders these reads before W, gid and active are rewritten
    }
}

// Fused backward (``--feature_backward fused``): ONE walk over each tile's Gaussians, back to front, gives
// both gsplat's geometry backward for the GEO colour channels (and alpha) and the detached feature
// channels' product. Per pixel, the Gaussians behind the current one have left T (the transmittance in
// front of them, divided back out one Gaussian at a time from T_final = 1 - alpha) and S (their
// accumulated geometry colour); per (pixel, Gaussian) with blending weight w = alpha * T:
//   dL/dc_geo += w * v_geo,   dL/dalpha = sum_k (c_k T - S_k / (1 - alpha)) v_k
//                                         + T_final / (1 - alpha) * (v_alpha - bg . v_geo),
// and, where alpha was not clamped at 0.999, dL/dsigma = -o e^-sigma dL/dalpha, from which the conic's
// and the 2D mean's gradients follow, and dL/do = e^-sigma dL/dalpha. These are reduced across each warp
// and added once per warp. The weights w also go to shared memory, and after each batch of 32 Gaussians
// the feature gradient is the tile kernel's sparse product of those weights with the features' output
// gradient. So the weights are computed once, not once for the geometry and again for the features.
// Layout: colors [N, D] with the GEO geometry channels first, then F <= 32 feature channels; v_render
// [H * W, D]; render_alphas [H * W] and last_ids [H * W] from gsplat's forward; v_colors [N, D],
// v_means2d [N, 2], v_conics [N, 3], v_opacities [N], zeroed by the caller.
constexpr int GEO = 3;
constexpr int FUSED_CP = 32;

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        x += __shfl_down_sync(0xffffffffu, x, offset);
    }
    return x;
}

__global__ void fused_bwd_kernel(const float *__restrict__ means2d, const float *__restrict__ conics,
                                 const float *__restrict__ opacities, const float *__restrict__ colors, int D,
                                 int F, const float *__restrict__ background, const int32_t *__restrict__ tile_offsets,
                                 const int32_t *__restrict__ flatten_ids, int n_isects,
                                 const float *__restrict__ render_alphas, const int32_t *__restrict__ last_ids,
                                 const float *__restrict__ v_render, const float *__restrict__ v_render_alphas,
                                 float *__restrict__ v_means2d, float *__restrict__ v_conics,
                                 float *__restrict__ v_opacities, float *__restrict__ v_colors, int width, int height,
                                 int tile_width, int tile_height) {
    constexpr int CP = FUSED_CP;
    extern __shared__ float smem[];
    float *W = smem;                                  // [BATCH][WSTRIDE] weights of the batch on each pixel
    float *V = W + BATCH * WSTRIDE;                   // [BLOCK][CP] the features' output gradient
    float *xyo = V + BLOCK * CP;                      // [BATCH][3] mean x, mean y, opacity
    float *con = xyo + BATCH * 3;                     // [BATCH][3] conic
    float *rgb = con + BATCH * 3;                     // [BATCH][GEO] geometry colour
    int32_t *gid = reinterpret_cast<int32_t *>(rgb + BATCH * GEO);  // [BATCH] Gaussian ids
    __shared__ int active[BLOCK];
    __shared__ int warp_active[BLOCK / 32];

    const int tile_id = blockIdx.y * tile_width + blockIdx.x;
    const int tr = threadIdx.y * TILE + threadIdx.x;
    const int lane = tr & 31;
    const int i = blockIdx.y * TILE + threadIdx.y;
    const int j = blockIdx.x * TILE + threadIdx.x;
    const bool inside = i < height && j < width;
    const size_t pix = inside ? (size_t)i * width + j : 0;
    const float px = (float)j + 0.5f, py = (float)i + 0.5f;

    for (int c = 0; c < CP; ++c) {
        V[tr * CP + c] = (inside && c < F) ? v_render[pix * D + GEO + c] : 0.f;
    }
    float v_geo[GEO], S[GEO], bg_dot = 0.f;
#pragma unroll
    for (int k = 0; k < GEO; ++k) {
        v_geo[k] = inside ? v_render[pix * D + k] : 0.f;
        S[k] = 0.f;
        bg_dot += background != nullptr ? background[k] * v_geo[k] : 0.f;
    }
    const float T_final = inside ? 1.f - render_alphas[pix] : 1.f;
    const float v_a = inside ? v_render_alphas[pix] : 0.f;
    const int bin_final = inside ? last_ids[pix] : -1;  // the last Gaussian (isect index) that blended here
    float T = T_final;

    const int range_start = tile_offsets[tile_id];
    const int range_end = tile_id == tile_width * tile_height - 1 ? n_isects : tile_offsets[tile_id + 1];
    // batches of 32 from the back: slot t of a batch holds isect index batch_end - t
    for (int batch_end = range_end - 1; batch_end >= range_start; batch_end -= BATCH) {
        const int n = min(BATCH, batch_end + 1 - range_start);
        // no pixel of the tile reaches this batch (each stops at its bin_final): nothing to do
        if (!__syncthreads_or(bin_final >= batch_end - n + 1)) {
            continue;
        }
        if (tr < n) {
            const int32_t g = flatten_ids[batch_end - tr];
            gid[tr] = g;
            xyo[tr * 3 + 0] = means2d[2 * g];
            xyo[tr * 3 + 1] = means2d[2 * g + 1];
            xyo[tr * 3 + 2] = opacities[g];
            con[tr * 3 + 0] = conics[3 * g];
            con[tr * 3 + 1] = conics[3 * g + 1];
            con[tr * 3 + 2] = conics[3 * g + 2];
#pragma unroll
            for (int k = 0; k < GEO; ++k) {
                rgb[tr * GEO + k] = colors[(size_t)g * D + k];
            }
        }
        __syncthreads();
        bool any = false;
        for (int t = 0; t < BATCH; ++t) {
            bool valid = t < n && batch_end - t <= bin_final;  // bin_final is -1 outside the image
            float alpha = 0.f, vis = 0.f, opac = 0.f, dx = 0.f, dy = 0.f;
            if (valid) {
                dx = xyo[t * 3 + 0] - px;
                dy = xyo[t * 3 + 1] - py;
                const float sigma = 0.5f * (con[t * 3 + 0] * dx * dx + con[t * 3 + 2] * dy * dy) +
                                    con[t * 3 + 1] * dx * dy;
                opac = xyo[t * 3 + 2];
                vis = __expf(-sigma);
                alpha = fminf(0.999f, opac * vis);
                valid = !(sigma < 0.f || alpha < ALPHA_MIN);
            }
            float w = 0.f;
            float g_rgb[GEO] = {0.f, 0.f, 0.f}, g_con[3] = {0.f, 0.f, 0.f}, g_xy[2] = {0.f, 0.f}, g_op = 0.f;
            if (valid) {
                const float ra = 1.f / (1.f - alpha);
                T *= ra;  // the transmittance in front of this Gaussian
                w = alpha * T;
                float v_alpha = T_final * ra * (v_a - bg_dot);
#pragma unroll
                for (int k = 0; k < GEO; ++k) {
                    g_rgb[k] = w * v_geo[k];
                    v_alpha += (rgb[t * GEO + k] * T - S[k] * ra) * v_geo[k];
                    S[k] += rgb[t * GEO + k] * w;
                }
                if (opac * vis <= 0.999f) {  // alpha not clamped: it moves with sigma and the opacity
                    const float v_sigma = -opac * vis * v_alpha;
                    g_con[0] = 0.5f * v_sigma * dx * dx;
                    g_con[1] = v_sigma * dx * dy;
                    g_con[2] = 0.5f * v_sigma * dy * dy;
                    g_xy[0] = v_sigma * (con[t * 3 + 0] * dx + con[t * 3 + 1] * dy);
                    g_xy[1] = v_sigma * (con[t * 3 + 1] * dx + con[t * 3 + 2] * dy);
                    g_op = vis * v_alpha;
                }
            }
            W[t * WSTRIDE + tr] = w;
            any |= w != 0.f;
            if (__any_sync(0xffffffffu, valid)) {  // one atomic add per warp and value
#pragma unroll
                for (int k = 0; k < GEO; ++k) {
                    g_rgb[k] = warp_sum(g_rgb[k]);
                }
#pragma unroll
                for (int k = 0; k < 3; ++k) {
                    g_con[k] = warp_sum(g_con[k]);
                }
                g_xy[0] = warp_sum(g_xy[0]);
                g_xy[1] = warp_sum(g_xy[1]);
                g_op = warp_sum(g_op);
                if (lane == 0) {
                    const int32_t g = gid[t];
#pragma unroll
                    for (int k = 0; k < GEO; ++k) {
                        atomicAdd(v_colors + (size_t)g * D + k, g_rgb[k]);
                    }
#pragma unroll
                    for (int k = 0; k < 3; ++k) {
                        atomicAdd(v_conics + 3 * (size_t)g + k, g_con[k]);
                    }
                    atomicAdd(v_means2d + 2 * (size_t)g, g_xy[0]);
                    atomicAdd(v_means2d + 2 * (size_t)g + 1, g_xy[1]);
                    atomicAdd(v_opacities + g, g_op);
                }
            }
        }
        // the features: the batch's weights times the tile's output gradient, over the active pixels
        add_batch_product<CP, true>(W, V, active, warp_active, any, gid, n, v_colors + GEO, D, F, tr);
        __syncthreads();  // W, gid and active are rewritten by the next batch
    }
}

constexpr size_t fused_dynamic_shared() {
    return sizeof(float) * (BATCH * WSTRIDE + BLOCK * FUSED_CP + BATCH * (6 + GEO)) + sizeof(int32_t) * BATCH;
}

// Shared memory of one block: dynamic (weights, output gradient, the batch's Gaussians) and, for the
// sparse product, the static active-pixel list.
constexpr size_t dynamic_shared(int cp) {
    return sizeof(float) * (BATCH * WSTRIDE + BLOCK * cp + BATCH * 6) + sizeof(int32_t) * BATCH;
}
constexpr size_t STATIC_SHARED = sizeof(int) * (BLOCK + BLOCK / 32);

template <int CP, bool SPARSE>
cudaError_t launch(const float *means2d, const float *conics, const float *opacities, const int32_t *tile_offsets,
                   const int32_t *flatten_ids, int n_isects, const float *v_render, int v_stride, int C,
                   float *v_feat, int out_stride, int width, int height, int tile_width, int tile_height,
                   cudaStream_t stream) {
    const size_t shared = dynamic_shared(CP);
    cudaError_t err = cudaFuncSetAttribute(feature_bwd_kernel<CP, SPARSE>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           (int)shared);
    if (err != cudaSuccess) {
        return err;
    }
    const dim3 grid(tile_width, tile_height), block(TILE, TILE);
    feature_bwd_kernel<CP, SPARSE><<<grid, block, shared, stream>>>(
        means2d, conics, opacities, tile_offsets, flatten_ids, n_isects, v_render, v_stride, C, v_feat, out_stride,
        width, height, tile_width, tile_height);
    return cudaGetLastError();
}

}  // namespace

// C entry point (ctypes): returns a cudaError_t code (0 = success); 1000 = unsupported arguments.
// sparse != 0: the product over each batch's active pixels only (bit-identical result).
extern "C" int unic_feature_bwd(const float *means2d, const float *conics, const float *opacities,
                                const int32_t *tile_offsets, const int32_t *flatten_ids, int n_isects,
                                const float *v_render, int v_stride, int C, float *v_feat, int out_stride,
                                int width, int height,
                                int tile_size, int tile_width, int tile_height, void *stream, int sparse) {
    if (tile_size != TILE || C < 1 || C > 64 || v_stride < C || out_stride < C) {
        return 1000;
    }
    if (n_isects == 0 || tile_width * tile_height == 0) {
        return 0;
    }
    const cudaStream_t s = static_cast<cudaStream_t>(stream);
#define UNIC_LAUNCH(CP, SP)                                                                                       \
    return (int)launch<CP, SP>(means2d, conics, opacities, tile_offsets, flatten_ids, n_isects, v_render, v_stride, \
                               C, v_feat, out_stride, width, height, tile_width, tile_height, s)
    if (C <= 32) {
        if (sparse) {
            UNIC_LAUNCH(32, true);
        }
        UNIC_LAUNCH(32, false);
    }
    if (sparse) {
        UNIC_LAUNCH(64, true);
    }
    UNIC_LAUNCH(64, false);
#undef UNIC_LAUNCH
}

// C entry point of the fused backward (ctypes); returns a cudaError_t code, 1000 = unsupported arguments.
// background: [GEO] or null.
extern "C" int unic_fused_bwd(const float *means2d, const float *conics, const float *opacities, const float *colors,
                              int D, int F, const float *background, const int32_t *tile_offsets,
                              const int32_t *flatten_ids, int n_isects, const float *render_alphas,
                              const int32_t *last_ids, const float *v_render, const float *v_render_alphas,
                              float *v_means2d, float *v_conics, float *v_opacities, float *v_colors, int width,
                              int height, int tile_size, int tile_width, int tile_height, void *stream) {
    if (tile_size != TILE || F < 1 || F > FUSED_CP || D != GEO + F) {
        return 1000;
    }
    if (n_isects == 0 || tile_width * tile_height == 0) {
        return 0;
    }
    const size_t shared = fused_dynamic_shared();
    cudaError_t err = cudaFuncSetAttribute(fused_bwd_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shared);
    if (err != cudaSuccess) {
        return (int)err;
    }
    const dim3 grid(tile_width, tile_height), block(TILE, TILE);
    fused_bwd_kernel<<<grid, block, shared, static_cast<cudaStream_t>(stream)>>>(
        means2d, conics, opacities, colors, D, F, background, tile_offsets, flatten_ids, n_isects, render_alphas,
        last_ids, v_render, v_render_alphas, v_means2d, v_conics, v_opacities, v_colors, width, height, tile_width,
        tile_height);
    return (int)cudaGetLastError();
}

// The most channels the kernel takes on ``device``: 64, 32, or 0 when a block's shared memory (opt-in
// maximum) holds neither width (e.g. 64 KB on Turing); -1 when the device cannot be queried.
extern "C" int unic_feature_bwd_max_channels(int device) {
    int optin = 0;
    if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess) {
        return -1;
    }
    if (dynamic_shared(64) + STATIC_SHARED <= (size_t)optin) {
        return 64;
    }
    return dynamic_shared(32) + STATIC_SHARED <= (size_t)optin ? 32 : 0;
}

// Whether the fused kernel's block (fused_dynamic_shared() + STATIC_SHARED bytes) fits ``device``'s shared memory:
// 1 yes, 0 no, -1 when the device cannot be queried.
extern "C" int unic_fused_bwd_fits(int device) {
    int optin = 0;
    if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess) {
        return -1;
    }
    return fused_dynamic_shared() + STATIC_SHARED <= (size_t)optin ? 1 : 0;
}

extern "C" const char *unic_feature_bwd_error(int code) {
    return code == 1000 ? "unsupported arguments (tile size 16, 1..64 channels)" : cudaGetErrorString((cudaError_t)code);
}
