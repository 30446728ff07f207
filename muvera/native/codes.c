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
 *   kind 5 (Lloyd-Max): code = the number of cuts below x / s (float32; cuts:
 *                       the midpoints (l[k] + l[k+1]) / 2 of MUVERA_LM_LEVELS l), nibbles
 *                       as kind 3, padding nibble 8; the given "scale" is the row's root
 *                       mean square r and the stored s is the float32 of min(r * m,
 *                       FLT_MAX) (in double) for the first multiplier m of
 *                       MUVERA_LM_MULTIPLIERS whose codes leave the least sum of squares
 *                       (x - s * l[code])^2, summed in double in value order (lm_scale)
 *
 * where s is the row's scale, or 1 for a scale of 0 (a row of zeros). The division is
 * float32 as numpy's, rint rounds half to even (the default rounding mode) as np.rint, and
 * the clip happens in float before the conversion, as there. Callers pass finite values;
 * a NaN would get the lowest code (never an undefined float-to-int conversion).
 */
#include <float.h>

#include "muvera.h"

typedef struct {
    const float *x; /* (n, d) */
    const float *scales; /* (n,) */
    int64_t d, kind, row_bytes;
    uint8_t *out; /* (n, row_bytes) */
    int64_t first, last; /* rows of this job */
} codes_job;

#define CODES_PAD 4096 /* values of one row buffered on the stack */

/* Nibble codes of x / safe against the 15 cuts (kind 5): one pass per cut over the row
 * (y: scratch of d floats), so the compiler vectorizes the compares. */
static void lm_codes(const float *x, int64_t d, float safe, const float *cuts, float *y,
                     uint8_t *buf) {
    for (int64_t j = 0; j < d; ++j) {
        y[j] = x[j] / safe;
        buf[j] = 0;
    }
    for (int k = 0; k < 15; ++k) {
        const float cut = cuts[k];
        for (int64_t j = 0; j < d; ++j) buf[j] += (uint8_t)(y[j] > cut);
    }
}

/* The scale of a row (kind 5): for each multiplier m, s = float32(min(rms * m, FLT_MAX)),
 * the codes of x / s and the sum of (x - s * level)^2 in double, value by value; the
 * first m of least sum wins. Compiled without contracting a multiply and an add into an
 * FMA, so that every variant sums what the numpy reference does (s * level is exact in
 * double; the difference, the square and the sum are rounded as written). With vector
 * extensions the eight multipliers are the eight lanes of one pass over the row. */
#if defined(__clang__)
#define LM_NO_CONTRACT _Pragma("clang fp contract(off)")
#define LM_ATTR
#elif defined(__GNUC__)
#define LM_NO_CONTRACT
#define LM_ATTR __attribute__((optimize("fp-contract=off")))
#else
#define LM_NO_CONTRACT
#define LM_ATTR
#endif
#if MUVERA_LM_N_MULTIPLIERS != 8
#error "lm_scale holds one multiplier a lane of 8"
#endif

#ifdef MUVERA_HAVE_VECTOR_EXT
typedef double vd8 __attribute__((vector_size(64)));

LM_ATTR static float lm_scale(const float *x, float rms, int64_t d, const float *cuts,
                              const float *levels) {
    LM_NO_CONTRACT
    static const float multipliers[8] = MUVERA_LM_MULTIPLIERS;
    vf8 s, safe, cut[15];
    for (int m = 0; m < 8; ++m) {
        const double p = (double)rms * (double)multipliers[m];
        s[m] = p > (double)FLT_MAX ? FLT_MAX : (float)p;
        safe[m] = s[m] > 0.0f ? s[m] : 1.0f;
    }
    for (int k = 0; k < 15; ++k)
        for (int m = 0; m < 8; ++m) cut[k][m] = cuts[k];
    vf8 low, high;
    for (int m = 0; m < 8; ++m) {
        low[m] = levels[m];
        high[m] = levels[8 + m];
    }
    const vd8 sd = __builtin_convertvector(s, vd8);
    vd8 e = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t j = 0; j < d; ++j) {
        const vf8 y = x[j] / safe;
        vi8 c = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int k = 0; k < 15; ++k) c -= (vi8)(y > cut[k]); /* true is -1 */
#if defined(__clang__)
        vf8 level;
        for (int m = 0; m < 8; ++m) level[m] = levels[c[m]];
#else
        const vf8 level = __builtin_shuffle(low, high, c);
#endif
        const vd8 t = (double)x[j] - sd * __builtin_convertvector(level, vd8);
        e += t * t;
    }
    float best = s[0];
    double least = e[0];
    for (int m = 1; m < 8; ++m) {
        if (e[m] < least) {
            least = e[m];
            best = s[m];
        }
    }
    (void)low;
    (void)high;
    return best;
}
#else
LM_ATTR static float lm_scale(const float *x, float rms, int64_t d, const float *cuts,
                              const float *levels) {
    LM_NO_CONTRACT
    static const float multipliers[8] = MUVERA_LM_MULTIPLIERS;
    float best = 0.0f;
    double least = INFINITY;
    for (int m = 0; m < 8; ++m) {
        const double p = (double)rms * (double)multipliers[m];
        const float s = p > (double)FLT_MAX ? FLT_MAX : (float)p;
        const float safe = s > 0.0f ? s : 1.0f;
        double e = 0.0;
        for (int64_t j = 0; j < d; ++j) {
            const float y = x[j] / safe;
            int c = 0;
            for (int k = 0; k < 15; ++k) c += y > cuts[k];
            const double t = (double)x[j] - (double)s * (double)levels[c];
            e += t * t;
        }
        if (m == 0 || e < least) {
            least = e;
            best = s;
        }
    }
    return best;
}
#endif

static void encode_row(const float *x, float scale, int64_t d, int64_t kind, uint8_t *row) {
    uint8_t *codes = row + 4;
    if (kind == 5) {
        static const float levels[16] = MUVERA_LM_LEVELS;
        float cuts[15];
        for (int k = 0; k < 15; ++k) cuts[k] = (levels[k] + levels[k + 1]) / 2.0f;
        uint8_t buf[CODES_PAD];
        float y[CODES_PAD];
        const float s = lm_scale(x, scale, d, cuts, levels);
        memcpy(row, &s, 4);
        lm_codes(x, d, s > 0.0f ? s : 1.0f, cuts, y, buf);
        const int64_t h = (d + 1) / 2;
        if (d % 2) buf[d] = 8;
        for (int64_t i = 0; i < h; ++i) codes[i] = (uint8_t)(buf[i] | (buf[h + i] << 4));
        return;
    }
    memcpy(row, &scale, 4); /* little-endian on every platform the loader builds for */
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
 * scales      (n,) float32, >= 0: the rows' scales, or for kind 5 their root mean squares.
 * kind        2 (int8), 3 (int4), 4 (2 bits) or 5 (Lloyd-Max 4 bits).
 * out         (n, row_bytes) uint8, row_bytes = 4 + d, 4 + ceil(d / 2) (kinds 3, 5) or
 *             4 + ceil(d / 4).
 * n_threads   threads that share the rows.
 * Returns 0, or -3 for a kind, a row size or a dimension (at most 4,092) it does not take.
 */
MUVERA_EXPORT int64_t muvera_token_codes(const float *x, const float *scales, int64_t n,
                                         int64_t d, int64_t kind, uint8_t *out,
                                         int64_t row_bytes, int64_t n_threads) {
    const int64_t need = token_row_bytes(kind, d);
    if (kind < KIND_I8 || kind > KIND_LM4 || d < 0 || d > CODES_PAD - 4 || n < 0 || row_bytes != need)
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

/* ---------------------------------------------------------------------------------------
 * Decoding, for the MaxSim kernels (maxsim.c): stored rows back to float32.
 * ------------------------------------------------------------------------------------- */

int64_t token_row_bytes(int64_t kind, int64_t d) {
    switch (kind) {
    case KIND_F16: return 2 * d;
    case KIND_I8: return 4 + d;
    case KIND_I4:
    case KIND_LM4: return 4 + (d + 1) / 2;
    case KIND_I2: return 4 + (d + 3) / 4;
    default: return 4 * d;
    }
}

/* n values of nibbles c (byte i: value i low, value h + i high; lo / hi: the two halves'
 * destinations) decoded through the 16-entry table: one permute a vector where the ISA has
 * it. */
static void nibbles_through(const unsigned char *c, const float *table, int64_t n_lo,
                            int64_t n_hi, float *restrict lo, float *restrict hi) {
    int64_t i = 0;
#if defined(__AVX512F__)
    const __m512 t = _mm512_loadu_ps(table);
    const __m512i low4 = _mm512_set1_epi32(15);
    for (; i + 16 <= n_hi; i += 16) {
        const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(c + i)));
        _mm512_storeu_ps(lo + i, _mm512_permutexvar_ps(_mm512_and_si512(b, low4), t));
        _mm512_storeu_ps(hi + i, _mm512_permutexvar_ps(_mm512_srli_epi32(b, 4), t));
    }
#elif defined(__AVX2__)
    const __m256 t0 = _mm256_loadu_ps(table), t1 = _mm256_loadu_ps(table + 8);
    const __m256i low4 = _mm256_set1_epi32(15);
    for (; i + 8 <= n_hi; i += 8) {
        const __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(c + i)));
        const __m256i l = _mm256_and_si256(b, low4), h = _mm256_srli_epi32(b, 4);
        /* permutevar8x32 reads the low 3 bits; bit 3 (moved to the sign) picks the table */
        _mm256_storeu_ps(lo + i, _mm256_blendv_ps(_mm256_permutevar8x32_ps(t0, l),
                                                  _mm256_permutevar8x32_ps(t1, l),
                                                  _mm256_castsi256_ps(_mm256_slli_epi32(l, 28))));
        _mm256_storeu_ps(hi + i, _mm256_blendv_ps(_mm256_permutevar8x32_ps(t0, h),
                                                  _mm256_permutevar8x32_ps(t1, h),
                                                  _mm256_castsi256_ps(_mm256_slli_epi32(h, 28))));
    }
#endif
    for (int64_t j = i; j < n_lo; ++j) lo[j] = table[c[j] & 15u];
    for (int64_t j = i; j < n_hi; ++j) hi[j] = table[c[j] >> 4];
}

void codes_to_floats(const unsigned char *src, int64_t kind, int64_t d, float *dst,
                            int64_t n) {
    const int64_t stride = token_row_bytes(kind, d);
    for (int64_t t = 0; t < n; ++t, src += stride, dst += d) {
        float scale;
        memcpy(&scale, src, sizeof scale);
        const unsigned char *c = src + 4;
        if (kind == KIND_I8) {
            for (int64_t i = 0; i < d; ++i) dst[i] = scale * (float)(int8_t)c[i];
        } else if (kind == KIND_I2) {
            const int64_t q = (d + 3) / 4;
            for (int64_t part = 0; part < 4; ++part) {
                const int64_t lo = part * q, len = d - lo < q ? d - lo : q;
                const unsigned shift = (unsigned)(2 * part);
                for (int64_t i = 0; i < len; ++i)
                    dst[lo + i] = scale * ((float)((c[i] >> shift) & 3u) - 1.5f);
            }
        } else if (kind == KIND_LM4) {
            static const float levels[16] = MUVERA_LM_LEVELS;
            float table[16];
            for (int k = 0; k < 16; ++k) table[k] = scale * levels[k];
            const int64_t h = (d + 1) / 2;
            nibbles_through(c, table, h, d - h, dst, dst + h);
        } else {
            const int64_t h = (d + 1) / 2;
            for (int64_t i = 0; i < h; ++i) dst[i] = scale * (float)((int)(c[i] & 15u) - 8);
            for (int64_t i = 0; i < d - h; ++i)
                dst[h + i] = scale * (float)((int)(c[i] >> 4) - 8);
        }
    }
}
