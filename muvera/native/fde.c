/*
 * FDE encoding (muvera_fde_encode).
 *
 * FDEs: the numpy kernel projects every (token, repetition) pair and then scatters it. This one
 * uses the linearity of the inner projection instead: per item it sums the *raw* tokens of
 * each (repetition, partition) bucket, then projects each non-empty bucket once
 * (sum_t A_r^T x_t == A_r^T sum_t x_t). A document of n tokens then costs n*R vector adds
 * plus R*B small projections, instead of n*R projections. Empty partitions of documents are
 * filled, as the reference does, with the projection of the token whose sign bits are
 * nearest in Hamming distance (lowest token index on ties).
 *
 * Built at install time by hatch_build.py; muvera/native/loader.py loads it and falls back to the
 * numpy kernel when it is missing. Results equal the numpy kernel's up to float32 rounding
 * (the sums are taken in a different order).
 */
#include "muvera.h"

#define CODE_GROUP 64


/* dst[0:n] = src[0:n] or dst[0:n] += src[0:n] */
static inline void copy_or_add(float *restrict dst, const float *restrict src, int64_t n, int add) {
    if (add) {
        for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
    } else {
        memcpy(dst, src, (size_t)n * sizeof(float));
    }
}

#ifdef MUVERA_HAVE_VECTOR_EXT
/* o[0:W*L] = (x[0:d] @ A[0:d, 0:W*L]) / divisor, A row-major (d, W*L), with W vectors of L
 * floats per row and four independent accumulators (so consecutive multiply-adds do not
 * wait on each other). GCC/Clang vector extensions: one SIMD register per vector on AVX-512,
 * split into smaller registers on narrower hardware. */
#define DEFINE_PROJECT(NAME, VT, L, W)                                                      \
    static void NAME(const float *restrict x, const float *restrict A, int64_t d,          \
                     float *restrict o, float divisor) {                                   \
        VT a0[W], a1[W], a2[W], a3[W], v;                                                  \
        for (int w = 0; w < W; ++w) a0[w] = a1[w] = a2[w] = a3[w] = (VT){0};               \
        int64_t i = 0;                                                                     \
        for (; i + 4 <= d; i += 4) {                                                       \
            const float *row = A + i * (W * L);                                            \
            for (int w = 0; w < W; ++w) {                                                  \
                memcpy(&v, row + w * L, sizeof v);                                         \
                a0[w] += x[i] * v;                                                         \
                memcpy(&v, row + (W + w) * L, sizeof v);                                   \
                a1[w] += x[i + 1] * v;                                                     \
                memcpy(&v, row + (2 * W + w) * L, sizeof v);                               \
                a2[w] += x[i + 2] * v;                                                     \
                memcpy(&v, row + (3 * W + w) * L, sizeof v);                               \
                a3[w] += x[i + 3] * v;                                                     \
            }                                                                              \
        }                                                                                  \
        for (; i < d; ++i) {                                                               \
            for (int w = 0; w < W; ++w) {                                                  \
                memcpy(&v, A + i * (W * L) + w * L, sizeof v);                             \
                a0[w] += x[i] * v;                                                         \
            }                                                                              \
        }                                                                                  \
        for (int w = 0; w < W; ++w) {                                                      \
            v = ((a0[w] + a1[w]) + (a2[w] + a3[w])) / divisor;                             \
            memcpy(o + w * L, &v, sizeof v);                                               \
        }                                                                                  \
    }
DEFINE_PROJECT(project_4, vf4, 4, 1)
DEFINE_PROJECT(project_8, vf8, 8, 1)
#if defined(__AVX512F__) || !defined(__AVX__)
/* AVX-512: one register per 16 floats; SSE (generic): GCC splits them into four well */
DEFINE_PROJECT(project_16, vf16, 16, 1)
DEFINE_PROJECT(project_32, vf16, 16, 2)
DEFINE_PROJECT(project_64, vf16, 16, 4)
#else /* AVX2: vectors of the registers' width, 8 floats (benchmarks/bench_variants.py) */
DEFINE_PROJECT(project_16, vf8, 8, 2)
DEFINE_PROJECT(project_32, vf8, 8, 4)
DEFINE_PROJECT(project_64, vf8, 8, 8)
#endif
#endif

static void project_any(const float *restrict x, const float *restrict A, int64_t d, int64_t p,
                        float *restrict o, float divisor) {
    for (int64_t j = 0; j < p; ++j) o[j] = 0.0f;
    for (int64_t i = 0; i < d; ++i) {
        const float xi = x[i];
        const float *row = A + i * p;
        for (int64_t j = 0; j < p; ++j) o[j] += xi * row[j];
    }
    for (int64_t j = 0; j < p; ++j) o[j] /= divisor;
}

/* o = project(x) / divisor, or x / divisor for the identity projection (A == NULL, p == d). */
static inline void project(const float *restrict x, const float *restrict A, int64_t d, int64_t p,
                           float *restrict o, float divisor) {
    if (A == NULL) {
        for (int64_t j = 0; j < d; ++j) o[j] = x[j] / divisor;
        return;
    }
#ifdef MUVERA_HAVE_VECTOR_EXT
    switch (p) {
        case 4: project_4(x, A, d, o, divisor); return;
        case 8: project_8(x, A, d, o, divisor); return;
        case 16: project_16(x, A, d, o, divisor); return;
        case 32: project_32(x, A, d, o, divisor); return;
        case 64: project_64(x, A, d, o, divisor); return;
        default: break;
    }
#endif
    project_any(x, A, d, p, o, divisor);
}

static inline uint32_t gray_decode(uint32_t c) {
    c ^= c >> 1;
    c ^= c >> 2;
    c ^= c >> 4;
    c ^= c >> 8;
    c ^= c >> 16;
    return c;
}

static inline int popcount32(uint32_t x) {
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_popcount(x);
#else
    int n = 0;
    while (x) { x &= x - 1; ++n; }
    return n;
#endif
}

/*
 * FDEs of a run of items.
 *
 * X        (N, d) float32 row-major: the tokens of all items, concatenated.
 * sketch   (N, sketch_stride) float32: column j*R + r holds <x, hyperplane j of rep r>.
 * offsets  (n_items + 1,) int64: item i is tokens offsets[i] .. offsets[i+1] of X.
 * proj     (R, d, p) float32 dense inner projection, or NULL for identity (p == d).
 * average  1 for documents (mean per partition), 0 for queries (sum).
 * fill     1 to fill empty partitions of non-empty items (documents).
 * out      (n_items, R * 2^k * p) float32, fully written.
 * Returns 0, or -1 when scratch memory cannot be allocated.
 */
static int64_t fde_encode_serial(
    const float *X, int64_t d, const float *sketch, int64_t sketch_stride,
    const int64_t *offsets, int64_t n_items, int64_t R, int64_t k,
    const float *proj, int64_t p, int64_t average, int64_t fill, float *out) {
    const int64_t B = (int64_t)1 << k;
    const int64_t row_len = R * B * p;
    int64_t max_tokens = 1;
    for (int64_t i = 0; i < n_items; ++i) {
        const int64_t n = offsets[i + 1] - offsets[i];
        if (n > max_tokens) max_tokens = n;
    }
    /* Scratch: one repetition's bucket sums (B x d: in L1 for the default sizes), counts,
     * and the sign bits of every (repetition, token) of one item, repetition-major. */
    float *raw = (float *)malloc((size_t)(B * d) * sizeof(float));
    int32_t *count = (int32_t *)calloc((size_t)B, sizeof(int32_t));
    uint32_t *codes = (uint32_t *)malloc((size_t)(max_tokens * R) * sizeof(uint32_t));
    if (raw == NULL || count == NULL || codes == NULL) {
        free(raw);
        free(count);
        free(codes);
        return -1;
    }
    uint32_t c[CODE_GROUP];
    for (int64_t item = 0; item < n_items; ++item) {
        const int64_t t0 = offsets[item], n = offsets[item + 1] - t0;
        float *o = out + item * row_len;
        /* 1. Sign bits of every (token, repetition), first hyperplane in the top bit. */
        for (int64_t t = 0; t < n; ++t) {
            const float *sk = sketch + (t0 + t) * sketch_stride;
            for (int64_t r0 = 0; r0 < R; r0 += CODE_GROUP) {
                const int64_t m = (R - r0) < CODE_GROUP ? (R - r0) : CODE_GROUP;
                for (int64_t r = 0; r < m; ++r) c[r] = 0;
                for (int64_t j = 0; j < k; ++j) {
                    const float *col = sk + j * R + r0;
                    for (int64_t r = 0; r < m; ++r) c[r] = (c[r] << 1) | (uint32_t)(col[r] > 0.0f);
                }
                for (int64_t r = 0; r < m; ++r) codes[(r0 + r) * n + t] = c[r];
            }
        }
        for (int64_t r = 0; r < R; ++r) {
            const uint32_t *rc = codes + r * n;
            /* 2. Bucket sums of the raw tokens; a bucket's first token is copied, so the
             *    buffer is never cleared. */
            for (int64_t t = 0; t < n; ++t) {
                const int64_t g = (int64_t)gray_decode(rc[t]);
                copy_or_add(raw + g * d, X + (t0 + t) * d, d, count[g]++ != 0);
            }
            /* 3. Project each bucket once; fill or zero the empty ones; reset the counts. */
            const float *A = proj ? proj + r * d * p : NULL;
            float *orow = o + r * B * p;
            for (int64_t g = 0; g < B; ++g) {
                float *dst = orow + g * p;
                const int32_t cnt = count[g];
                if (cnt > 0) {
                    project(raw + g * d, A, d, p, dst, average ? (float)cnt : 1.0f);
                    count[g] = 0;
                } else if (fill && n > 0) {
                    const uint32_t bits = (uint32_t)(g ^ (g >> 1));
                    int64_t best = 0;
                    int best_dist = 64;
                    for (int64_t t = 0; t < n; ++t) {
                        const int dist = popcount32(rc[t] ^ bits);
                        if (dist < best_dist) {
                            best_dist = dist;
                            best = t;
                        }
                    }
                    project(X + (t0 + best) * d, A, d, p, dst, 1.0f);
                } else {
                    memset(dst, 0, (size_t)p * sizeof(float));
                }
            }
        }
    }
    free(raw);
    free(count);
    free(codes);
    return 0;
}

typedef struct {
    const float *X, *sketch, *proj;
    const int64_t *offsets;
    int64_t d, sketch_stride, n_items, R, k, p, average, fill;
    float *out;
    int64_t status;
} encode_job;

static void *encode_worker(void *arg) {
    encode_job *j = (encode_job *)arg;
    j->status = fde_encode_serial(j->X, j->d, j->sketch, j->sketch_stride, j->offsets,
                                  j->n_items, j->R, j->k, j->proj, j->p, j->average, j->fill,
                                  j->out);
    return NULL;
}

/*
 * FDEs of a run of items (see fde_encode_serial for the arguments), the items split
 * between n_threads threads by token count.
 */
MUVERA_EXPORT int64_t muvera_fde_encode(
    const float *X, int64_t d, const float *sketch, int64_t sketch_stride,
    const int64_t *offsets, int64_t n_items, int64_t R, int64_t k,
    const float *proj, int64_t p, int64_t average, int64_t fill, float *out,
    int64_t n_threads) {
    n_threads = clamp_threads(n_threads, n_items);
    const int64_t row_len = R * ((int64_t)1 << k) * p;
    int64_t bounds[MAX_THREADS + 1];
    int64_t *sizes = (int64_t *)malloc((size_t)(n_items > 0 ? n_items : 1) * sizeof(int64_t));
    if (sizes == NULL) return -1;
    for (int64_t i = 0; i < n_items; ++i) sizes[i] = offsets[i + 1] - offsets[i] + 1;
    split_ranges(sizes, n_items, n_threads, bounds);
    free(sizes);
    encode_job jobs[MAX_THREADS];
    for (int64_t t = 0; t < n_threads; ++t) {
        const int64_t first = bounds[t];
        encode_job job = {X, sketch, proj, offsets + first, d, sketch_stride,
                          bounds[t + 1] - first, R, k, p, average, fill,
                          out + first * row_len, 0};
        jobs[t] = job;
    }
    run_jobs(encode_worker, jobs, sizeof(encode_job), n_threads);
    for (int64_t t = 0; t < n_threads; ++t)
        if (jobs[t].status != 0) return -1;
    return 0;
}
