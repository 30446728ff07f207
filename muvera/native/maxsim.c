#include "muvera.h"

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

/* Residual rows (token dtype "residual4", muvera/token_codes.py): rows from `first` on store
 * a token minus the base row of its label (labels: one uint16 per token row of the file,
 * n_labels of them; bases: (n_bases, d) float32), added back after decoding. */
typedef struct {
    const float *bases;
    int64_t n_bases;
    const uint16_t *labels;
    int64_t n_labels, first;
} residual_rows;

/* Adds the bases of rows row0 .. row0 + n (decoded into x) that lie at or after `first`;
 * returns -2 when a label or a row falls outside the arrays (a damaged file), else 0. */
static int64_t add_bases(const residual_rows *r, int64_t row0, int64_t n, int64_t d,
                         float *x) {
    const int64_t start = r->first > row0 ? r->first - row0 : 0;
    if (start >= n) return 0;
    if (row0 + n > r->n_labels) return -2;
    for (int64_t t = start; t < n; ++t) {
        const int64_t label = r->labels[row0 + t];
        if (label >= r->n_bases) return -2;
        const float *restrict b = r->bases + label * d;
        float *restrict dst = x + t * d;
        for (int64_t i = 0; i < d; ++i) dst[i] += b[i];
    }
    return 0;
}

#ifdef MUVERA_HAVE_VECTOR_EXT

/* Keeps a value in a register: without it GCC re-reads the query vectors from memory as
 * an operand of every multiply-add, and the loads, not the arithmetic, set the pace
 * (on AVX2 too). Only where the vector is one register: 16 floats with AVX-512, 8 with
 * AVX. */
#if defined(__AVX512F__) && (defined(__GNUC__) || defined(__clang__))
#define IN_REGISTER16(v) __asm__("" : "+v"(v)) /* one zmm register */
#else
#define IN_REGISTER16(v) ((void)0)
#endif
#if defined(__AVX__) && (defined(__GNUC__) || defined(__clang__))
#define IN_REGISTER8(v) __asm__("" : "+x"(v)) /* one ymm register */
#else
#define IN_REGISTER8(v) ((void)0)
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
                    IN_REGISTER16(q16[w]);                                                 \
                }                                                                          \
                for (int w = 0; w < (N8); ++w) {                                           \
                    memcpy(&q8[w], qt + i * W + 16 * (N16) + 8 * w, sizeof(vf8));          \
                    IN_REGISTER8(q8[w]);                                                   \
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

#if defined(__AVX512F__) || !defined(__AVX__) /* AVX-512: 32 registers of 16 floats (and
                                              * the shapes every build had before) */
#define MUVERA_WIDE_GROUPS 1
DEFINE_MAXSIM_GROUP(maxsim_group32, 2, 0, 8)
DEFINE_MAXSIM_GROUP(maxsim_group24, 1, 1, 8)
DEFINE_MAXSIM_GROUP(maxsim_group16, 1, 0, 16)
DEFINE_MAXSIM_GROUP(maxsim_group8, 0, 1, 16)
#else /* AVX2: 16 registers of 8 floats: groups of at most 16 lanes (group_width), tiles
        * whose accumulators and query vectors fit them (benchmarks/bench_variants.py) */
DEFINE_MAXSIM_GROUP(maxsim_group16, 0, 2, 6)
DEFINE_MAXSIM_GROUP(maxsim_group8, 0, 1, 12)
#endif

/* running maxima m[0 .. width) of a group of width 32, 24 (not on AVX2), 16 or 8 */
static void maxsim_group(const float *restrict x, int64_t n, int64_t d, const float *restrict qt,
                         int64_t width, float *restrict m) {
    switch (width) {
#ifdef MUVERA_WIDE_GROUPS
    case 32: maxsim_group32(x, n, d, qt, m); break;
    case 24: maxsim_group24(x, n, d, qt, m); break;
#endif
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
 * remain, else the narrowest of 24, 16, 8 that holds them (at most 7 idle lanes); on AVX2
 * at most 16 (its 16 registers hold a 6-token tile of 16 lanes). */
static int64_t group_width(int64_t remaining) {
#if defined(MUVERA_WIDE_GROUPS) || !defined(MUVERA_HAVE_VECTOR_EXT)
    if (remaining > 24) return 32;
    if (remaining > 16) return 24;
#endif
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
    int64_t kind, d; /* KIND_*: how a token row is stored */
    const int64_t *offsets, *lengths;
    int64_t n_docs; /* spans: documents, or (query, document) pairs when pair_query is set */
    const qgroup *groups;
    const int64_t *group_start; /* (n_queries + 1,): query q's groups */
    const int64_t *q_offsets;
    int64_t n_groups, n_queries;
    const int64_t *pair_query; /* NULL: every query x every span; else span j's one query */
    float *scores; /* (n_queries, n_docs), or (n_docs,) for pairs */
    int64_t *next_doc; /* shared by the workers: the next span nobody has claimed */
    const residual_rows *residual; /* NULL, or the bases added back to decoded rows */
    int64_t status;
} maxsim_job;

/* MaxSim of query-token groups g0 .. g1 (all of one query) against tokens x (n, d) */
static float groups_score(const float *x, int64_t n, int64_t d, const qgroup *groups, int64_t g0,
                          int64_t g1) {
    float total = 0.0f;
    for (int64_t g = g0; g < g1; ++g) {
        const qgroup *grp = groups + g;
        float m[QGROUP];
        for (int l = 0; l < QGROUP; ++l) m[l] = -INFINITY;
        maxsim_group(x, n, d, grp->qt, grp->width, m);
        for (int64_t l = 0; l < grp->lanes; ++l) total += m[l];
    }
    return total;
}

static void *maxsim_worker(void *arg) {
    maxsim_job *job = (maxsim_job *)arg;
    const int64_t d = job->d;
    int64_t max_len = 0;
    for (int64_t j = 0; j < job->n_docs; ++j)
        if (job->lengths[j] > max_len) max_len = job->lengths[j];
    float *buf = NULL;
    if (job->kind != KIND_F32 && max_len > 0) {
        buf = (float *)malloc((size_t)(max_len * d) * sizeof(float));
        if (buf == NULL) {
            job->status = -1;
            return NULL;
        }
    }
    /* spans are claimed one at a time, so a thread that starts late does fewer */
    for (int64_t j; (j = CLAIM_NEXT(job->next_doc)) < job->n_docs;) {
        const int64_t n = job->lengths[j];
        const int64_t q0 = job->pair_query ? job->pair_query[j] : 0;
        const int64_t q1 = job->pair_query ? q0 + 1 : job->n_queries;
        for (int64_t q = q0; q < q1; ++q) {
            const int has_tokens = job->q_offsets[q + 1] > job->q_offsets[q];
            const float init = (n > 0 || !has_tokens) ? 0.0f : -INFINITY;
            job->scores[job->pair_query ? j : q * job->n_docs + j] = init;
        }
        if (n <= 0) continue;
        if (j + 1 < job->n_docs && job->lengths[j + 1] > 0) { /* the next span: in cache by
                                                               * the time its turn comes */
            const int64_t size = token_row_bytes(job->kind, d);
            const char *next = (const char *)job->tokens + job->offsets[j + 1] * size;
            for (int64_t b = 0; b < job->lengths[j + 1] * size; b += 64) PREFETCH(next + b);
        }
        const float *x;
        const unsigned char *row =
            (const unsigned char *)job->tokens + job->offsets[j] * token_row_bytes(job->kind, d);
        if (job->kind == KIND_F16) {
            halfs_to_floats((const uint16_t *)row, buf, n * d);
            x = buf;
        } else if (job->kind != KIND_F32) {
            codes_to_floats(row, job->kind, d, buf, n);
            if (job->residual != NULL &&
                add_bases(job->residual, job->offsets[j], n, d, buf) != 0) {
                job->status = -2;
                break;
            }
            x = buf;
        } else {
            x = (const float *)row;
        }
        for (int64_t q = q0; q < q1; ++q) {
            const float total = groups_score(x, n, d, job->groups, job->group_start[q],
                                             job->group_start[q + 1]);
            job->scores[job->pair_query ? j : q * job->n_docs + j] += total;
        }
    }
    free(buf);
    return NULL;
}

/* Queries transposed into groups (group_start: (n_queries + 1,)), then the spans scored by
 * n_threads workers; pair_query NULL = every query x every span. */
static int64_t maxsim_run(const void *tokens, int64_t kind, int64_t d, const int64_t *offsets,
                          const int64_t *lengths, int64_t n_docs, const int64_t *pair_query,
                          const float *queries, const int64_t *q_offsets, int64_t n_queries,
                          float *scores, int64_t n_threads, const residual_rows *residual) {
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
    int64_t *group_start = (int64_t *)malloc((size_t)(n_queries + 1) * sizeof(int64_t));
    float *qt = (float *)malloc((size_t)((n_lanes > 0 ? n_lanes : 1) * d) * sizeof(float));
    if (groups == NULL || group_start == NULL || qt == NULL) {
        free(groups);
        free(group_start);
        free(qt);
        return -1;
    }
    int64_t g = 0;
    float *dst = qt;
    for (int64_t q = 0; q < n_queries; ++q) {
        const int64_t hi = q_offsets[q + 1];
        group_start[q] = g;
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
    group_start[n_queries] = g;
    n_threads = clamp_threads(n_threads, n_docs);
    int64_t next_doc = 0;
    maxsim_job jobs[MAX_THREADS];
    for (int64_t t = 0; t < n_threads; ++t) {
        maxsim_job job = {tokens,   kind,      d,        offsets,    lengths, n_docs,
                          groups,   group_start, q_offsets, n_groups, n_queries, pair_query,
                          scores,   &next_doc,   residual,  0};
        jobs[t] = job;
    }
    int64_t status = 0;
    run_jobs(maxsim_worker, jobs, sizeof(maxsim_job), n_threads);
    for (int64_t t = 0; t < n_threads; ++t)
        if (jobs[t].status != 0 && status != -2) status = jobs[t].status;
    free(groups);
    free(group_start);
    free(qt);
    return status;
}

/*
 * Exact MaxSim of every query against every document.
 *
 * tokens      token rows of width d: float32 (kind 0), float16 (1), or a float32 scale
 *             and d int8 codes (2) or ceil(d/2) bytes of 4-bit codes (3), see row_bytes.
 * offsets, lengths  (n_docs,) int64: document j is rows offsets[j] .. + lengths[j].
 * queries     (sum of query lengths, d) float32 row-major, queries concatenated.
 * q_offsets   (n_queries + 1,) int64: query i is rows q_offsets[i] .. q_offsets[i+1].
 * scores      (n_queries, n_docs) float32 out: MaxSim; -inf for a document with no
 *             tokens, 0 for a query with none.
 * n_threads   threads that claim documents one at a time (a late starter does fewer).
 * bases       NULL, or (quantized kinds only) residual rows: token rows from residual_from
 *             on decode to their codes plus bases[labels[row]] ((n_bases, d) float32;
 *             labels (n_labels,) uint16, one per token row, read from a file: checked).
 * Returns 0, -1 when memory cannot be allocated, -2 when a residual row's label is not
 * below n_bases or the row has no label.
 */
MUVERA_EXPORT int64_t muvera_maxsim(const void *tokens, int64_t kind, int64_t d,
                                    const int64_t *offsets, const int64_t *lengths,
                                    int64_t n_docs, const float *queries,
                                    const int64_t *q_offsets, int64_t n_queries,
                                    float *scores, int64_t n_threads, const float *bases,
                                    int64_t n_bases, const uint16_t *labels, int64_t n_labels,
                                    int64_t residual_from) {
    const residual_rows residual = {bases, n_bases, labels, n_labels, residual_from};
    return maxsim_run(tokens, kind, d, offsets, lengths, n_docs, NULL, queries, q_offsets,
                      n_queries, scores, n_threads, bases != NULL ? &residual : NULL);
}

/*
 * Exact MaxSim of (query, document) pairs: the re-rank of a batch, each query against its
 * own candidates, all pairs shared between the threads.
 *
 * offsets, lengths  (n_pairs,) int64: pair p's document is rows offsets[p] .. + lengths[p].
 * pair_query  (n_pairs,) int64: pair p's query, in 0 .. n_queries (checked by the caller).
 * scores      (n_pairs,) float32 out, with muvera_maxsim's conventions.
 * The other arguments and the return value are muvera_maxsim's.
 */
MUVERA_EXPORT int64_t muvera_maxsim_pairs(const void *tokens, int64_t kind, int64_t d,
                                          const int64_t *offsets, const int64_t *lengths,
                                          const int64_t *pair_query, int64_t n_pairs,
                                          const float *queries, const int64_t *q_offsets,
                                          int64_t n_queries, float *scores, int64_t n_threads,
                                          const float *bases, int64_t n_bases,
                                          const uint16_t *labels, int64_t n_labels,
                                          int64_t residual_from) {
    const residual_rows residual = {bases, n_bases, labels, n_labels, residual_from};
    return maxsim_run(tokens, kind, d, offsets, lengths, n_pairs, pair_query, queries,
                      q_offsets, n_queries, scores, n_threads,
                      bases != NULL ? &residual : NULL);
}
