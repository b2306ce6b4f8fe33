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
// 3. The triplet term (segmentation/stage.py): T triplets drawn from a view's padded anchor table with the
//    random numbers given (static_sample_triplets' rules, one thread per triplet), the projection z = W x of the
//    three code rows, and the mean hinge max(0, |z_a - z_p|^2 - |z_a - z_n|^2 + margin): about 40 operators of
//    the loss graph's forward in one kernel. The backward recomputes each active triplet, adds W^T dL/dz into the
//    three rows of dL/de, and writes the per-triplet factors of dL/dW, which one matrix product then sums.
//    With u = x_a - x_p, w = x_a - x_n, p = W u, q = W w: h = |p|^2 - |q|^2 + margin, so with s = dL/dh,
//    dL/dx_a = 2 s W^T (p - q), dL/dx_p = -2 s W^T p, dL/dx_n = 2 s W^T q, dL/dW = 2 s (p u^T - q w^T).
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

constexpr int MAX_DIM = 16;  // --emb_dim is at most 15

// Flat pixel indices (anchor, positive, negative) of triplet t, as static_sample_triplets draws them.
__device__ __forceinline__ void draw_triplet(const int32_t *__restrict__ table, int tw, int mmax,
                                             const int64_t *__restrict__ boundary, int bmax, float m,
                                             const float *__restrict__ rnd, int &a, int &p, int &n) {
    long long idx = (long long)(rnd[0] * m);
    idx = idx < 0 ? 0 : (idx > mmax - 1 ? mmax - 1 : idx);
    const int32_t *row = table + idx * tw;
    const long long anchor = row[0], start = row[1], cnt = row[2], rank = row[3];
    long long r = (long long)(rnd[1] * (float)(cnt - 1));
    r = r > cnt - 2 ? cnt - 2 : r;
    r = r < 0 ? 0 : r;
    r += r >= rank ? 1 : 0;
    long long b = start + r;
    b = b < 0 ? 0 : (b > bmax - 1 ? bmax - 1 : b);
    float best = -2.f;
    long long neg = 0;
    for (int q = 4; q < tw; ++q) {  // the first largest score, as argmax
        const float score = row[q] < 0 ? -1.f : rnd[q - 2];
        if (score > best) {
            best = score;
            neg = row[q];
        }
    }
    a = (int)(anchor < 0 ? 0 : anchor);
    p = (int)boundary[b];
    n = (int)(neg < 0 ? 0 : neg);
}

// y = W x for a D x D row-major W (or y = x when W is null), D <= MAX_DIM.
__device__ __forceinline__ void project(const float *__restrict__ W, int D, const float *x, float *y) {
#pragma unroll
    for (int i = 0; i < MAX_DIM; ++i) {
        float acc = 0.f;
        if (i < D) {
            if (W == nullptr) {
                acc = x[i];
            } else {
#pragma unroll
                for (int j = 0; j < MAX_DIM; ++j) {
                    acc += j < D ? W[i * D + j] * x[j] : 0.f;
                }
            }
        }
        y[i] = acc;
    }
}

// One thread per triplet: trip[t] = (a, p, n, active); loss += hinge / T (nothing when the view has no anchor).
__global__ void triplet_fwd_kernel(const float *__restrict__ e, int D, const int32_t *__restrict__ table, int tw,
                                   int mmax, const int64_t *__restrict__ boundary, int bmax,
                                   const float *__restrict__ scalars, const float *__restrict__ rnd, int rw, int T,
                                   const float *__restrict__ W, float margin, float *__restrict__ loss,
                                   int32_t *__restrict__ trip) {
    __shared__ float partial[THREADS / 32];
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    const float m = scalars[2];
    float h = 0.f;
    if (t < T) {
        int a = 0, p = 0, n = 0;
        int active = 0;
        if (m > 0.f) {
            draw_triplet(table, tw, mmax, boundary, bmax, m, rnd + (int64_t)t * rw, a, p, n);
            float u[MAX_DIM], w[MAX_DIM], pu[MAX_DIM], qw[MAX_DIM];
#pragma unroll
            for (int k = 0; k < MAX_DIM; ++k) {
                const float xa = k < D ? e[(int64_t)a * D + k] : 0.f;
                u[k] = k < D ? xa - e[(int64_t)p * D + k] : 0.f;
                w[k] = k < D ? xa - e[(int64_t)n * D + k] : 0.f;
            }
            project(W, D, u, pu);
            project(W, D, w, qw);
            float dp = 0.f, dn = 0.f;
#pragma unroll
            for (int k = 0; k < MAX_DIM; ++k) {
                dp += pu[k] * pu[k];
                dn += qw[k] * qw[k];
            }
            h = dp - dn + margin;
            active = h > 0.f ? 1 : 0;
            h = active ? h : 0.f;
        }
        trip[4 * t] = a;
        trip[4 * t + 1] = p;
        trip[4 * t + 2] = n;
        trip[4 * t + 3] = active;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        h += __shfl_down_sync(0xffffffffu, h, o);
    }
    if ((threadIdx.x & 31) == 0) {
        partial[threadIdx.x >> 5] = h;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        float sum = 0.f;
#pragma unroll
        for (int k = 0; k < THREADS / 32; ++k) {
            sum += partial[k];
        }
        atomicAdd(loss, sum / (float)T);
    }
}

// One thread per triplet: grad_e (zeroed [P, D]) += the three rows' gradients; G, X ([2T, D] each) <- the rows
// whose product G^T X is dL/dW (2 s p, u) and (-2 s q, w); zero rows for an inactive triplet. s = *g / T.
__global__ void triplet_bwd_kernel(const float *__restrict__ e, int D, const int32_t *__restrict__ trip, int T,
                                   const float *__restrict__ W, const float *__restrict__ g, float *__restrict__ grad_e,
                                   float *__restrict__ G, float *__restrict__ X) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= T) {
        return;
    }
    const int a = trip[4 * t], p = trip[4 * t + 1], n = trip[4 * t + 2], active = trip[4 * t + 3];
    float u[MAX_DIM], w[MAX_DIM], pu[MAX_DIM], qw[MAX_DIM];
#pragma unroll
    for (int k = 0; k < MAX_DIM; ++k) {
        const float xa = (active && k < D) ? e[(int64_t)a * D + k] : 0.f;
        u[k] = (active && k < D) ? xa - e[(int64_t)p * D + k] : 0.f;
        w[k] = (active && k < D) ? xa - e[(int64_t)n * D + k] : 0.f;
    }
    project(W, D, u, pu);
    project(W, D, w, qw);
    const float s2 = active ? 2.f * g[0] / (float)T : 0.f;
#pragma unroll
    for (int k = 0; k < MAX_DIM; ++k) {  // dL/dW's factors (the rows stay zero for an inactive triplet)
        if (k < D) {
            G[(int64_t)t * D + k] = s2 * pu[k];
            X[(int64_t)t * D + k] = u[k];
            G[((int64_t)T + t) * D + k] = -s2 * qw[k];
            X[((int64_t)T + t) * D + k] = w[k];
        }
    }
    if (!active) {
        return;
    }
#pragma unroll
    for (int j = 0; j < MAX_DIM; ++j) {  // (W^T p)_j and (W^T q)_j
        if (j >= D) {
            continue;
        }
        float wp = 0.f, wq = 0.f;
        if (W == nullptr) {
            wp = pu[j];
            wq = qw[j];
        } else {
#pragma unroll
            for (int i = 0; i < MAX_DIM; ++i) {
                if (i < D) {
                    wp += W[i * D + j] * pu[i];
                    wq += W[i * D + j] * qw[i];
                }
            }
        }
        atomicAdd(grad_e + (int64_t)a * D + j, s2 * (wp - wq));
        atomicAdd(grad_e + (int64_t)p * D + j, -s2 * wp);
        atomicAdd(grad_e + (int64_t)n * D + j, s2 * wq);
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

// The triplet term's forward: loss (one float, zeroed) += mean hinge over T triplets; trip [T, 4] int32 <- (a, p,
// n, active). table [mmax, tw] int32 (anchor, start, count, rank, window...), boundary [bmax] int64, scalars [4]
// float (the view's anchor count at [2]), rnd [T, rw] float, W [D, D] row-major or null (no layer).
extern "C" int unic_triplet_fwd(const float *e, int D, const int32_t *table, int tw, int mmax, const int64_t *boundary,
                                int bmax, const float *scalars, const float *rnd, int rw, int T, const float *W,
                                float margin, float *loss, int32_t *trip, void *stream) {
    if (D < 1 || D > MAX_DIM || T < 1 || tw < 4 || rw != tw - 2 || mmax < 1 || bmax < 1) {
        return 1000;
    }
    triplet_fwd_kernel<<<blocks_for(T), THREADS, 0, static_cast<cudaStream_t>(stream)>>>(
        e, D, table, tw, mmax, boundary, bmax, scalars, rnd, rw, T, W, margin, loss, trip);
    return (int)cudaGetLastError();
}

// Its backward: grad_e [P, D] (zeroed) += dL/de; G, X [2T, D] <- the factors of dL/dW = G^T X. g: dL/dloss (one
// float on the device).
extern "C" int unic_triplet_bwd(const float *e, int D, const int32_t *trip, int T, const float *W, const float *g,
                                float *grad_e, float *G, float *X, void *stream) {
    if (D < 1 || D > MAX_DIM || T < 1) {
        return 1000;
    }
    triplet_bwd_kernel<<<blocks_for(T), THREADS, 0, static_cast<cudaStream_t>(stream)>>>(e, D, trip, T, W, g, grad_e,
                                                                                          G, X);
    return (int)cudaGetLastError();
}

extern "C" const char *unic_step_ops_error(int code) {
    return code == 1000 ? "unsupported arguments" : cudaGetErrorString((cudaError_t)code);
}
