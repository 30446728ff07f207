/*
 * Token codes of the re-rank's quantized token store (muvera/token_codes.py): the stored
 * rows of float32 token vectors, given each row's scale. The scales come from numpy (a
 * row's maximum |value| or root mean square, computed there once for both paths); this
 * file writes what the numpy reference (token_codes.encode_rows) writes, byte for byte:
 *
 *   row = scale (float32, little-endian) | codes
 *   kind 2 (int8):      code = clip(rint(x / s), -127, 127), one signed byte a value
 *   kind 3 (int4):      code = clip(rint(x / s), -7, 7) + 8, byte i = value i (low nibble)
 *                       | value h + i (high nibble), h = ceil(d / 2), padding nibble 8
 *   kind 4 (2 bits):    code = clip(floor(x / s) + 2, 0, 3), byte i = values i, q + i,
 *                       2q + i, 3q + i from the low bits up, q = ceil(d / 4), padding 2
 *
 * where s is the row's scale, or 1 for a scale of 0 (a row of zeros). The division is
 * float32 as numpy's, rint rounds half to even (the default rounding mode) as np.rint, and
 * the clip happens in float before the conversion, as there. Callers pass finite values;
 * a NaN would get the lowest code (never an undefined float-to-int conversion).
 */
#include "muvera.h"

typedef struct {
    const float *x; /* (n, d) */
    const float *scales; /* (n,) */
    int64_t d, kind, row_bytes;
    uint8_t *out; /* (n, row_bytes) */
    int64_t first, last; /* rows of this job */
} codes_job;

#define CODES_PAD 4096 /* values of one row buffered on the stack */

static void encode_row(const float *x, float scale, int64_t d, int64_t kind, uint8_t *row) {
    memcpy(row, &scale, 4); /* little-endian on every platform the loader builds for */
    uint8_t *codes = row + 4;
    const float safe = scale > 0.0f ? scale : 1.0f;
    if (kind == 2) {
        for (int64_t j = 0; j < d; ++j) {
            float c = rintf(x[j] / safe);
            c = !(c >= -127.0f) ? -127.0f : (c > 127.0f ? 127.0f : c); /* NaN: -127, no UB */
            codes[j] = (uint8_t)(int8_t)c;
        }
        return;
    }
    uint8_t buf[CODES_PAD];
    if (kind == 3) {
        const int64_t h = (d + 1) / 2;
        for (int64_t j = 0; j < d; ++j) {
            float c = rintf(x[j] / safe);
            c = !(c >= -7.0f) ? -7.0f : (c > 7.0f ? 7.0f : c);
            buf[j] = (uint8_t)((int)c + 8);
        }
        if (d % 2) buf[d] = 8;
        for (int64_t i = 0; i < h; ++i) codes[i] = (uint8_t)(buf[i] | (buf[h + i] << 4));
        return;
    }
    const int64_t q = (d + 3) / 4;
    for (int64_t j = 0; j < d; ++j) {
        float c = floorf(x[j] / safe) + 2.0f;
        c = !(c >= 0.0f) ? 0.0f : (c > 3.0f ? 3.0f : c);
        buf[j] = (uint8_t)c;
    }
    for (int64_t j = d; j < 4 * q; ++j) buf[j] = 2;
    for (int64_t i = 0; i < q; ++i)
        codes[i] = (uint8_t)(buf[i] | (buf[q + i] << 2) | (buf[2 * q + i] << 4) |
                             (buf[3 * q + i] << 6));
}

static void *codes_worker(void *arg) {
    codes_job *job = (codes_job *)arg;
    for (int64_t r = job->first; r < job->last; ++r)
        encode_row(job->x + r * job->d, job->scales[r], job->d, job->kind,
                   job->out + r * job->row_bytes);
    return NULL;
}

/*
 * Stored token rows of x, the layout above.
 *
 * x           (n, d) float32, finite.
 * scales      (n,) float32, >= 0.
 * kind        2 (int8), 3 (int4) or 4 (2 bits).
 * out         (n, row_bytes) uint8, row_bytes = 4 + d, 4 + ceil(d / 2) or 4 + ceil(d / 4).
 * n_threads   threads that share the rows.
 * Returns 0, or -3 for a kind, a row size or a dimension (at most 4,092) it does not take.
 */
MUVERA_EXPORT int64_t muvera_token_codes(const float *x, const float *scales, int64_t n,
                                         int64_t d, int64_t kind, uint8_t *out,
                                         int64_t row_bytes, int64_t n_threads) {
    const int64_t need = kind == 2 ? 4 + d : (kind == 3 ? 4 + (d + 1) / 2 : 4 + (d + 3) / 4);
    if (kind < 2 || kind > 4 || d < 0 || d > CODES_PAD - 4 || n < 0 || row_bytes != need)
        return -3;
    n_threads = clamp_threads(n_threads, n > 0 ? (n + 1023) / 1024 : 1);
    codes_job jobs[MAX_THREADS];
    for (int64_t t = 0; t < n_threads; ++t) {
        codes_job job = {.x = x, .scales = scales, .d = d, .kind = kind,
                         .row_bytes = row_bytes, .out = out, .first = n * t / n_threads,
                         .last = n * (t + 1) / n_threads};
        jobs[t] = job;
    }
    run_jobs(codes_worker, jobs, sizeof(codes_job), n_threads);
    return 0;
}
