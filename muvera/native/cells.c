/*
 * Approximate MaxSim by token cells (PLAID's "centroid interaction"): every stored token is
 * replaced by the centroid of its cell, so a query needs one table of <query token,
 * centroid> products and a document's score is
 *
 *     sum_i  max_{t in document}  table[code[t]][i]
 *
 * one row gather and one vector max per document token, no multiply. muvera.cells fits the
 * cells and computes the table; this file only reads it.
 */
#include "muvera.h"

typedef struct {
    const float *table; /* (n_cells, width) */
    int64_t n_cells, width;
    const uint16_t *codes; /* (n_rows,) */
    int64_t n_rows;
    const int64_t *offsets, *lengths;
    int64_t n_docs;
    float *out;
    int64_t *next_block;
    int64_t status;
} cells_job;

#define CELLS_BLOCK 64 /* documents claimed at a time */

#define CELLS_CHUNK 32 /* query lanes per pass over a document's codes */
#ifdef MUVERA_HAVE_VECTOR_EXT
#ifdef __AVX512F__
typedef vf16 vcell;
#define CELL_LANES 16
#define CELL_MAX vmax16
#else
typedef vf8 vcell;
#define CELL_LANES 8
#define CELL_MAX vmax8
#endif
#define CELL_NV (CELLS_CHUNK / CELL_LANES)

/* sum over lanes lo .. lo + CELLS_CHUNK of the maxima over the document's rows of the
 * table: the maxima stay in registers, two sets (even and odd tokens) so that two
 * dependency chains of maxima run at once */
static float span_chunk(const float *table, int64_t w, const uint16_t *code, int64_t n,
                        int64_t lo) {
    vcell even[CELL_NV], odd[CELL_NV], x;
    for (int v = 0; v < CELL_NV; ++v) {
        for (int l = 0; l < CELL_LANES; ++l) even[v][l] = -INFINITY;
        odd[v] = even[v];
    }
    int64_t t = 0;
    for (; t + 1 < n; t += 2) {
        const float *r0 = table + (int64_t)code[t] * w + lo;
        const float *r1 = table + (int64_t)code[t + 1] * w + lo;
        if (t + 9 < n) {
            PREFETCH(table + (int64_t)code[t + 8] * w + lo);
            PREFETCH(table + (int64_t)code[t + 9] * w + lo);
        }
        for (int v = 0; v < CELL_NV; ++v) {
            memcpy(&x, r0 + v * CELL_LANES, sizeof x);
            even[v] = CELL_MAX(even[v], x);
            memcpy(&x, r1 + v * CELL_LANES, sizeof x);
            odd[v] = CELL_MAX(odd[v], x);
        }
    }
    if (t < n) {
        const float *r0 = table + (int64_t)code[t] * w + lo;
        for (int v = 0; v < CELL_NV; ++v) {
            memcpy(&x, r0 + v * CELL_LANES, sizeof x);
            even[v] = CELL_MAX(even[v], x);
        }
    }
    float total = 0.0f;
    for (int v = 0; v < CELL_NV; ++v) {
        x = CELL_MAX(even[v], odd[v]);
        for (int l = 0; l < CELL_LANES; ++l) total += x[l];
    }
    return total;
}
#else
static float span_chunk(const float *table, int64_t w, const uint16_t *code, int64_t n,
                        int64_t lo) {
    float total = 0.0f;
    for (int64_t i = lo; i < lo + CELLS_CHUNK; ++i) {
        float m = -INFINITY;
        for (int64_t t = 0; t < n; ++t) {
            const float v = table[(int64_t)code[t] * w + i];
            m = v > m ? v : m;
        }
        total += m;
    }
    return total;
}
#endif

static void *cells_worker(void *arg) {
    cells_job *job = (cells_job *)arg;
    const int64_t w = job->width;
    const int64_t n_blocks = (job->n_docs + CELLS_BLOCK - 1) / CELLS_BLOCK;
    const int64_t n_cells = job->n_cells;
    for (int64_t b; (b = CLAIM_NEXT(job->next_block)) < n_blocks;) {
        const int64_t j1 = (b + 1) * CELLS_BLOCK < job->n_docs ? (b + 1) * CELLS_BLOCK
                                                               : job->n_docs;
        for (int64_t j = b * CELLS_BLOCK; j < j1; ++j) {
            const int64_t off = job->offsets[j], n = job->lengths[j];
            if (off < 0 || n < 0 || off > job->n_rows || n > job->n_rows - off) {
                job->status = -2;
                job->out[j] = NAN;
                continue;
            }
            if (n == 0) {
                job->out[j] = -INFINITY;
                continue;
            }
            const uint16_t *code = job->codes + off;
            uint16_t top = 0; /* every code checked before any row is read */
            for (int64_t t = 0; t < n; ++t) top = code[t] > top ? code[t] : top;
            if (top >= n_cells) {
                job->status = -2;
                job->out[j] = NAN;
                continue;
            }
            float total = 0.0f;
            for (int64_t lo = 0; lo < w; lo += CELLS_CHUNK)
                total += span_chunk(job->table, w, code, n, lo);
            job->out[j] = total;
        }
    }
    return NULL;
}

/*
 * Approximate MaxSim of one query against document spans of cell codes.
 *
 * table       (n_cells, width) float32: row c holds <query token i, centroid c> at i; width a
 *             multiple of 32 (pad with zeros: a padded lane adds max(0) = 0).
 * codes       (n_rows,) uint16: the cell of every stored token row (read from disk, so
 *             checked here: a code >= n_cells or a span outside 0 .. n_rows is an error).
 * offsets, lengths  (n_docs,) int64: document j is codes offsets[j] .. + lengths[j].
 * out         (n_docs,) float32: the approximate score; -inf for a document with no tokens.
 * n_threads   threads that claim blocks of documents.
 * Returns 0, -1 when memory cannot be allocated, -2 for a bad code or span, -3 for a width
 * that is not a multiple of 32.
 */
MUVERA_EXPORT int64_t muvera_cell_scores(const float *table, int64_t n_cells, int64_t width,
                                         const uint16_t *codes, int64_t n_rows,
                                         const int64_t *offsets, const int64_t *lengths,
                                         int64_t n_docs, float *out, int64_t n_threads) {
    if (width % CELLS_CHUNK != 0) return -3;
    const int64_t n_blocks = (n_docs + CELLS_BLOCK - 1) / CELLS_BLOCK;
    n_threads = clamp_threads(n_threads, n_blocks > 0 ? n_blocks : 1);
    int64_t next_block = 0;
    cells_job jobs[MAX_THREADS];
    for (int64_t t = 0; t < n_threads; ++t) {
        cells_job job = {table,   n_cells, width, codes, n_rows,      offsets,
                         lengths, n_docs,  out,   &next_block, 0};
        jobs[t] = job;
    }
    run_jobs(cells_worker, jobs, sizeof(cells_job), n_threads);
    int64_t status = 0;
    for (int64_t t = 0; t < n_threads; ++t) {
        if (jobs[t].status == -1) status = -1;
        if (jobs[t].status == -2 && status == 0) status = -2;
    }
    return status;
}

/*
 * The table of one query: out[c][i] = <centroid c, query token i> for i < n_q, 0 for
 * n_q <= i < width (width a multiple of 32). One thread, on purpose: the cell scans that
 * read the table run on the core that writes it, where its rows stay in the cache (a BLAS
 * product splits the rows between threads, and those threads then keep spinning on the
 * cores the rest of the search needs).
 *
 * centroids   (n_cells, d) float32.
 * query       (n_q, d) float32.
 * out         (n_cells, width) float32.
 * Returns 0, -1 when memory cannot be allocated, -3 for a width that is not a multiple of 32
 * or smaller than n_q.
 */
MUVERA_EXPORT int64_t muvera_cell_table(const float *centroids, int64_t n_cells, int64_t d,
                                        const float *query, int64_t n_q, int64_t width,
                                        float *out) {
    if (width % CELLS_CHUNK != 0 || width < n_q || n_q < 0 || d < 0 || n_cells < 0) return -3;
    float *qt = (float *)calloc((size_t)(d > 0 ? d : 1) * (size_t)width, sizeof(float));
    if (qt == NULL) return -1;
    for (int64_t i = 0; i < n_q; ++i) /* query transposed: row k holds lane i = token i */
        for (int64_t k = 0; k < d; ++k) qt[k * width + i] = query[i * d + k];
    int64_t c = 0;
#if defined(__AVX512F__)
    /* 4 cells x 32 lanes at a time: 8 accumulators hide the FMA latency */
    for (; c + 4 <= n_cells; c += 4) {
        const float *r0 = centroids + c * d, *r1 = r0 + d, *r2 = r1 + d, *r3 = r2 + d;
        for (int64_t lo = 0; lo < width; lo += CELLS_CHUNK) {
            __m512 a00 = _mm512_setzero_ps(), a01 = a00, a10 = a00, a11 = a00;
            __m512 a20 = a00, a21 = a00, a30 = a00, a31 = a00;
            for (int64_t k = 0; k < d; ++k) {
                const __m512 q0 = _mm512_loadu_ps(qt + k * width + lo);
                const __m512 q1 = _mm512_loadu_ps(qt + k * width + lo + 16);
                __m512 f = _mm512_set1_ps(r0[k]);
                a00 = _mm512_fmadd_ps(f, q0, a00), a01 = _mm512_fmadd_ps(f, q1, a01);
                f = _mm512_set1_ps(r1[k]);
                a10 = _mm512_fmadd_ps(f, q0, a10), a11 = _mm512_fmadd_ps(f, q1, a11);
                f = _mm512_set1_ps(r2[k]);
                a20 = _mm512_fmadd_ps(f, q0, a20), a21 = _mm512_fmadd_ps(f, q1, a21);
                f = _mm512_set1_ps(r3[k]);
                a30 = _mm512_fmadd_ps(f, q0, a30), a31 = _mm512_fmadd_ps(f, q1, a31);
            }
            float *o = out + c * width + lo;
            _mm512_storeu_ps(o, a00), _mm512_storeu_ps(o + 16, a01);
            _mm512_storeu_ps(o + width, a10), _mm512_storeu_ps(o + width + 16, a11);
            _mm512_storeu_ps(o + 2 * width, a20), _mm512_storeu_ps(o + 2 * width + 16, a21);
            _mm512_storeu_ps(o + 3 * width, a30), _mm512_storeu_ps(o + 3 * width + 16, a31);
        }
    }
#elif defined(__AVX2__) && defined(__FMA__)
    /* 6 cells x 16 lanes at a time: 12 accumulators (two FMA pipes of latency 4-5 need 8
     * to 10 in flight) and 2 + 6 loads per 12 FMAs, in 15 of the 16 registers; lanes past
     * the query's tokens (rounded up to 8) are zeros, not computed */
    const int64_t used = (n_q + 7) / 8 * 8; /* lanes computed; zeros after them */
    for (; c + 6 <= n_cells; c += 6) {
        const float *r = centroids + c * d;
        for (int64_t lo = 0; lo < width; lo += 16) {
            float *o = out + c * width + lo;
            if (lo >= used) {
                for (int i = 0; i < 6; ++i) memset(o + i * width, 0, 16 * sizeof(float));
                continue;
            }
            if (lo + 8 >= used) { /* 8 lanes: 6 accumulators */
                __m256 a0 = _mm256_setzero_ps(), b0 = a0, e0 = a0, g0 = a0, h0 = a0, j0 = a0;
                for (int64_t k = 0; k < d; ++k) {
                    const __m256 q0 = _mm256_loadu_ps(qt + k * width + lo);
                    a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(r + k), q0, a0);
                    b0 = _mm256_fmadd_ps(_mm256_broadcast_ss(r + d + k), q0, b0);
                    e0 = _mm256_fmadd_ps(_mm256_broadcast_ss(r + 2 * d + k), q0, e0);
                    g0 = _mm256_fmadd_ps(_mm256_broadcast_ss(r + 3 * d + k), q0, g0);
                    h0 = _mm256_fmadd_ps(_mm256_broadcast_ss(r + 4 * d + k), q0, h0);
                    j0 = _mm256_fmadd_ps(_mm256_broadcast_ss(r + 5 * d + k), q0, j0);
                }
                const __m256 z = _mm256_setzero_ps();
                const __m256 acc[6] = {a0, b0, e0, g0, h0, j0};
                for (int i = 0; i < 6; ++i)
                    _mm256_storeu_ps(o + i * width, acc[i]), _mm256_storeu_ps(o + i * width + 8, z);
                continue;
            }
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, b0 = a0, b1 = a0, e0 = a0, e1 = a0;
            __m256 g0 = a0, g1 = a0, h0 = a0, h1 = a0, j0 = a0, j1 = a0;
            /* the next tile's rows, a line of each per 16 steps (too short a stream for the
             * hardware prefetcher to learn when the centroids are not in the cache) */
            const int prefetch = lo == 0 && c + 12 <= n_cells;
            for (int64_t k = 0; k < d; ++k) {
                if (prefetch && (k & 15) == 0)
                    for (int i = 6; i < 12; ++i) PREFETCH(r + i * d + k);
                const float *q = qt + k * width + lo;
                const __m256 q0 = _mm256_loadu_ps(q), q1 = _mm256_loadu_ps(q + 8);
                __m256 f = _mm256_broadcast_ss(r + k);
                a0 = _mm256_fmadd_ps(f, q0, a0), a1 = _mm256_fmadd_ps(f, q1, a1);
                f = _mm256_broadcast_ss(r + d + k);
                b0 = _mm256_fmadd_ps(f, q0, b0), b1 = _mm256_fmadd_ps(f, q1, b1);
                f = _mm256_broadcast_ss(r + 2 * d + k);
                e0 = _mm256_fmadd_ps(f, q0, e0), e1 = _mm256_fmadd_ps(f, q1, e1);
                f = _mm256_broadcast_ss(r + 3 * d + k);
                g0 = _mm256_fmadd_ps(f, q0, g0), g1 = _mm256_fmadd_ps(f, q1, g1);
                f = _mm256_broadcast_ss(r + 4 * d + k);
                h0 = _mm256_fmadd_ps(f, q0, h0), h1 = _mm256_fmadd_ps(f, q1, h1);
                f = _mm256_broadcast_ss(r + 5 * d + k);
                j0 = _mm256_fmadd_ps(f, q0, j0), j1 = _mm256_fmadd_ps(f, q1, j1);
            }
            _mm256_storeu_ps(o, a0), _mm256_storeu_ps(o + 8, a1);
            _mm256_storeu_ps(o + width, b0), _mm256_storeu_ps(o + width + 8, b1);
            _mm256_storeu_ps(o + 2 * width, e0), _mm256_storeu_ps(o + 2 * width + 8, e1);
            _mm256_storeu_ps(o + 3 * width, g0), _mm256_storeu_ps(o + 3 * width + 8, g1);
            _mm256_storeu_ps(o + 4 * width, h0), _mm256_storeu_ps(o + 4 * width + 8, h1);
            _mm256_storeu_ps(o + 5 * width, j0), _mm256_storeu_ps(o + 5 * width + 8, j1);
        }
    }
    /* the last cells: 2 x 32 lanes at a time */
    for (; c + 2 <= n_cells; c += 2) {
        const float *r0 = centroids + c * d, *r1 = r0 + d;
        for (int64_t lo = 0; lo < width; lo += CELLS_CHUNK) {
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
            for (int64_t k = 0; k < d; ++k) {
                const float *q = qt + k * width + lo;
                const __m256 q0 = _mm256_loadu_ps(q), q1 = _mm256_loadu_ps(q + 8);
                const __m256 q2 = _mm256_loadu_ps(q + 16), q3 = _mm256_loadu_ps(q + 24);
                __m256 f = _mm256_set1_ps(r0[k]);
                a0 = _mm256_fmadd_ps(f, q0, a0), a1 = _mm256_fmadd_ps(f, q1, a1);
                a2 = _mm256_fmadd_ps(f, q2, a2), a3 = _mm256_fmadd_ps(f, q3, a3);
                f = _mm256_set1_ps(r1[k]);
                b0 = _mm256_fmadd_ps(f, q0, b0), b1 = _mm256_fmadd_ps(f, q1, b1);
                b2 = _mm256_fmadd_ps(f, q2, b2), b3 = _mm256_fmadd_ps(f, q3, b3);
            }
            float *o = out + c * width + lo;
            _mm256_storeu_ps(o, a0), _mm256_storeu_ps(o + 8, a1);
            _mm256_storeu_ps(o + 16, a2), _mm256_storeu_ps(o + 24, a3);
            _mm256_storeu_ps(o + width, b0), _mm256_storeu_ps(o + width + 8, b1);
            _mm256_storeu_ps(o + width + 16, b2), _mm256_storeu_ps(o + width + 24, b3);
        }
    }
#endif
    for (; c < n_cells; ++c) {
        const float *row = centroids + c * d;
        for (int64_t lo = 0; lo < width; lo += CELLS_CHUNK) {
            float acc[CELLS_CHUNK] = {0};
            for (int64_t k = 0; k < d; ++k) {
                const float f = row[k];
                const float *q = qt + k * width + lo;
                for (int l = 0; l < CELLS_CHUNK; ++l) acc[l] += f * q[l];
            }
            memcpy(out + c * width + lo, acc, sizeof acc);
        }
    }
    free(qt);
    return 0;
}

/*
 * Postings of the token cells: for every cell, the labels of the documents that have a token
 * in it, each label once per cell, in the order the documents are given (ascending labels
 * when the caller passes them so). Two calls: postings == NULL counts (bounds[c + 1] -
 * bounds[c] = the length of cell c's list, bounds[0] = 0), then the same call with postings
 * (bounds[n_cells] entries, bounds as the first call left them) fills the lists.
 *
 * codes       (n_rows,) uint16, read from disk: a code >= n_cells is an error.
 * labels, offsets, lengths  (n_docs,) int64: document labels[j] (0 .. INT32_MAX) is codes
 *             offsets[j] .. + lengths[j] (inside 0 .. n_rows).
 * Returns the number of postings, -1 when memory cannot be allocated, -2 for a bad code,
 * span or label.
 */
MUVERA_EXPORT int64_t muvera_cell_postings(const uint16_t *codes, int64_t n_rows, int64_t n_cells,
                                           const int64_t *labels, const int64_t *offsets,
                                           const int64_t *lengths, int64_t n_docs,
                                           int64_t *bounds, int32_t *postings) {
    if (n_cells < 1) return -2;
    int64_t *last = (int64_t *)malloc((size_t)n_cells * sizeof(int64_t));
    int64_t *cursor = postings ? (int64_t *)malloc((size_t)n_cells * sizeof(int64_t)) : NULL;
    if (!last || (postings && !cursor)) {
        free(last);
        free(cursor);
        return -1;
    }
    for (int64_t c = 0; c < n_cells; ++c) last[c] = -1;
    if (postings)
        for (int64_t c = 0; c < n_cells; ++c) cursor[c] = bounds[c];
    else
        for (int64_t c = 0; c <= n_cells; ++c) bounds[c] = 0;
    int64_t status = 0;
    for (int64_t j = 0; j < n_docs && status == 0; ++j) {
        const int64_t off = offsets[j], n = lengths[j], label = labels[j];
        if (off < 0 || n < 0 || off > n_rows || n > n_rows - off || label < 0 ||
            label > INT32_MAX) {
            status = -2;
            break;
        }
        for (int64_t t = off; t < off + n; ++t) {
            const int64_t c = codes[t];
            if (c >= n_cells) {
                status = -2;
                break;
            }
            if (last[c] == j) continue;
            last[c] = j;
            if (postings)
                postings[cursor[c]++] = (int32_t)label;
            else
                bounds[c + 1] += 1;
        }
    }
    if (!postings && status == 0)
        for (int64_t c = 0; c < n_cells; ++c) bounds[c + 1] += bounds[c];
    free(last);
    free(cursor);
    return status == 0 ? bounds[n_cells] : status;
}

/*
 * Documents reached from the cells a query probes, scored as PLAID's pruned centroid
 * interaction: for query token i, its probed cells in descending order of <q_i, centroid>,
 * a document gets the value of the first probed cell that holds one of its tokens (its best
 * over the probed cells) and nothing from cells not probed; its score is the sum over the
 * query tokens.
 *
 * bounds, postings  from muvera_cell_postings (n_cells + 1 and n_postings entries).
 * probe_cells, probe_values  (probe_starts[n_tokens],) the probed cells of token i at
 *             probe_starts[i] .. probe_starts[i + 1], best first, and their values.
 * score       (n_docs,) float32, zero on entry: the scores are added to it.
 * stamp       (n_docs,) int32, zero on entry: scratch (token + 1 that last reached a label).
 * touched     (n_docs,) int64: the labels reached, each once, in order of first reach.
 * Returns how many labels were reached, or -2 for a cell, bound or label out of range.
 */
#define PROBE_AHEAD 16 /* postings read ahead of the one scored */

MUVERA_EXPORT int64_t muvera_cell_probe(const int64_t *bounds, int64_t n_cells,
                                        const int32_t *postings, int64_t n_postings,
                                        const int64_t *probe_cells, const float *probe_values,
                                        const int64_t *probe_starts, int64_t n_tokens,
                                        float *score, int32_t *stamp, int64_t n_docs,
                                        int64_t *touched) {
    int64_t reached = 0;
    if (n_tokens >= INT32_MAX) return -2;
    for (int64_t i = 0; i < n_tokens; ++i) {
        const int32_t mark = (int32_t)(i + 1);
        for (int64_t p = probe_starts[i]; p < probe_starts[i + 1]; ++p) {
            const int64_t c = probe_cells[p];
            if (c < 0 || c >= n_cells) return -2;
            const int64_t lo = bounds[c], hi = bounds[c + 1];
            if (lo < 0 || lo > hi || hi > n_postings) return -2;
            const float v = probe_values[p];
            for (int64_t e = lo; e < hi; ++e) {
                const int32_t d = postings[e];
                if (e + PROBE_AHEAD < hi) { /* random reads: start them early */
                    const int32_t ahead = postings[e + PROBE_AHEAD];
                    if (ahead >= 0 && ahead < n_docs) PREFETCH(stamp + ahead), PREFETCH(score + ahead);
                }
                if (d < 0 || d >= n_docs) return -2;
                if (stamp[d] == mark) continue;
                if (stamp[d] == 0) touched[reached++] = d;
                stamp[d] = mark;
                score[d] += v;
            }
        }
    }
    return reached;
}

/* The k best cells of each of a query's first n_lanes tokens: lanes of the table
 * (n_cells, width) of muvera_cell_table. One pass over the table in row order (no
 * transposed copy): each lane keeps its best k values sorted, best first, ties to the lower
 * cell (as repeated argmax passes would pick them); a value enters only when it beats the
 * lane's k-th, so after the first rows the branch is rarely taken.
 *
 * cells   (n_lanes * k,) int64: lane l's cells at l * k .. l * k + k, best first.
 * values  (n_lanes * k,) float32: their table values.
 * Returns 0, -1 when memory cannot be allocated, or -3 for sizes out of range (n_lanes >
 * width, k < 1 or k > n_cells); a lane whose values are all NaN or -inf keeps cell -1
 * there (the caller checks).
 */
MUVERA_EXPORT int64_t muvera_cell_top(const float *table, int64_t n_cells, int64_t width,
                                      int64_t n_lanes, int64_t k, int64_t *cells,
                                      float *values) {
    if (n_lanes < 0 || n_lanes > width || k < 1 || k > n_cells) return -3;
    for (int64_t i = 0; i < n_lanes * k; ++i) cells[i] = -1, values[i] = -INFINITY;
    float *floor = (float *)malloc((size_t)(n_lanes > 0 ? n_lanes : 1) * sizeof(float));
    if (floor == NULL) return -1;
    for (int64_t l = 0; l < n_lanes; ++l) floor[l] = -INFINITY; /* each lane's k-th value */
    for (int64_t c = 0; c < n_cells; ++c) {
        const float *restrict row = table + c * width;
        int any = 0; /* a whole row compared at once (vectorised): most rows enter nowhere */
        for (int64_t l = 0; l < n_lanes; ++l) any |= row[l] > floor[l];
        if (!any) continue;
        for (int64_t l = 0; l < n_lanes; ++l) {
            const float v = row[l];
            if (!(v > floor[l])) continue;
            float *restrict best = values + l * k;
            int64_t *restrict ids = cells + l * k;
            int64_t j = k - 1;
            for (; j > 0 && v > best[j - 1]; --j) best[j] = best[j - 1], ids[j] = ids[j - 1];
            best[j] = v, ids[j] = c;
            floor[l] = best[k - 1];
        }
    }
    free(floor);
    return 0;
}
