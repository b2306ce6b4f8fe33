// Small kernels of the training step that replace chains of PyTorch operators (gaussian_renderer/step_ops.py).
//
// 1. Column packing. The render blends one [N, D] block of channels: the SH colour [N, 3], the embedding
//    [N, d] and the semantic logits [N, C] side by side. torch.cat copies such narrow rows with one strided
//    copy per input (0.20 ms for [528k, 32] on an H200, RESULTS.md 22a), and its backward hands out column
//    views whose AccumulateGrad copies are again strided. Here one thread per output element copies the
//    forward, and one thread per gradient element writes every part's contiguous gradient in the backward.
//
// 2. The 3D neighbour loss (Eq. 6), mean_e ||f(v_i) - f(v_j)||^2 over pairs e = (i, j), f = sigmoid or the
//    identity. One kernel reads both rows of each pair once, adds the pair's share of the loss and, when
//    asked, the gradient of the loss with respect to v (2 d f'(v_i) / E and -2 d f'(v_j) / E) into a zeroed
//    [N, D] buffer: about fifteen operators and their autograd nodes become one kernel (plus the backward's
//    multiplication by the incoming gradient).
//
// C entry points for ctypes; each returns a cudaError_t code, 1000 for unsupported arguments.
#include <cstdint>
#include <cuda_runtime.h>

namespace {

constexpr int MAX_PARTS = 4;
constexpr int THREADS = 256;

struct Parts {
    float *ptr[MAX_PARTS];
    int width[MAX_PARTS];
    int start[MAX_PARTS];  // first column of each part in the packed block
    int count;
};

// Where column c of the packed block lives: its part's pointer, width and first column (parts are few: an
// unrolled scan with constant indices, so the kernel's parameter block is never copied to local memory).
struct Column {
    float *ptr;
    int width;
    int start;
};

__device__ __forceinline__ Column column_of(const Parts &p, int c) {
    Column col{p.ptr[0], p.width[0], p.start[0]};
#pragma unroll
    for (int q = 1; q < MAX_PARTS; ++q) {
        if (q < p.count && c >= p.start[q]) {
            col = Column{p.ptr[q], p.width[q], p.start[q]};
        }
    }
    return col;
}

__global__ void pack_fwd_kernel(Parts parts, int64_t n, int D, float *__restrict__ out) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n * D) {
        return;
    }
    const int64_t r = i / D;
    const int c = (int)(i - r * D);
    const Column col = column_of(parts, c);
    out[i] = col.ptr[r * col.width + (c - col.start)];
}

__global__ void pack_bwd_kernel(const float *__restrict__ grad, int64_t n, int D, Parts parts) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n * D) {
        return;
    }
    const int64_t r = i / D;
    const int c = (int)(i - r * D);
    const Column col = column_of(parts, c);
    if (col.ptr != nullptr) {  // a part that needs no gradient is skipped
        col.ptr[r * col.width + (c - col.start)] = grad[i];
    }
}

// One thread per (pair, channel); the block's share of the loss is reduced in shared memory and added once.
__global__ void neighbor_kernel(const float *__restrict__ v, int D, const int32_t *__restrict__ idx, int64_t E,
                                int sigmoid, float inv_e, float *__restrict__ loss, float *__restrict__ grad) {
    __shared__ float partial[THREADS / 32];
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    float sq = 0.f;
    if (t < E * D) {
        const int64_t e = t / D;
        const int c = (int)(t - e * D);
        const int64_t i = idx[2 * e], j = idx[2 * e + 1];
        float a = v[i * D + c], b = v[j * D + c];
        if (sigmoid) {
            a = 1.f / (1.f + expf(-a));
            b = 1.f / (1.f + expf(-b));
        }
        const float d = a - b;
        sq = d * d;
        if (grad != nullptr) {
            const float g = 2.f * d * inv_e;
            atomicAdd(grad + i * D + c, sigmoid ? g * a * (1.f - a) : g);
            atomicAdd(grad + j * D + c, sigmoid ? -g * b * (1.f - b) : -g);
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        sq += __shfl_down_sync(0xffffffffu, sq, o);
    }
    if ((threadIdx.x & 31) == 0) {
        partial[threadIdx.x >> 5] = sq;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        float s = 0.f;
#pragma unroll
        for (int w = 0; w < THREADS / 32; ++w) {
            s += partial[w];
        }
        atomicAdd(loss, s * inv_e);
    }
}

int blocks_for(int64_t n) { return (int)((n + THREADS - 1) / THREADS); }

bool fill_parts(Parts &p, float *const *ptrs, const int *widths, int count, int D) {
    if (count < 1 || count > MAX_PARTS) {
        return false;
    }
    int start = 0;
    for (int k = 0; k < MAX_PARTS; ++k) {
        p.ptr[k] = k < count ? ptrs[k] : nullptr;
        p.width[k] = k < count ? widths[k] : 0;
        p.start[k] = start;
        if (k < count) {
            if (widths[k] < 1) {
                return false;
            }
            start += widths[k];
        }
    }
    p.count = count;
    return start == D;
}

}  // namespace

// out [n, D] <- the parts side by side; parts[k] is a contiguous [n, widths[k]] block.
extern "C" int unic_pack_fwd(float *const *parts, const int *widths, int count, int64_t n, int D, float *out,
                             void *stream) {
    Parts p;
    if (!fill_parts(p, parts, widths, count, D)) {
        return 1000;
    }
    if (n * D == 0) {
        return 0;
    }
    pack_fwd_kernel<<<blocks_for(n * D), THREADS, 0, static_cast<cudaStream_t>(stream)>>>(p, n, D, out);
    return (int)cudaGetLastError();
}

// grads[k] [n, widths[k]] <- columns of grad [n, D]; a null grads[k] is not written.
extern "C" int unic_pack_bwd(const float *grad, int64_t n, int D, float *const *grads, const int *widths, int count,
                             void *stream) {
    Parts p;
    if (!fill_parts(p, grads, widths, count, D)) {
        return 1000;
    }
    if (n * D == 0) {
        return 0;
    }
    pack_bwd_kernel<<<blocks_for(n * D), THREADS, 0, static_cast<cudaStream_t>(stream)>>>(grad, n, D, p);
    return (int)cudaGetLastError();
}

// loss (one float, zeroed) += mean over the E pairs idx [2E] (i0, j0, i1, j1, ...) of ||f(v_i) - f(v_j)||^2;
// grad (zeroed [N, D], or null) += its gradient with respect to v.
extern "C" int unic_neighbor_loss(const float *v, int D, const int32_t *idx, int64_t E, int sigmoid, float *loss,
                                  float *grad, void *stream) {
    if (D < 1 || E < 1) {
        return 1000;
    }
    neighbor_kernel<<<blocks_for(E * D), THREADS, 0, static_cast<cudaStream_t>(stream)>>>(
        v, D, idx, E, sigmoid, 1.f / (float)E, loss, grad);
    return (int)cudaGetLastError();
}

extern "C" const char *unic_step_ops_error(int code) {
    return code == 1000 ? "unsupported arguments" : cudaGetErrorString((cudaError_t)code);
}
