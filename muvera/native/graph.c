#include "muvera.h"

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
