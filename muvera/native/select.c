/*
 * The probe's keep step: of the documents muvera_cell_probe reached (its touched list and
 * score array), the `want` best live ones by score, ties to the one reached first, found
 * by a two-level radix select on the scores' order-preserving 32-bit keys (no sort, no
 * copy of the scores to Python); every reached document's score and stamp are set back to
 * 0 on the way, so the caller's scratch arrays stay reusable.
 */
#include "muvera.h"

#define SELECT_BUCKETS 65536 /* 16 bits of the key per level */
#define KEEP_AHEAD 16        /* reached documents read ahead of the one kept */

/* A float's bits turned into an unsigned key in the same order (larger float, larger key);
 * NaN maps to 0, the key of "not a candidate" (no finite float gets 0). */
static inline uint32_t order_key(float v) {
    uint32_t u;
    if (v != v) return 0;
    v += 0.0f; /* -0 -> +0: equal floats, equal keys */
    memcpy(&u, &v, sizeof u);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* The bucket holding the need-th largest key (need >= 1) of a histogram, and how many
 * keys lie in higher buckets (*above). */
static int64_t top_bucket(const uint32_t *hist, int64_t need, int64_t *above) {
    int64_t seen = 0;
    for (int64_t b = SELECT_BUCKETS - 1; b >= 0; --b) {
        if (seen + hist[b] >= need) {
            *above = seen;
            return b;
        }
        seen += hist[b];
    }
    *above = seen;
    return 0;
}

/*
 * score (n_docs,) float32 and stamp (n_docs,) int32: muvera_cell_probe's scratch, nonzero
 *   only at the reached documents; left zero there.
 * touched (reached,) int64: the reached documents, in order of first reach.
 * alive (n_docs,) uint8: 0 = not a candidate (deleted, or outside a filter).
 * out (want,) int64: the kept documents, in order of first reach.
 * Returns how many were kept (min(want, live reached)), -1 when memory cannot be allocated
 * or -2 for a document out of range (then nothing is zeroed: the caller resets the
 * scratch).
 */
MUVERA_EXPORT int64_t muvera_probe_keep(float *score, int32_t *stamp, int64_t n_docs,
                                        const int64_t *touched, int64_t reached,
                                        const uint8_t *alive, int64_t want, int64_t *out) {
    if (reached < 0 || want < 0) return -2;
    for (int64_t i = 0; i < reached; ++i)
        if (touched[i] < 0 || touched[i] >= n_docs) return -2;
    uint32_t *keys = (uint32_t *)malloc((size_t)(reached > 0 ? reached : 1) * sizeof(uint32_t));
    uint32_t *hist = (uint32_t *)calloc(SELECT_BUCKETS, sizeof(uint32_t));
    if (keys == NULL || hist == NULL) {
        free(keys);
        free(hist);
        return -1;
    }
    int64_t live = 0;
    for (int64_t i = 0; i < reached; ++i) {
        const int64_t d = touched[i];
        if (i + KEEP_AHEAD < reached) { /* random reads: start them early */
            const int64_t ahead = touched[i + KEEP_AHEAD];
            PREFETCH(score + ahead), PREFETCH(stamp + ahead), PREFETCH(alive + ahead);
        }
        const uint32_t key = alive[d] ? order_key(score[d]) : 0;
        score[d] = 0.0f;
        stamp[d] = 0;
        keys[i] = key;
        if (key) ++hist[key >> 16], ++live;
    }
    int64_t kept = 0;
    if (want >= live) { /* every live one */
        for (int64_t i = 0; i < reached; ++i)
            if (keys[i]) out[kept++] = touched[i];
    } else if (want > 0) {
        int64_t above_hi, above_lo;
        const uint32_t hi = (uint32_t)top_bucket(hist, want, &above_hi);
        memset(hist, 0, SELECT_BUCKETS * sizeof(uint32_t));
        for (int64_t i = 0; i < reached; ++i)
            if (keys[i] && (keys[i] >> 16) == hi) ++hist[keys[i] & 0xFFFFu];
        const uint32_t lo = (uint32_t)top_bucket(hist, want - above_hi, &above_lo);
        const uint32_t edge = (hi << 16) | lo; /* the want-th largest key */
        int64_t ties = want - above_hi - above_lo; /* keys equal to edge to keep: the first */
        for (int64_t i = 0; i < reached; ++i) {
            if (keys[i] > edge || (keys[i] == edge && ties-- > 0)) out[kept++] = touched[i];
        }
    }
    free(keys);
    free(hist);
    return kept;
}
