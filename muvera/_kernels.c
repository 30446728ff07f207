/*
 * muvera's optional compiled kernels (plain C99, no Python API; loaded with ctypes):
 * FDE encoding (muvera_fde_encode) and exact MaxSim (muvera_maxsim, further down).
 *
 * FDEs: the numpy kernel projects every (token, repetition) pair and then scatters it. This one
 * uses the linearity of the inner projection instead: per item it sums the *raw* tokens of
 * each (repetition, partition) bucket, then projects each non-empty bucket once
 * (sum_t A_r^T x_t == A_r^T sum_t x_t). A document of n tokens then costs n*R vector adds
 * plus R*B small projections, instead of n*R projections. Empty partitions of documents are
 * filled, as the reference does, with the projection of the token whose sign bits are
 * nearest in Hamming distance (lowest token index on ties).
 *
 * Built at install time by hatch_build.py; muvera/_native.py loads it and falls back to the
 * numpy kernel when it is missing. Results equal the numpy kernel's up to float32 rounding
 * (the sums are taken in a different order).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__F16C__)
#include <immintrin.h>
#endif
#if !defined(_WIN32)
#include <pthread.h>
#define MUVERA_HAVE_THREADS 1
#endif

#if defined(_WIN32)
#define MUVERA_EXPORT __declspec(dllexport)
#else
#define MUVERA_EXPORT __attribute__((visibility("default")))
#endif

#define MUVERA_ABI_VERSION 3
#define CODE_GROUP 64

MUVERA_EXPORT int64_t muvera_abi_version(void) { return MUVERA_ABI_VERSION; }

/* dst[0:n] = src[0:n] or dst[0:n] += src[0:n] */
static inline void copy_or_add(float *restrict dst, const float *restrict src, int64_t n, int add) {
    if (add) {
        for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
    } else {
        memcpy(dst, src, (size_t)n * sizeof(float));
    }
}

#if defined(__GNUC__) || defined(__clang__)
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
typedef float vf4 __attribute__((vector_size(16)));
typedef float vf8 __attribute__((vector_size(32)));
typedef float vf16 __attribute__((vector_size(64)));
DEFINE_PROJECT(project_4, vf4, 4, 1)
DEFINE_PROJECT(project_8, vf8, 8, 1)
DEFINE_PROJECT(project_16, vf16, 16, 1)
DEFINE_PROJECT(project_32, vf16, 16, 2)
DEFINE_PROJECT(project_64, vf16, 16, 4)
#define MUVERA_HAVE_VECTOR_EXT 1
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

/* -- threads ------------------------------------------------------------------------ */
#define MAX_THREADS 64

/* Runs fn on jobs[0 .. n) (each job_size bytes): jobs 1.. on new threads, job 0 here; a
 * job whose thread cannot be started runs here too. */
static void run_jobs(void *(*fn)(void *), void *jobs, size_t job_size, int64_t n) {
    char *base = (char *)jobs;
#ifdef MUVERA_HAVE_THREADS
    pthread_t threads[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int64_t t = 1; t < n; ++t)
        started[t] = pthread_create(&threads[t], NULL, fn, base + t * job_size) == 0;
    fn(base);
    for (int64_t t = 1; t < n; ++t) {
        if (started[t]) {
            pthread_join(threads[t], NULL);
        } else {
            fn(base + t * job_size);
        }
    }
#else
    for (int64_t t = 0; t < n; ++t) fn(base + t * job_size);
#endif
}

/* Splits items 0 .. n (item i weighing sizes[i]) into `parts` consecutive ranges of about
 * equal weight: range t is bounds[t] .. bounds[t+1]. */
static void split_ranges(const int64_t *sizes, int64_t n, int64_t parts, int64_t *bounds) {
    int64_t total = 0;
    for (int64_t i = 0; i < n; ++i) total += sizes[i] > 0 ? sizes[i] : 0;
    int64_t seen = 0, i = 0;
    bounds[0] = 0;
    for (int64_t t = 0; t < parts; ++t) {
        const int64_t target = total * (t + 1) / parts;
        while (i < n && (seen < target || t == parts - 1)) {
            seen += sizes[i] > 0 ? sizes[i] : 0;
            ++i;
        }
        bounds[t + 1] = i;
    }
}

static int64_t clamp_threads(int64_t n_threads, int64_t n_items) {
    if (n_threads > n_items) n_threads = n_items;
    if (n_threads > MAX_THREADS) n_threads = MAX_THREADS;
    return n_threads < 1 ? 1 : n_threads;
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

/* ---------------------------------------------------------------------------------------
 * Exact MaxSim of one query against documents stored as spans of token rows.
 *
 * For each document: for each query token, the best inner product with any of the
 * document's tokens, summed over query tokens. The query is transposed into groups of 32
 * query tokens (zero-padded); document tokens are processed in tiles of 4, each tile
 * giving 4 x 32 inner products held in registers, folded into running maxima. No
 * similarity matrix is ever written to memory. float16 tokens are converted to float32
 * one document at a time (F16C instructions where available).
 * ------------------------------------------------------------------------------------- */
#define QGROUP 32
#define TOKEN_TILE 8

static float half_to_float(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while ((mant & 0x400u) == 0) {
                mant <<= 1;
                --exp;
            }
            bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static void halfs_to_floats(const uint16_t *src, float *dst, int64_t n) {
    int64_t i = 0;
#if defined(__F16C__)
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(src + i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    }
#endif
    for (; i < n; ++i) dst[i] = half_to_float(src[i]);
}

#ifdef MUVERA_HAVE_VECTOR_EXT
typedef int32_t vi16 __attribute__((vector_size(64)));
static inline vf16 vmax16(vf16 a, vf16 b) {
    const vi16 take_a = a > b;
    return (vf16)(((vi16)a & take_a) | ((vi16)b & ~take_a));
}

/* Keeps a value in a register: without it GCC re-reads the query vectors from memory as
 * an operand of every multiply-add, and the loads, not the arithmetic, set the pace. */
#if defined(__AVX512F__) && (defined(__GNUC__) || defined(__clang__))
#define IN_REGISTER(v) __asm__("" : "+v"(v)) /* one 16-float vector = one zmm register */
#else
#define IN_REGISTER(v) ((void)0)
#endif

/* Running maxima m[0..1] (32 query lanes) over tokens x (n, d) against qt (d, 32):
 * tiles of 8 tokens x 32 query tokens = 16 accumulators in registers. */
static void maxsim_group(const float *restrict x, int64_t n, int64_t d,
                         const float *restrict qt, vf16 *restrict m) {
    vf16 m0 = m[0], m1 = m[1], q0, q1;
    int64_t t = 0;
    for (; t + TOKEN_TILE <= n; t += TOKEN_TILE) {
        const float *xt = x + t * d;
        vf16 a0[TOKEN_TILE], a1[TOKEN_TILE];
        for (int u = 0; u < TOKEN_TILE; ++u) a0[u] = a1[u] = (vf16){0};
        for (int64_t i = 0; i < d; ++i) {
            memcpy(&q0, qt + i * QGROUP, sizeof q0);
            memcpy(&q1, qt + i * QGROUP + 16, sizeof q1);
            IN_REGISTER(q0);
            IN_REGISTER(q1);
            for (int u = 0; u < TOKEN_TILE; ++u) {
                const float xu = xt[u * d + i];
                a0[u] += xu * q0;
                a1[u] += xu * q1;
            }
        }
        for (int u = 0; u < TOKEN_TILE; ++u) {
            m0 = vmax16(m0, a0[u]);
            m1 = vmax16(m1, a1[u]);
        }
    }
    for (; t < n; ++t) {
        const float *x0 = x + t * d;
        vf16 a0 = {0}, a1 = {0};
        for (int64_t i = 0; i < d; ++i) {
            memcpy(&q0, qt + i * QGROUP, sizeof q0);
            memcpy(&q1, qt + i * QGROUP + 16, sizeof q1);
            a0 += x0[i] * q0;
            a1 += x0[i] * q1;
        }
        m0 = vmax16(m0, a0);
        m1 = vmax16(m1, a1);
    }
    m[0] = m0;
    m[1] = m1;
}

static float group_sum(const vf16 *m, int64_t lanes) {
    float v[QGROUP], s = 0.0f;
    memcpy(v, m, sizeof v);
    for (int64_t l = 0; l < lanes; ++l) s += v[l];
    return s;
}
#else
static void maxsim_group(const float *restrict x, int64_t n, int64_t d,
                         const float *restrict qt, float *restrict m) {
    for (int64_t t = 0; t < n; ++t) {
        float a[QGROUP] = {0};
        for (int64_t i = 0; i < d; ++i)
            for (int l = 0; l < QGROUP; ++l) a[l] += x[t * d + i] * qt[i * QGROUP + l];
        for (int l = 0; l < QGROUP; ++l) m[l] = a[l] > m[l] ? a[l] : m[l];
    }
}

static float group_sum(const float *m, int64_t lanes) {
    float s = 0.0f;
    for (int64_t l = 0; l < lanes; ++l) s += m[l];
    return s;
}
#endif

/* One query-token group: 32 lanes of one query, transposed to (d, 32), zero-padded. */
typedef struct {
    int64_t query;
    int64_t lanes;
    const float *qt;
} qgroup;

typedef struct {
    const void *tokens;
    int64_t half, d;
    const int64_t *offsets, *lengths;
    int64_t n_docs;
    const qgroup *groups;
    const int64_t *q_offsets;
    int64_t n_groups, n_queries;
    float *scores; /* (n_queries, n_docs) */
    int64_t first, last; /* this worker's documents */
    int64_t status;
} maxsim_job;

static void *maxsim_worker(void *arg) {
    maxsim_job *job = (maxsim_job *)arg;
    const int64_t d = job->d;
    int64_t max_len = 0;
    for (int64_t j = job->first; j < job->last; ++j)
        if (job->lengths[j] > max_len) max_len = job->lengths[j];
    float *buf = NULL;
    if (job->half && max_len > 0) {
        buf = (float *)malloc((size_t)(max_len * d) * sizeof(float));
        if (buf == NULL) {
            job->status = -1;
            return NULL;
        }
    }
    for (int64_t j = job->first; j < job->last; ++j) {
        const int64_t n = job->lengths[j];
        for (int64_t q = 0; q < job->n_queries; ++q) {
            const int has_tokens = job->q_offsets[q + 1] > job->q_offsets[q];
            job->scores[q * job->n_docs + j] = (n > 0 || !has_tokens) ? 0.0f : -INFINITY;
        }
        if (n <= 0) continue;
        const float *x;
        if (job->half) {
            halfs_to_floats((const uint16_t *)job->tokens + job->offsets[j] * d, buf, n * d);
            x = buf;
        } else {
            x = (const float *)job->tokens + job->offsets[j] * d;
        }
        for (int64_t g = 0; g < job->n_groups; ++g) {
            const qgroup *grp = job->groups + g;
#ifdef MUVERA_HAVE_VECTOR_EXT
            vf16 m[2];
            for (int w = 0; w < 2; ++w)
                for (int l = 0; l < 16; ++l) m[w][l] = -INFINITY;
#else
            float m[QGROUP];
            for (int l = 0; l < QGROUP; ++l) m[l] = -INFINITY;
#endif
            maxsim_group(x, n, d, grp->qt, m);
            job->scores[grp->query * job->n_docs + j] += group_sum(m, grp->lanes);
        }
    }
    free(buf);
    job->status = 0;
    return NULL;
}

/*
 * Exact MaxSim of every query against every document.
 *
 * tokens      float32, or float16 when half != 0: token rows of width d.
 * offsets, lengths  (n_docs,) int64: document j is rows offsets[j] .. + lengths[j].
 * queries     (sum of query lengths, d) float32 row-major, queries concatenated.
 * q_offsets   (n_queries + 1,) int64: query i is rows q_offsets[i] .. q_offsets[i+1].
 * scores      (n_queries, n_docs) float32 out: MaxSim; -inf for a document with no
 *             tokens, 0 for a query with none.
 * n_threads   documents are split between this many threads (balanced by tokens).
 * Returns 0, or -1 when memory cannot be allocated.
 */
MUVERA_EXPORT int64_t muvera_maxsim(const void *tokens, int64_t half, int64_t d,
                                    const int64_t *offsets, const int64_t *lengths,
                                    int64_t n_docs, const float *queries,
                                    const int64_t *q_offsets, int64_t n_queries,
                                    float *scores, int64_t n_threads) {
    int64_t n_groups = 0;
    for (int64_t q = 0; q < n_queries; ++q)
        n_groups += (q_offsets[q + 1] - q_offsets[q] + QGROUP - 1) / QGROUP;
    qgroup *groups = (qgroup *)malloc((size_t)(n_groups > 0 ? n_groups : 1) * sizeof(qgroup));
    float *qt = (float *)malloc((size_t)((n_groups > 0 ? n_groups : 1) * d * QGROUP) * sizeof(float));
    if (groups == NULL || qt == NULL) {
        free(groups);
        free(qt);
        return -1;
    }
    int64_t g = 0;
    for (int64_t q = 0; q < n_queries; ++q) {
        const int64_t lo = q_offsets[q], hi = q_offsets[q + 1];
        for (int64_t start = lo; start < hi; start += QGROUP, ++g) {
            float *dst = qt + g * d * QGROUP;
            const int64_t lanes = (hi - start) < QGROUP ? (hi - start) : QGROUP;
            for (int64_t i = 0; i < d; ++i)
                for (int64_t l = 0; l < QGROUP; ++l)
                    dst[i * QGROUP + l] = l < lanes ? queries[(start + l) * d + i] : 0.0f;
            groups[g].query = q;
            groups[g].lanes = lanes;
            groups[g].qt = dst;
        }
    }
    n_threads = clamp_threads(n_threads, n_docs);
    int64_t bounds[MAX_THREADS + 1];
    split_ranges(lengths, n_docs, n_threads, bounds);
    maxsim_job jobs[MAX_THREADS];
    for (int64_t t = 0; t < n_threads; ++t) {
        maxsim_job job = {tokens, half, d, offsets, lengths, n_docs, groups, q_offsets,
                          n_groups, n_queries, scores, bounds[t], bounds[t + 1], 0};
        jobs[t] = job;
    }
    int64_t status = 0;
    run_jobs(maxsim_worker, jobs, sizeof(maxsim_job), n_threads);
    for (int64_t t = 0; t < n_threads; ++t)
        if (jobs[t].status != 0) status = -1;
    free(groups);
    free(qt);
    return status;
}
