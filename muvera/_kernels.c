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
#if defined(__F16C__) || defined(__AVX512F__)
#include <immintrin.h>
#endif
#if !defined(_WIN32) && (defined(__GNUC__) || defined(__clang__))
#include <pthread.h>
#define MUVERA_HAVE_THREADS 1 /* pthreads, and GCC's __atomic builtins */
#define CLAIM_NEXT(counter) __atomic_fetch_add((counter), 1, __ATOMIC_RELAXED)
#else
#define CLAIM_NEXT(counter) ((*(counter))++) /* one thread only */
#endif

#if defined(_WIN32)
#define MUVERA_EXPORT __declspec(dllexport)
#else
#define MUVERA_EXPORT __attribute__((visibility("default")))
#endif

#define MUVERA_ABI_VERSION 4
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

#ifdef MUVERA_HAVE_THREADS
/* Jobs 1 .. of a run_jobs call on new threads; a job whose thread cannot be started runs
 * on the caller. */
static void run_on_new_threads(void *(*fn)(void *), char *base, size_t job_size, int64_t n) {
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
}

/* A pool of worker threads, started on first use and then parked on a condition variable:
 * waking one costs a few microseconds, where starting a thread costs tens (a search runs
 * two multi-threaded kernels per query). One caller at a time uses it; a concurrent caller
 * starts threads of its own. A forked child starts with an empty pool. */
static struct {
    pthread_mutex_t lock; /* guards the fields below */
    pthread_cond_t wake, done;
    int64_t started;      /* worker threads running */
    void *(*fn)(void *);
    char *jobs;
    size_t job_size;
    int64_t next, n_jobs; /* jobs next .. n_jobs - 1 are not taken yet */
    int64_t running;      /* jobs taken and not finished */
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
          0, NULL, NULL, 0, 0, 0, 0};
static pthread_mutex_t pool_user = PTHREAD_MUTEX_INITIALIZER; /* the caller using the pool */
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

static void pool_after_fork(void) { /* the workers do not exist in the child */
    pthread_mutex_init(&pool.lock, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pthread_cond_init(&pool.done, NULL);
    pthread_mutex_init(&pool_user, NULL);
    pool.started = pool.next = pool.n_jobs = pool.running = 0;
}

static void pool_register_fork(void) { pthread_atfork(NULL, NULL, pool_after_fork); }

/* Takes and runs jobs until none is left untaken; called with pool.lock held. */
static void pool_take_jobs(void) {
    while (pool.next < pool.n_jobs) {
        const int64_t j = pool.next++;
        void *(*fn)(void *) = pool.fn;
        char *job = pool.jobs + j * pool.job_size;
        ++pool.running;
        pthread_mutex_unlock(&pool.lock);
        fn(job);
        pthread_mutex_lock(&pool.lock);
        if (--pool.running == 0 && pool.next >= pool.n_jobs) pthread_cond_broadcast(&pool.done);
    }
}

static void *pool_worker(void *unused) {
    (void)unused;
    pthread_mutex_lock(&pool.lock);
    for (;;) {
        while (pool.next >= pool.n_jobs) pthread_cond_wait(&pool.wake, &pool.lock);
        pool_take_jobs();
    }
    return NULL;
}
#endif

/* Runs fn on jobs[0 .. n) (each job_size bytes): job 0 on the caller, the others on pool
 * threads (or on the caller, whichever gets to them first); returns when all are done. */
static void run_jobs(void *(*fn)(void *), void *jobs, size_t job_size, int64_t n) {
    char *base = (char *)jobs;
#ifdef MUVERA_HAVE_THREADS
    if (n <= 1) {
        if (n == 1) fn(base);
        return;
    }
    pthread_once(&pool_once, pool_register_fork);
    if (pthread_mutex_trylock(&pool_user) != 0) { /* another caller has the pool */
        run_on_new_threads(fn, base, job_size, n);
        return;
    }
    pthread_mutex_lock(&pool.lock);
    while (pool.started < n - 1 && pool.started < MAX_THREADS) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, pool_worker, NULL) != 0) break;
        pthread_detach(thread);
        ++pool.started;
    }
    pool.fn = fn;
    pool.jobs = base;
    pool.job_size = job_size;
    pool.next = 1;
    pool.n_jobs = n;
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
    fn(base);
    pthread_mutex_lock(&pool.lock);
    pool_take_jobs(); /* those no worker has started (none may have been started at all) */
    while (pool.running > 0) pthread_cond_wait(&pool.done, &pool.lock);
    pool.next = pool.n_jobs = 0;
    pthread_mutex_unlock(&pool.lock);
    pthread_mutex_unlock(&pool_user);
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
 * query tokens, its last group 24, 16 or 8 wide (zero-padded: at most 7 idle lanes);
 * document tokens are processed in tiles of 8 (16 for the narrow groups), each tile
 * giving 8 x 32 (8 x 24, 16 x 16, 16 x 8) inner products held in registers, folded into
 * running maxima. No
 * similarity matrix is ever written to memory. float16 tokens are converted to float32
 * one document at a time (F16C instructions where available).
 * ------------------------------------------------------------------------------------- */
#define QGROUP 32

#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(p) __builtin_prefetch(p)
#else
#define PREFETCH(p) ((void)(p))
#endif

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
typedef int32_t vi8 __attribute__((vector_size(32)));
static inline vf16 vmax16(vf16 a, vf16 b) {
    const vi16 take_a = a > b;
    return (vf16)(((vi16)a & take_a) | ((vi16)b & ~take_a));
}
static inline vf8 vmax8(vf8 a, vf8 b) {
    const vi8 take_a = a > b;
    return (vf8)(((vi8)a & take_a) | ((vi8)b & ~take_a));
}

/* Keeps a value in a register: without it GCC re-reads the query vectors from memory as
 * an operand of every multiply-add, and the loads, not the arithmetic, set the pace. */
#if defined(__AVX512F__) && (defined(__GNUC__) || defined(__clang__))
#define IN_REGISTER(v) __asm__("" : "+v"(v)) /* one 16-float vector = one zmm register */
#else
#define IN_REGISTER(v) ((void)0)
#endif

/* NAME: running maxima m[0 .. W) (W = 16*N16 + 8*N8 query lanes) over tokens x (n, d)
 * against qt (d, W): tiles of TILE tokens x W lanes of multiply-adds held in registers
 * (N16 vectors of 16 floats and N8 of 8 per token; N16 + N8 >= 1, each at most 2). */
#define DEFINE_MAXSIM_GROUP(NAME, N16, N8, TILE)                                            \
    static void NAME(const float *restrict x, int64_t n, int64_t d,                        \
                     const float *restrict qt, float *restrict m) {                        \
        enum { W = 16 * (N16) + 8 * (N8), A16 = (N16) ? (N16) : 1, A8 = (N8) ? (N8) : 1 };  \
        vf16 m16[A16], q16[A16];                                                           \
        vf8 m8[A8], q8[A8];                                                                \
        for (int w = 0; w < (N16); ++w) memcpy(&m16[w], m + 16 * w, sizeof(vf16));        \
        for (int w = 0; w < (N8); ++w) memcpy(&m8[w], m + 16 * (N16) + 8 * w, sizeof(vf8)); \
        int64_t t = 0;                                                                     \
        for (; t + (TILE) <= n; t += (TILE)) {                                             \
            const float *xt = x + t * d;                                                   \
            vf16 a16[TILE][A16];                                                           \
            vf8 a8[TILE][A8];                                                              \
            for (int u = 0; u < (TILE); ++u) {                                             \
                for (int w = 0; w < (N16); ++w) a16[u][w] = (vf16){0};                     \
                for (int w = 0; w < (N8); ++w) a8[u][w] = (vf8){0};                        \
            }                                                                              \
            for (int64_t i = 0; i < d; ++i) {                                              \
                for (int w = 0; w < (N16); ++w) {                                          \
                    memcpy(&q16[w], qt + i * W + 16 * w, sizeof(vf16));                    \
                    IN_REGISTER(q16[w]);                                                   \
                }                                                                          \
                for (int w = 0; w < (N8); ++w) {                                           \
                    memcpy(&q8[w], qt + i * W + 16 * (N16) + 8 * w, sizeof(vf8));          \
                    IN_REGISTER(q8[w]);                                                    \
                }                                                                          \
                for (int u = 0; u < (TILE); ++u) {                                         \
                    const float xu = xt[u * d + i];                                        \
                    for (int w = 0; w < (N16); ++w) a16[u][w] += xu * q16[w];              \
                    for (int w = 0; w < (N8); ++w) a8[u][w] += xu * q8[w];                 \
                }                                                                          \
            }                                                                              \
            for (int u = 0; u < (TILE); ++u) {                                             \
                for (int w = 0; w < (N16); ++w) m16[w] = vmax16(m16[w], a16[u][w]);        \
                for (int w = 0; w < (N8); ++w) m8[w] = vmax8(m8[w], a8[u][w]);             \
            }                                                                              \
        }                                                                                  \
        for (; t < n; ++t) {                                                               \
            const float *x0 = x + t * d;                                                   \
            vf16 a16[A16];                                                                 \
            vf8 a8[A8];                                                                    \
            for (int w = 0; w < (N16); ++w) a16[w] = (vf16){0};                            \
            for (int w = 0; w < (N8); ++w) a8[w] = (vf8){0};                               \
            for (int64_t i = 0; i < d; ++i) {                                              \
                for (int w = 0; w < (N16); ++w) {                                          \
                    memcpy(&q16[w], qt + i * W + 16 * w, sizeof(vf16));                    \
                    a16[w] += x0[i] * q16[w];                                              \
                }                                                                          \
                for (int w = 0; w < (N8); ++w) {                                           \
                    memcpy(&q8[w], qt + i * W + 16 * (N16) + 8 * w, sizeof(vf8));          \
                    a8[w] += x0[i] * q8[w];                                                \
                }                                                                          \
            }                                                                              \
            for (int w = 0; w < (N16); ++w) m16[w] = vmax16(m16[w], a16[w]);               \
            for (int w = 0; w < (N8); ++w) m8[w] = vmax8(m8[w], a8[w]);                    \
        }                                                                                  \
        for (int w = 0; w < (N16); ++w) memcpy(m + 16 * w, &m16[w], sizeof(vf16));        \
        for (int w = 0; w < (N8); ++w) memcpy(m + 16 * (N16) + 8 * w, &m8[w], sizeof(vf8)); \
    }

DEFINE_MAXSIM_GROUP(maxsim_group32, 2, 0, 8)
DEFINE_MAXSIM_GROUP(maxsim_group24, 1, 1, 8)
DEFINE_MAXSIM_GROUP(maxsim_group16, 1, 0, 16)
DEFINE_MAXSIM_GROUP(maxsim_group8, 0, 1, 16)

/* running maxima m[0 .. width) of a group of width 32, 24, 16 or 8 */
static void maxsim_group(const float *restrict x, int64_t n, int64_t d, const float *restrict qt,
                         int64_t width, float *restrict m) {
    switch (width) {
    case 32: maxsim_group32(x, n, d, qt, m); break;
    case 24: maxsim_group24(x, n, d, qt, m); break;
    case 16: maxsim_group16(x, n, d, qt, m); break;
    default: maxsim_group8(x, n, d, qt, m); break;
    }
}
#else
static void maxsim_group(const float *restrict x, int64_t n, int64_t d, const float *restrict qt,
                         int64_t width, float *restrict m) {
    for (int64_t t = 0; t < n; ++t) {
        float a[QGROUP] = {0};
        for (int64_t i = 0; i < d; ++i)
            for (int64_t l = 0; l < width; ++l) a[l] += x[t * d + i] * qt[i * width + l];
        for (int64_t l = 0; l < width; ++l) m[l] = a[l] > m[l] ? a[l] : m[l];
    }
}
#endif

/* Lanes of the group that starts with `remaining` query tokens left: 32 while more than 24
 * remain, else the narrowest of 24, 16, 8 that holds them (at most 7 idle lanes). */
static int64_t group_width(int64_t remaining) {
    if (remaining > 24) return 32;
    if (remaining > 16) return 24;
    return remaining > 8 ? 16 : 8;
}

/* One query-token group: `width` lanes of one query (`lanes` of them used), transposed to
 * (d, width), zero-padded. */
typedef struct {
    int64_t query;
    int64_t lanes, width;
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
    int64_t *next_doc; /* shared by the workers: the next document nobody has claimed */
    int64_t status;
} maxsim_job;

static void *maxsim_worker(void *arg) {
    maxsim_job *job = (maxsim_job *)arg;
    const int64_t d = job->d;
    int64_t max_len = 0;
    for (int64_t j = 0; j < job->n_docs; ++j)
        if (job->lengths[j] > max_len) max_len = job->lengths[j];
    float *buf = NULL;
    if (job->half && max_len > 0) {
        buf = (float *)malloc((size_t)(max_len * d) * sizeof(float));
        if (buf == NULL) {
            job->status = -1;
            return NULL;
        }
    }
    /* documents are claimed one at a time, so a thread that starts late does fewer */
    for (int64_t j; (j = CLAIM_NEXT(job->next_doc)) < job->n_docs;) {
        const int64_t n = job->lengths[j];
        for (int64_t q = 0; q < job->n_queries; ++q) {
            const int has_tokens = job->q_offsets[q + 1] > job->q_offsets[q];
            job->scores[q * job->n_docs + j] = (n > 0 || !has_tokens) ? 0.0f : -INFINITY;
        }
        if (n <= 0) continue;
        if (j + 1 < job->n_docs && job->lengths[j + 1] > 0) { /* the next document: in cache
                                                               * by the time its turn comes */
            const int64_t size = job->half ? 2 : 4;
            const char *next = (const char *)job->tokens + job->offsets[j + 1] * d * size;
            for (int64_t b = 0; b < job->lengths[j + 1] * d * size; b += 64) PREFETCH(next + b);
        }
        const float *x;
        if (job->half) {
            halfs_to_floats((const uint16_t *)job->tokens + job->offsets[j] * d, buf, n * d);
            x = buf;
        } else {
            x = (const float *)job->tokens + job->offsets[j] * d;
        }
        for (int64_t g = 0; g < job->n_groups; ++g) {
            const qgroup *grp = job->groups + g;
            float m[QGROUP], total = 0.0f;
            for (int l = 0; l < QGROUP; ++l) m[l] = -INFINITY;
            maxsim_group(x, n, d, grp->qt, grp->width, m);
            for (int64_t l = 0; l < grp->lanes; ++l) total += m[l];
            job->scores[grp->query * job->n_docs + j] += total;
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
 * n_threads   threads that claim documents one at a time (a late starter does fewer).
 * Returns 0, or -1 when memory cannot be allocated.
 */
MUVERA_EXPORT int64_t muvera_maxsim(const void *tokens, int64_t half, int64_t d,
                                    const int64_t *offsets, const int64_t *lengths,
                                    int64_t n_docs, const float *queries,
                                    const int64_t *q_offsets, int64_t n_queries,
                                    float *scores, int64_t n_threads) {
    int64_t n_groups = 0, n_lanes = 0;
    for (int64_t q = 0; q < n_queries; ++q) {
        for (int64_t left = q_offsets[q + 1] - q_offsets[q]; left > 0;) {
            const int64_t width = group_width(left);
            ++n_groups;
            n_lanes += width;
            left -= width;
        }
    }
    qgroup *groups = (qgroup *)malloc((size_t)(n_groups > 0 ? n_groups : 1) * sizeof(qgroup));
    float *qt = (float *)malloc((size_t)((n_lanes > 0 ? n_lanes : 1) * d) * sizeof(float));
    if (groups == NULL || qt == NULL) {
        free(groups);
        free(qt);
        return -1;
    }
    int64_t g = 0;
    float *dst = qt;
    for (int64_t q = 0; q < n_queries; ++q) {
        const int64_t hi = q_offsets[q + 1];
        for (int64_t start = q_offsets[q]; start < hi; ++g) {
            const int64_t width = group_width(hi - start);
            const int64_t lanes = (hi - start) < width ? (hi - start) : width;
            for (int64_t i = 0; i < d; ++i)
                for (int64_t l = 0; l < width; ++l)
                    dst[i * width + l] = l < lanes ? queries[(start + l) * d + i] : 0.0f;
            groups[g].query = q;
            groups[g].lanes = lanes;
            groups[g].width = width;
            groups[g].qt = dst;
            dst += width * d;
            start += lanes;
        }
    }
    n_threads = clamp_threads(n_threads, n_docs);
    int64_t next_doc = 0;
    maxsim_job jobs[MAX_THREADS];
    for (int64_t t = 0; t < n_threads; ++t) {
        maxsim_job job = {tokens, half, d, offsets, lengths, n_docs, groups, q_offsets,
                          n_groups, n_queries, scores, &next_doc, 0};
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

/* -- graph search over scalar-quantized vectors ------------------------------------------ */
/*
 * Best-first search of an HNSW graph (hnswlib's layout, read by muvera/_hnsw_graph.py) whose
 * vectors are stored as int8 codes with one float32 scale per row: the inner product of a
 * float32 query q with row u is scales[u] * sum_i q[i] * codes[u, i]. A quarter of the bytes
 * of float32 rows, so a memory-bound search over wide FDEs reads a quarter as much. The walk
 * is hnswlib's: greedy descent through the upper levels from the entry point, then a
 * beam of width ef on level 0; deleted rows are walked through but never returned.
 */
typedef struct {
    float score;
    uint32_t id;
} scored;

/* binary heap of `scored`; max-heap when sign = 1, min-heap when sign = -1 */
static inline int heap_before(scored a, scored b, int sign) {
    return sign > 0 ? a.score > b.score : a.score < b.score;
}

static void heap_push(scored *h, int64_t *n, scored x, int sign) {
    int64_t i = (*n)++;
    while (i > 0) {
        const int64_t parent = (i - 1) / 2;
        if (!heap_before(x, h[parent], sign)) break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = x;
}

static scored heap_pop(scored *h, int64_t *n, int sign) {
    const scored top = h[0];
    const scored last = h[--(*n)];
    int64_t i = 0;
    for (;;) {
        int64_t child = 2 * i + 1;
        if (child >= *n) break;
        if (child + 1 < *n && heap_before(h[child + 1], h[child], sign)) ++child;
        if (!heap_before(h[child], last, sign)) break;
        h[i] = h[child];
        i = child;
    }
    if (*n > 0) h[i] = last;
    return top;
}

/* sum_i q[i] * c[i] in exact integer arithmetic (|q|, |c| <= 127 and d <= 65536, so no
 * overflow). With AVX-512 VNNI: u8 x s8 multiply-adds on (q + 128), corrected by
 * 128 * sum_i c[i] (csum); both paths give the same integer. */
static inline int32_t dot_i8(const int8_t *restrict q, const uint8_t *restrict qu,
                             const int8_t *restrict c, int64_t d, int32_t csum) {
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
    (void)q;
    __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512();
    int64_t i = 0;
    for (; i + 128 <= d; i += 128) {
        a0 = _mm512_dpbusd_epi32(a0, _mm512_loadu_si512(qu + i), _mm512_loadu_si512(c + i));
        a1 = _mm512_dpbusd_epi32(a1, _mm512_loadu_si512(qu + i + 64),
                                 _mm512_loadu_si512(c + i + 64));
    }
    for (; i < d; i += 64) {
        const __mmask64 m = d - i >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << (d - i)) - 1);
        a0 = _mm512_dpbusd_epi32(a0, _mm512_maskz_loadu_epi8(m, qu + i),
                                 _mm512_maskz_loadu_epi8(m, c + i));
    }
    return _mm512_reduce_add_epi32(_mm512_add_epi32(a0, a1)) - 128 * csum;
#else
    (void)qu;
    (void)csum;
    int32_t acc[32] = {0};
    int64_t i = 0;
    for (; i + 32 <= d; i += 32)
        for (int l = 0; l < 32; ++l) acc[l] += (int32_t)q[i + l] * (int32_t)c[i + l];
    int32_t total = 0;
    for (int l = 0; l < 32; ++l) total += acc[l];
    for (; i < d; ++i) total += (int32_t)q[i] * (int32_t)c[i];
    return total;
#endif
}

typedef struct {
    const int8_t *codes;
    const float *meta; /* (n, 2): scale, sum of the codes */
    int64_t d;
    const uint32_t *links0; /* (n, stride0): count in the low 16 bits of word 0, then ids */
    int64_t stride0;
    const uint32_t *upper;  /* upper-level lists, stride_up words each, same layout */
    const int64_t *upper_start; /* (n,): list of node u at level l >= 1 is upper_start[u]+l-1 */
    int64_t stride_up;
    const uint8_t *deleted; /* (n,) */
    int64_t n, entry, max_level, has_deleted;
} graph_view;

/* a query quantized like the rows: q ~ scale * codes, with codes + 128 for VNNI */
typedef struct {
    const int8_t *codes;
    const uint8_t *shifted;
    float scale;
} qquery;

static inline float graph_score(const graph_view *g, const qquery *q, uint32_t u) {
    const float *m = g->meta + 2 * (int64_t)u;
    const int32_t dot = dot_i8(q->codes, q->shifted, g->codes + (int64_t)u * g->d, g->d,
                               (int32_t)m[1]);
    return q->scale * m[0] * (float)dot;
}

/* codes[i] = round(x[i] / scale) with scale = max |x| / 127 (0 when x is all zeros) */
static float quantize_row(const float *x, int64_t d, int8_t *codes, uint8_t *shifted) {
    float top = 0.0f;
    for (int64_t i = 0; i < d; ++i) top = fabsf(x[i]) > top ? fabsf(x[i]) : top;
    const float scale = top / 127.0f, inv = top > 0.0f ? 127.0f / top : 0.0f;
    for (int64_t i = 0; i < d; ++i) {
        float v = nearbyintf(x[i] * inv);
        v = v > 127.0f ? 127.0f : (v < -127.0f ? -127.0f : v);
        codes[i] = (int8_t)v;
        shifted[i] = (uint8_t)(codes[i] + 128);
    }
    return scale;
}

static inline void prefetch_row(const graph_view *g, uint32_t u) {
#if defined(__GNUC__) || defined(__clang__)
    const char *row = (const char *)(g->codes + (int64_t)u * g->d);
    __builtin_prefetch(row);
    __builtin_prefetch(row + 64);
#else
    (void)g;
    (void)u;
#endif
}

/* A second thread that scores half of each expansion's new neighbours while one query is
 * searched (the walk itself stays on the calling thread, so the results are the same). Each
 * batch is claimed by whichever thread gets to it first: a helper that is not running when
 * the caller finishes its own half never makes the caller wait. */
#if defined(MUVERA_HAVE_THREADS)
#define MUVERA_HAVE_HELPER 1
static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}
#endif

typedef struct {
    const graph_view *g;
    const qquery *q;
    const uint32_t *ids;
    float *scores;
    int64_t n;
    uint64_t posted, claimed, finished; /* batch numbers, read and written atomically */
    int stop;
} graph_helper;

/* All of row u into the caches (the start of every row of a step is asked for first) */
static inline void prefetch_rest(const graph_view *g, uint32_t u) {
    const char *row = (const char *)(g->codes + (int64_t)u * g->d);
    for (int64_t b = 128; b < g->d; b += 64) PREFETCH(row + b);
}

/* Rows are scored in order while the whole row two places ahead is fetched: random rows of
 * kilobytes, which the hardware prefetcher does not see coming. */
static void score_rows(const graph_view *g, const qquery *q, const uint32_t *ids, int64_t n,
                       float *scores) {
    for (int64_t i = 0; i < n; ++i) prefetch_row(g, ids[i]);
    for (int64_t i = 0; i < n && i < 2; ++i) prefetch_rest(g, ids[i]);
    for (int64_t i = 0; i < n; ++i) {
        if (i + 2 < n) prefetch_rest(g, ids[i + 2]);
        scores[i] = graph_score(g, q, ids[i]);
    }
}

#ifdef MUVERA_HAVE_HELPER
static int claim(graph_helper *h, uint64_t batch) {
    uint64_t expected = batch - 1;
    return __atomic_compare_exchange_n(&h->claimed, &expected, batch, 0, __ATOMIC_ACQ_REL,
                                       __ATOMIC_ACQUIRE);
}

static void *helper_main(void *arg) {
    graph_helper *h = (graph_helper *)arg;
    uint64_t seen = 0;
    for (;;) {
        uint64_t batch;
        while ((batch = __atomic_load_n(&h->posted, __ATOMIC_ACQUIRE)) == seen) {
            if (__atomic_load_n(&h->stop, __ATOMIC_ACQUIRE)) return NULL;
            cpu_relax();
        }
        seen = batch;
        if (claim(h, batch)) {
            score_rows(h->g, h->q, h->ids, h->n, h->scores);
            __atomic_store_n(&h->finished, batch, __ATOMIC_RELEASE);
        }
    }
}
#endif

/* scores[i] = score of ids[i], i < n; with a helper, it takes the second half */
static void score_batch(const graph_view *g, const qquery *q, const uint32_t *ids, int64_t n,
                        float *scores, graph_helper *h) {
#ifdef MUVERA_HAVE_HELPER
    if (h != NULL && n >= 4) {
        const int64_t half = n / 2;
        h->q = q;
        h->ids = ids + half;
        h->scores = scores + half;
        h->n = n - half;
        const uint64_t batch = h->posted + 1;
        __atomic_store_n(&h->posted, batch, __ATOMIC_RELEASE);
        score_rows(g, q, ids, half, scores);
        if (claim(h, batch)) { /* the helper has not started it: do it here */
            score_rows(g, q, ids + half, n - half, scores + half);
        } else {
            while (__atomic_load_n(&h->finished, __ATOMIC_ACQUIRE) != batch) cpu_relax();
        }
        return;
    }
#else
    (void)h;
#endif
    score_rows(g, q, ids, n, scores);
}

/* One query; returns the number of results written (<= k), best first. `visited` holds n
 * tags, `tag` is fresh for this query; `cand` holds n + 1 entries, `best` ef + 2, `fresh`
 * and `fresh_scores` stride0 each; `helper` is NULL or a running helper thread. */
static int64_t graph_search_one(const graph_view *g, const qquery *q, int64_t ef, int64_t k,
                                uint16_t *visited, uint16_t tag, scored *cand, scored *best,
                                uint32_t *fresh, float *fresh_scores, graph_helper *helper,
                                int64_t *out_ids, float *out_scores) {
    uint32_t cur = (uint32_t)g->entry;
    float cur_score = graph_score(g, q, cur);
    for (int64_t level = g->max_level; level >= 1; --level) {
        int changed = 1;
        while (changed) {
            changed = 0;
            if (g->upper_start[cur] < 0) break;
            const uint32_t *list = g->upper + (g->upper_start[cur] + level - 1) * g->stride_up;
            const uint32_t count = list[0] & 0xFFFFu;
            int64_t m = 0;
            for (uint32_t j = 1; j <= count; ++j)
                if ((int64_t)list[j] < g->n) fresh[m++] = list[j];
            score_batch(g, q, fresh, m, fresh_scores, helper);
            for (int64_t j = 0; j < m; ++j) {
                if (fresh_scores[j] > cur_score) {
                    cur_score = fresh_scores[j];
                    cur = fresh[j];
                    changed = 1;
                }
            }
        }
    }
    int64_t n_cand = 0, n_best = 0;
    float bound = -INFINITY; /* worst score among `best` once it is full */
    visited[cur] = tag;
    const scored start = {cur_score, cur};
    heap_push(cand, &n_cand, start, 1);
    if (!g->deleted[cur]) {
        heap_push(best, &n_best, start, -1);
        bound = cur_score;
    } else {
        bound = INFINITY;
    }
    while (n_cand > 0) {
        const scored c = heap_pop(cand, &n_cand, 1);
        if (c.score < bound && (n_best == ef || !g->has_deleted)) break;
        const uint32_t *list = g->links0 + (int64_t)c.id * g->stride0;
        const uint32_t count = list[0] & 0xFFFFu;
        int64_t m = 0;
        for (uint32_t j = 1; j <= count; ++j) {
            const uint32_t v = list[j];
            if ((int64_t)v >= g->n || visited[v] == tag) continue;
            visited[v] = tag;
            fresh[m++] = v;
        }
        score_batch(g, q, fresh, m, fresh_scores, helper);
        for (int64_t j = 0; j < m; ++j) {
            const float s = fresh_scores[j];
            if (n_best < ef || s > bound) {
                const scored x = {s, fresh[j]};
                heap_push(cand, &n_cand, x, 1);
                if (!g->deleted[x.id]) heap_push(best, &n_best, x, -1);
                if (n_best > ef) heap_pop(best, &n_best, -1);
                if (n_best > 0) bound = best[0].score;
            }
        }
    }
    while (n_best > k) heap_pop(best, &n_best, -1);
    const int64_t found = n_best;
    for (int64_t i = found - 1; i >= 0; --i) {
        const scored x = heap_pop(best, &n_best, -1);
        out_ids[i] = x.id;
        out_scores[i] = x.score;
    }
    return found;
}

typedef struct {
    const graph_view *g;
    const float *queries;
    int64_t first, last, ef, k;
    int64_t *out_ids;
    float *out_scores;
    int64_t *out_counts;
    graph_helper *helper; /* one query searched with a helper thread, or NULL */
    int64_t status;
} graph_job;

static void *graph_worker(void *arg) {
    graph_job *job = (graph_job *)arg;
    const graph_view *g = job->g;
    uint16_t *visited = (uint16_t *)calloc((size_t)g->n, sizeof(uint16_t));
    int8_t *qcodes = (int8_t *)malloc((size_t)g->d * 2);
    scored *cand = (scored *)malloc((size_t)(g->n + 1) * sizeof(scored));
    scored *best = (scored *)malloc((size_t)(job->ef + 2) * sizeof(scored));
    uint32_t *fresh = (uint32_t *)malloc((size_t)(g->stride0 + g->stride_up) * sizeof(uint32_t));
    float *fresh_scores = (float *)malloc((size_t)(g->stride0 + g->stride_up) * sizeof(float));
    const int allocated = visited != NULL && qcodes != NULL && cand != NULL && best != NULL &&
                          fresh != NULL && fresh_scores != NULL;
    uint16_t tag = 0;
    for (int64_t i = job->first; allocated && i < job->last; ++i) {
        if (++tag == 0) { /* wrapped: start the tags again */
            memset(visited, 0, (size_t)g->n * sizeof(uint16_t));
            tag = 1;
        }
        qquery q = {qcodes, (const uint8_t *)(qcodes + g->d), 0.0f};
        q.scale = quantize_row(job->queries + i * g->d, g->d, qcodes, (uint8_t *)(qcodes + g->d));
        job->out_counts[i] =
            graph_search_one(g, &q, job->ef, job->k, visited, tag, cand, best, fresh,
                             fresh_scores, job->helper, job->out_ids + i * job->k,
                             job->out_scores + i * job->k);
    }
    free(visited);
    free(qcodes);
    free(cand);
    free(best);
    free(fresh);
    free(fresh_scores);
    job->status = allocated ? 0 : -1;
    return NULL;
}

/* A job of muvera_graph_search: a range of queries, or the helper of a single query (which
 * scores until the query's job tells it to stop). */
typedef struct {
    graph_job *work;
    graph_helper *helper;
    int is_helper;
} graph_task;

static void *graph_task_main(void *arg) {
    graph_task *task = (graph_task *)arg;
#ifdef MUVERA_HAVE_HELPER
    if (task->is_helper) return helper_main(task->helper);
    graph_worker(task->work);
    if (task->helper != NULL) __atomic_store_n(&task->helper->stop, 1, __ATOMIC_RELEASE);
#else
    graph_worker(task->work);
#endif
    return NULL;
}

/*
 * Top-k search of n_queries float32 queries (n_queries, d) in a graph of n int8 rows.
 *
 * codes (n, d) int8 and meta (n, 2) float32: row u is meta[u, 0] * codes[u]; meta[u, 1] is
 *     sum(codes[u]). Queries are quantized the same way (scale max|q| / 127, rounded to
 *     nearest), so scores are scale_q * scale_u * (an exact integer inner product).
 * links0 (n, stride0) uint32: level-0 neighbour list of each row (count in the low 16 bits
 *     of the first word, then the ids); upper (.., stride_up) uint32 with upper_start (n,)
 *     int64 (-1 for rows without upper levels): the same for levels 1 ..
 * deleted (n,) uint8: rows walked through but never returned; has_deleted: any set.
 * entry, max_level: the graph's entry row and its level.
 * out_ids (n_queries, k) int64 (row numbers), out_scores (n_queries, k) float32 (inner
 *     products on the codes), out_counts (n_queries,) int64: results found, best first.
 * Queries are split between n_threads threads; a single query with n_threads > 1 gets a
 * helper thread that scores half of the neighbours of each step. Returns 0, or -1 when out
 * of memory.
 */
MUVERA_EXPORT int64_t muvera_graph_search(
    const int8_t *codes, const float *meta, int64_t d, const uint32_t *links0,
    int64_t stride0, const uint32_t *upper, const int64_t *upper_start, int64_t stride_up,
    const uint8_t *deleted, int64_t has_deleted, int64_t n, int64_t entry, int64_t max_level,
    const float *queries, int64_t n_queries, int64_t ef, int64_t k, int64_t *out_ids,
    float *out_scores, int64_t *out_counts, int64_t n_threads) {
    if (ef < k) ef = k;
    graph_view g = {codes, meta, d, links0, stride0, upper, upper_start, stride_up,
                    deleted, n, entry, max_level, has_deleted};
    if (n <= 0) {
        for (int64_t i = 0; i < n_queries; ++i) out_counts[i] = 0;
        return 0;
    }
    graph_helper helper_state;
    graph_helper *helper = NULL;
#ifdef MUVERA_HAVE_HELPER
    if (n_queries == 1 && n_threads > 1) {
        memset(&helper_state, 0, sizeof helper_state);
        helper_state.g = &g;
        helper = &helper_state;
    }
#else
    (void)helper_state;
#endif
    n_threads = clamp_threads(n_threads, n_queries);
    graph_job jobs[MAX_THREADS];
    for (int64_t t = 0; t < n_threads; ++t) {
        graph_job job = {&g, queries, n_queries * t / n_threads, n_queries * (t + 1) / n_threads,
                         ef, k, out_ids, out_scores, out_counts, helper, 0};
        jobs[t] = job;
    }
    graph_task tasks[MAX_THREADS];
    for (int64_t t = 0; t < n_threads; ++t) {
        graph_task task = {jobs + t, helper, 0};
        tasks[t] = task;
    }
    int64_t n_tasks = n_threads;
    if (helper != NULL) {
        graph_task task = {NULL, helper, 1};
        tasks[n_tasks++] = task;
    }
    run_jobs(graph_task_main, tasks, sizeof(graph_task), n_tasks);
    int64_t status = 0;
    for (int64_t t = 0; t < n_threads; ++t)
        if (jobs[t].status != 0) status = -1;
    return status;
}
