// Small kernels of the training step that replace chains of PyTorch operators (gaussian_renderer/step_ops.py).
//
// 1. The 3D neighbour loss (Eq. 6), mean_e ||f(v_i) - f(v_j)||^2 over pairs e = (i, j), f = sigmoid or the
//    identity. One kernel reads both rows of each pair once, adds the pair's share of the loss and, when
//    asked, the gradient of the loss with respect to v (2 d f'(v_i) / E and -2 d f'(v_j) / E) into a zeroed
//    [N, D] buffer: about fifteen operators and their autograd nodes become one kernel (plus the backward's
//    multiplication by the incoming gradient).
//
// 2. The triplet term (segmentation/stage.py): T triplets drawn from a view's padded anchor table with the
//    random numbers given (static_sample_triplets' rules, one thread per triplet), the projection z = W x of the
//    three code rows, and the mean hinge max(0, |z_a - z_p|^2 - |z_a - z_n|^2 + margin): about 40 operators of
//    the loss graph's forward in one kernel. The backward recomputes each active triplet, adds W^T dL/dz into the
//    three rows of dL/de, and writes the per-triplet factors of dL/dW, which one matrix product then sums.
//    With u = x_a - x_p, w = x_a - x_n, p = W u, q = W w: h = |p|^2 - |q|^2 + margin, so with s = dL/dh,
//    dL/dx_a = 2 s W^T (p - q), dL/dx_p = -2 s W^T p, dL/dx_n = 2 s W^T q, dL/dW = 2 s (p u^T - q w^T).
//
// 3. The cluster term (segmentation/targets.py, static_cluster_total): the segment means of the rendered codes,
//    the pull mean_p |e_p - m_label(p)|^2 over the kept pixels and the push mean_{i<j<K} f(|m_i - m_j|^2),
//    f(x) = exp(-x / scale) ("gauss") or -x ("sqdist"), in four kernels forward and two backward, for about
//    forty operators of the loss graph. The pull's gradient is 2 r_p / kept (the means' share vanishes, as in
//    _ClusterLoss); the push's reaches each pixel through its segment's mean: g_m[i] = sum_j f'_ij (m_i - m_j) 2 /
//    (pairs count_i).
//
// A column-packing kernel for the render's channels (in place of torch.cat) was tried and dropped: forward and
// backward it took 0.405 ms against torch.cat's 0.282 ms on an H200 (RESULTS.md 23a).
//
// C entry points for ctypes; each returns a cudaError_t code, 1000 for unsupported arguments.
#include <cstdint>
#include <cuda_runtime.h>

namespace {

constexpr int THREADS = 256;

// One thread per (pair, channel); the block's share of the loss is reduced in shared memory and added once.
__global__ void neighbor_kernel(const float *__restrict__ v, int D, int ld, const int32_t *__restrict__ idx, int64_t E,
                                int sigmoid, float inv_e, float g_scale, float *__restrict__ loss,
                                float *__restrict__ grad) {
    __shared__ float partial[THREADS / 32];
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    float sq = 0.f;
    if (t < E * D) {
        const int64_t e = t / D;
        const int c = (int)(t - e * D);
        const int64_t i = idx[2 * e], j = idx[2 * e + 1];
        float a = v[i * ld + c], b = v[j * ld + c];
        if (sigmoid) {
            a = 1.f / (1.f + expf(-a));
            b = 1.f / (1.f + expf(-b));
        }
        const float d = a - b;
        sq = d * d;
        if (grad != nullptr) {
            const float g = 2.f * d * g_scale;
            atomicAdd(grad + i * ld + c, sigmoid ? g * a * (1.f - a) : g);
            atomicAdd(grad + j * ld + c, sigmoid ? -g * b * (1.f - b) : -g);
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

constexpr int SUM_CHUNK = 2048;  // pixels per private row block of the segment sums (as static_cluster_total)

// sums[chunk(p)][label_p] += e_p (sums zeroed, [chunks, K1, D]): each block of pixels adds into its own rows.
__global__ void cluster_sums_kernel(const float *__restrict__ e, int D, const int32_t *__restrict__ labels, int64_t P,
                                    int K1, float *__restrict__ sums) {
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= P * D) {
        return;
    }
    const int64_t p = t / D;
    const int c = (int)(t - p * D);
    const int64_t row = (p / SUM_CHUNK) * K1 + labels[p];
    atomicAdd(sums + row * D + c, e[t]);
}

// means [K1, D] <- (sum over chunks of sums) / counts.
__global__ void cluster_means_kernel(const float *__restrict__ sums, int chunks, int K1, int D,
                                     const float *__restrict__ counts, float *__restrict__ means) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= K1 * D) {
        return;
    }
    float acc = 0.f;
    for (int c = 0; c < chunks; ++c) {
        acc += sums[(int64_t)c * K1 * D + t];
    }
    means[t] = acc / counts[t / D];
}

__device__ __forceinline__ void block_add(float v, float scale, float *__restrict__ out) {
    __shared__ float partial[THREADS / 32];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        v += __shfl_down_sync(0xffffffffu, v, o);
    }
    if ((threadIdx.x & 31) == 0) {
        partial[threadIdx.x >> 5] = v;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        float s = 0.f;
#pragma unroll
        for (int k = 0; k < THREADS / 32; ++k) {
            s += partial[k];
        }
        atomicAdd(out, s * scale);
    }
}

// loss += sum over kept pixels (label < K1 - 1) of |e_p - m_label|^2 / max(kept, 1); one thread per element.
__global__ void cluster_pull_kernel(const float *__restrict__ e, int D, const int32_t *__restrict__ labels, int64_t P,
                                    int K1, const float *__restrict__ means, const float *__restrict__ num_kept,
                                    float *__restrict__ loss) {
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    float v = 0.f;
    if (t < P * D) {
        const int64_t p = t / D;
        const int c = (int)(t - p * D);
        const int l = labels[p];
        if (l < K1 - 1) {
            const float r = e[t] - means[(int64_t)l * D + c];
            v = r * r;
        }
    }
    block_add(v, 1.f / fmaxf(num_kept[0], 1.f), loss);
}

__device__ __forceinline__ float push_f(float dd, int gauss, float scale) {
    return gauss ? expf(dd * (-1.f / scale)) : -dd;
}

// loss += sum over the view's pairs i < j < k of f(|m_i - m_j|^2) / max(k (k - 1) / 2, 1); one thread per (i, j).
__global__ void cluster_push_kernel(const float *__restrict__ means, int D, int kmax, const float *__restrict__ kview,
                                    int gauss, float scale, float *__restrict__ loss) {
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const float k = kview[0];
    float v = 0.f;
    if (t < (int64_t)kmax * kmax) {
        const int i = (int)(t / kmax), j = (int)(t - (int64_t)i * kmax);
        if (i < j && (float)j < k) {
            float dd = 0.f;
            for (int c = 0; c < D; ++c) {
                const float d = means[i * D + c] - means[j * D + c];
                dd += d * d;
            }
            v = push_f(dd, gauss, scale);
        }
    }
    block_add(v, 1.f / fmaxf(k * (k - 1.f) * 0.5f, 1.f), loss);
}

// g_m [K1, D] <- the push's gradient with respect to each mean, over its count (0 for padding and the ignored row),
// times dL/dloss: one block per segment i, the pairs (i, j) over its threads.
__global__ void cluster_push_bwd_kernel(const float *__restrict__ means, int D, int kmax, const float *__restrict__ counts,
                                        const float *__restrict__ kview, int gauss, float scale,
                                        const float *__restrict__ g, float *__restrict__ g_m) {
    __shared__ float acc[THREADS / 32][MAX_DIM];
    const int i = blockIdx.x;
    const float k = kview[0];
    float a[MAX_DIM];
#pragma unroll
    for (int c = 0; c < MAX_DIM; ++c) {
        a[c] = 0.f;
    }
    if ((float)i < k && i < kmax) {
        for (int j = threadIdx.x; j < kmax; j += blockDim.x) {
            if (j == i || (float)j >= k) {
                continue;
            }
            float d[MAX_DIM], dd = 0.f;
#pragma unroll
            for (int c = 0; c < MAX_DIM; ++c) {
                d[c] = c < D ? means[i * D + c] - means[j * D + c] : 0.f;
                dd += d[c] * d[c];
            }
            const float slope = gauss ? push_f(dd, 1, scale) * (-1.f / scale) : -1.f;
#pragma unroll
            for (int c = 0; c < MAX_DIM; ++c) {
                a[c] += slope * d[c];
            }
        }
    }
#pragma unroll
    for (int c = 0; c < MAX_DIM; ++c) {  // the block's sum of a, per channel
        float v = a[c];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            v += __shfl_down_sync(0xffffffffu, v, o);
        }
        if ((threadIdx.x & 31) == 0) {
            acc[threadIdx.x >> 5][c] = v;
        }
    }
    __syncthreads();
    if (threadIdx.x < D) {
        float s = 0.f;
#pragma unroll
        for (int w = 0; w < THREADS / 32; ++w) {
            s += acc[w][threadIdx.x];
        }
        const float pairs = fmaxf(k * (k - 1.f) * 0.5f, 1.f);
        const bool real = (float)i < k && i < kmax;
        g_m[i * D + threadIdx.x] = real ? s * 2.f * g[0] / (pairs * counts[i]) : 0.f;
    }
}

// grad_e [P, D] <- 2 r_p dL/dloss / max(kept, 1) on kept pixels, plus their segment's g_m (no zeroing needed).
__global__ void cluster_bwd_kernel(const float *__restrict__ e, int D, const int32_t *__restrict__ labels, int64_t P,
                                   int K1, const float *__restrict__ means, const float *__restrict__ g_m,
                                   const float *__restrict__ num_kept, const float *__restrict__ g,
                                   float *__restrict__ grad_e) {
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= P * D) {
        return;
    }
    const int64_t p = t / D;
    const int c = (int)(t - p * D);
    const int l = labels[p];
    const int64_t mc = (int64_t)l * D + c;
    const float pull = l < K1 - 1 ? (e[t] - means[mc]) * (2.f * g[0] / fmaxf(num_kept[0], 1.f)) : 0.f;
    grad_e[t] = pull + g_m[mc];
}

int blocks_for(int64_t n) { return (int)((n + THREADS - 1) / THREADS); }

}  // namespace

// loss (one float, zeroed) += mean over the E pairs idx [2E] (i0, j0, i1, j1, ...) of ||f(v_i) - f(v_j)||^2;
// grad (or null) += grad_scale times its gradient with respect to v: a zeroed buffer with grad_scale 1 (the autograd
// node), or a parameter's .grad after the backward with grad_scale = L_3D's weight (the gradient applied directly).
// v and grad: N rows of D floats, ld floats apart (ld = D: a contiguous [N, D]; ld > D: D columns of a wider
// row-major table, e.g. a packed feature parameter).
extern "C" int unic_neighbor_loss(const float *v, int D, int ld, const int32_t *idx, int64_t E, int sigmoid,
                                  float grad_scale, float *loss, float *grad, void *stream) {
    if (D < 1 || E < 1 || ld < D) {
        return 1000;
    }
    neighbor_kernel<<<blocks_for(E * D), THREADS, 0, static_cast<cudaStream_t>(stream)>>>(
        v, D, ld, idx, E, sigmoid, 1.f / (float)E, grad_scale / (float)E, loss, grad);
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

// The cluster term's forward: loss (zeroed) += pull + push; sums [chunks, K1, D] (zeroed) and means [K1, D] are
// work space the backward reads again (means). labels [P] int32 in [0, K1 - 1] (K1 - 1: ignored), counts [K1]
// float >= 1, kview / num_kept: the view's segment and kept pixel counts (one float each on the device).
extern "C" int unic_cluster_fwd(const float *e, int D, const int32_t *labels, int64_t P, int K1, const float *counts,
                                const float *kview, const float *num_kept, int gauss, float scale, float *sums,
                                float *means, float *loss, void *stream) {
    if (D < 1 || D > MAX_DIM || K1 < 1 || P < 1) {
        return 1000;
    }
    const cudaStream_t s = static_cast<cudaStream_t>(stream);
    const int chunks = (int)((P + SUM_CHUNK - 1) / SUM_CHUNK);
    cluster_sums_kernel<<<blocks_for(P * D), THREADS, 0, s>>>(e, D, labels, P, K1, sums);
    cluster_means_kernel<<<blocks_for((int64_t)K1 * D), THREADS, 0, s>>>(sums, chunks, K1, D, counts, means);
    cluster_pull_kernel<<<blocks_for(P * D), THREADS, 0, s>>>(e, D, labels, P, K1, means, num_kept, loss);
    const int kmax = K1 - 1;
    if (kmax > 1) {
        cluster_push_kernel<<<blocks_for((int64_t)kmax * kmax), THREADS, 0, s>>>(means, D, kmax, kview, gauss, scale,
                                                                                  loss);
    }
    return (int)cudaGetLastError();
}

// Its backward: grad_e [P, D] <- dL/de; g_m [K1, D] work space. g: dL/dloss (one float on the device).
extern "C" int unic_cluster_bwd(const float *e, int D, const int32_t *labels, int64_t P, int K1, const float *counts,
                                const float *kview, const float *num_kept, int gauss, float scale, const float *means,
                                const float *g, float *g_m, float *grad_e, void *stream) {
    if (D < 1 || D > MAX_DIM || K1 < 1 || P < 1) {
        return 1000;
    }
    const cudaStream_t s = static_cast<cudaStream_t>(stream);
    cluster_push_bwd_kernel<<<K1, THREADS, 0, s>>>(means, D, K1 - 1, counts, kview, gauss, scale, g, g_m);
    cluster_bwd_kernel<<<blocks_for(P * D), THREADS, 0, s>>>(e, D, labels, P, K1, means, g_m, num_kept, g, grad_e);
    return (int)cudaGetLastError();
}

extern "C" const char *unic_step_ops_error(int code) {
    return code == 1000 ? "unsupported arguments" : cudaGetErrorString((cudaError_t)code);
}
