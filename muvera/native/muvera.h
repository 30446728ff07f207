/*
 * Shared declarations of muvera's compiled kernels (plain C99 + GCC/Clang extensions, no
 * Python API; loaded with ctypes by muvera/native/loader.py).
 *
 * One file per kernel: fde.c (FDE encoding), maxsim.c (exact MaxSim), cells.c (approximate
 * MaxSim by token cells), graph.c (int8 HNSW walk), codes.c (token codes), select.c (the probe's best documents);
 * pool.c holds the worker threads they share and the CPU checks of the dispatcher.
 * The same sources are compiled once per CPU variant (muvera/native/variants.py: generic,
 * avx2, avx512); the loader picks the best one the running CPU supports.
 */
#ifndef MUVERA_H
#define MUVERA_H

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
#define MUVERA_INTERNAL
#else
#define MUVERA_EXPORT __attribute__((visibility("default")))
#define MUVERA_INTERNAL __attribute__((visibility("hidden")))
#endif

#define MUVERA_ABI_VERSION 16
#define MAX_THREADS 64

/* The 16 levels of token dtype "residual4lm" (kind 5; muvera/token_codes.py): the
 * Lloyd-Max quantizer of a unit Gaussian (Max, 1960), ascending; nibble c decodes to
 * scale * level c. codes.c picks each row's scale as its root mean square times the
 * multiplier of least squared error among MUVERA_LM_MULTIPLIERS. */
#define MUVERA_LM_LEVELS                                                                   \
    {-2.73257f, -2.06890f, -1.61812f, -1.25623f, -0.94245f, -0.65680f, -0.38814f,          \
     -0.12839f, 0.12839f,  0.38814f,  0.65680f,  0.94245f,  1.25623f,  1.61812f,           \
     2.06890f,  2.73257f}
#define MUVERA_LM_MULTIPLIERS {0.80f, 0.85f, 0.90f, 0.95f, 1.00f, 1.05f, 1.10f, 1.15f}
#define MUVERA_LM_N_MULTIPLIERS 8

#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(p) __builtin_prefetch(p)
typedef float vf4 __attribute__((vector_size(16)));
typedef float vf8 __attribute__((vector_size(32)));
typedef float vf16 __attribute__((vector_size(64)));
#define MUVERA_HAVE_VECTOR_EXT 1
typedef int32_t vi16 __attribute__((vector_size(64)));
typedef int32_t vi8 __attribute__((vector_size(32)));
/* lane-wise maxima, a > b ? a : b (C has no ?: on vectors): one vmaxps where the ISA has
 * it, else a compare and a select */
static inline vf16 vmax16(vf16 a, vf16 b) {
#ifdef __AVX512F__
    return (vf16)_mm512_max_ps((__m512)a, (__m512)b);
#else
    const vi16 take_a = a > b;
    return (vf16)(((vi16)a & take_a) | ((vi16)b & ~take_a));
#endif
}
static inline vf8 vmax8(vf8 a, vf8 b) {
#ifdef __AVX__
    return (vf8)_mm256_max_ps((__m256)a, (__m256)b);
#else
    const vi8 take_a = a > b;
    return (vf8)(((vi8)a & take_a) | ((vi8)b & ~take_a));
#endif
}
#else
#define PREFETCH(p) ((void)(p))
#endif

/* Token rows of the quantized kinds (muvera/token_codes.py): a float32 scale, then d int8
 * codes (kind 2) or h = ceil(d/2) bytes of two 4-bit codes stored as code + 8, byte i
 * holding value i (low nibble) and value h + i (high nibble) (kind 3), or q = ceil(d/4)
 * bytes of four 2-bit codes c (0..3, value c - 1.5), byte i holding values i, q + i,
 * 2q + i, 3q + i from its low bits up (kind 4), or kind 3's nibbles c decoding to
 * scale * MUVERA_LM_LEVELS[c] (kind 5, Lloyd-Max levels). Decoded to scale * code (or
 * level), the product numpy computes; every part is a contiguous loop. */
enum { KIND_F32 = 0, KIND_F16 = 1, KIND_I8 = 2, KIND_I4 = 3, KIND_I2 = 4, KIND_LM4 = 5 };
/* codes.c: bytes of one stored row of d values of a kind; rows of a quantized kind (2 ..
 * 5) decoded to n rows of d floats. */
MUVERA_INTERNAL int64_t token_row_bytes(int64_t kind, int64_t d);
MUVERA_INTERNAL void codes_to_floats(const unsigned char *src, int64_t kind, int64_t d,
                                     float *dst, int64_t n);

/* pool.c: runs fn on jobs[0 .. n) (each job_size bytes): job 0 on the caller, the others on
 * pool threads (or on the caller, whichever gets to them first); returns when all are done. */
MUVERA_INTERNAL void run_jobs(void *(*fn)(void *), void *jobs, size_t job_size, int64_t n);
/* Splits items 0 .. n (item i weighing sizes[i]) into `parts` consecutive ranges of about
 * equal weight: range t is bounds[t] .. bounds[t+1]. */
MUVERA_INTERNAL void split_ranges(const int64_t *sizes, int64_t n, int64_t parts,
                                  int64_t *bounds);
/* n_threads clamped to 1 .. min(n_items, MAX_THREADS) */
MUVERA_INTERNAL int64_t clamp_threads(int64_t n_threads, int64_t n_items);

#endif
