/* Internal header of the C kernels (not part of the cffi interface): what the kernel files
 * kernels_*.c share. Per-thread scratch buffers (kernels_common.c), the per-ISA inner-loop
 * tables (kernels_isa.c), thread counts, typed loads and the generic output stage
 * (accumulator + correction -> rescale -> offset -> clamp -> store). The fixed-point rescale
 * rules themselves are in rescale.h.
 *
 * Functions shared by several kernel files are `static inline` here (each file keeps its own
 * inlinable copy, as when all kernels were one file) or, when they own global state, defined
 * once in kernels_common.c / kernels_isa.c with hidden visibility (not exported by the module).
 */
#ifndef ORTNPU_KERNELS_COMMON_H
#define ORTNPU_KERNELS_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ortnpu_kernels.h"
#include "rescale.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__GNUC__) && !defined(_WIN32)
#define ORTNPU_HIDDEN __attribute__((visibility("hidden")))
#else
#define ORTNPU_HIDDEN
#endif

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(ORTNPU_NO_SIMD)
#define ORTNPU_HAVE_AVX2 1
#include <immintrin.h>
#else
#define ORTNPU_HAVE_AVX2 0
#endif
#if defined(__GNUC__) && defined(__SSE2__) && !defined(ORTNPU_PLAIN_C)
#define ORTNPU_HAVE_SSE2 1
#include <emmintrin.h>
#else
#define ORTNPU_HAVE_SSE2 0
#endif

/* Per-thread scratch buffers: grown on demand, then reused by every later call on the same
 * thread, so the hot path does not allocate (large mallocs would map fresh zeroed pages on
 * every call). Freed when the thread ends. A caller's slots (OUT*) and the slots of the
 * parallel regions it starts (IN*) are distinct because the caller is also a team member. */
/* S_PROG*: the compiled programs' own buffers around a kernel call (program.c) */
enum { S_OUT0, S_OUT1, S_OUT2, S_OUT3, S_OUT4, S_OUT5, S_IN0, S_IN1, S_IN2, S_IN3, S_PROG0,
       S_PROG1, S_SLOTS };
ORTNPU_HIDDEN void *ortnpu_scratch(int slot, size_t bytes);

/* One channel of the byte-permute depthwise path (kernels_linear.c): the input plane (h rows
 * of w bytes, XORed with flip into the padded plane of row length wp at row pt, column pl;
 * NULL: the plane holds it already), the outputs (oh x ow) as vectors of m whole rows (m > 1)
 * or of up to l outputs of one row (m = 1), the kh x nq weight quads and the nq VPERMB index
 * patterns of one vector (its window lies within 64 bytes of the plane). */
typedef struct {
    const uint8_t *x;
    int64_t h, w, wp, pt, pl, sh, sw, oh, ow;
    uint8_t flip;
    int kh, nq, m, l;
    const uint8_t *patterns;
    const int32_t *wq;
} ortnpu_dwq_t;

/* The inner loops of one instruction set (kernels_isa.h, instantiated in kernels_isa.c). */
typedef struct {
    /* int16 GEMM tile: R <= 4 rows of U times ncol groups of 16 columns of V (U, ldu, R, V,
     * ldv, j0, j1, C, ldc, ncol): group g reads V + 32 g and writes C + 16 g */
    void (*bcast_tile)(const int16_t *, int64_t, int, const int16_t *, int64_t, int64_t, int64_t,
                       int32_t *, int64_t, int64_t);
    void (*dot_tile)(const int16_t *, int64_t, int, const int8_t *, int64_t, int, int64_t,
                     int64_t, int32_t *);
    void (*interleave)(const int16_t *, const int16_t *, int16_t *, int64_t);
    void (*dw_row)(uint32_t *, const int16_t *, int64_t, int64_t, int32_t);
    void (*finish32_double)(const int32_t *, int64_t, uint32_t, int64_t, int, int64_t, int64_t,
                            int64_t, void *, int);
    /* u8 x s8 quad tile (AVX-512 VNNI only, NULL elsewhere): like bcast_tile with groups of
     * four bytes, U signed weights, V unsigned activations */
    void (*bcast_tile_u8)(const int8_t *, int64_t, int, const uint8_t *, int64_t, int64_t,
                          int64_t, int32_t *, int64_t);
    void (*dw_row3)(uint32_t *, const int16_t *, int64_t, int64_t, int64_t, const int8_t *);
    /* channels-last depthwise, npx (1 or 2) output pixels of one row (acc, x, step, npx, off,
     * w, taps, C): acc[p * C + c] = sum over taps of x[p * step + off[t] + c] * w[t][c] */
    void (*dw_cl_pixels)(uint32_t *, const int16_t *, int64_t, int, const int64_t *,
                         const int16_t *, int64_t, int64_t);
    void (*quad_gather)(const uint8_t *, const uint8_t *, const uint8_t *, const uint8_t *,
                        uint8_t *, int64_t);
    /* depthwise 3x3 output row by pair multiply-adds (NULL: use dw_row3) */
    void (*dw3_row)(uint32_t *, const int16_t *, const int16_t *, const int16_t *, int64_t,
                    int64_t, const int8_t *, int16_t *);
    /* finish32_double over a phase-width grid tile, dropping columns >= ow (AVX-512 only,
     * NULL elsewhere: compaction + finish32_double) */
    void (*finish32_double_grid)(const int32_t *, int64_t, int64_t, int64_t, int64_t, uint32_t,
                                 int64_t, int, int64_t, int64_t, int64_t, void *, int);
    /* u8 x s8 tile over 16 * NC columns and the whole K (AVX-512 VNNI only, NULL elsewhere) */
    void (*wide_tile_u8)(const int8_t *, int64_t, int, const uint8_t *, int64_t, int64_t,
                         int32_t *, int64_t, int);
    /* finish32_double with per-lane corrections, multipliers and shifts and one added row
     * term (acc, n, corr, rowadd, qm, shift, zp, lo, hi, out, otype): 16 lanes on AVX-512,
     * 8 on AVX2, one at a time in portable C (the epilogue of FullyConnected's rows GEMM) */
    void (*finish32_double_lanes)(const int32_t *, int64_t, const int32_t *, int32_t,
                                  const int32_t *, const int32_t *, int64_t, int64_t, int64_t,
                                  void *, int);
    /* Add (op 0) or Mul (op 1) of 8-bit operands under tflite_double in SIMD lanes (op, a, a
     * step 0/1, a signed, b, b step, b signed, n, params, zp, lo, hi, out, otype): 16 on
     * AVX-512, 8 on AVX2, NULL in portable C (the pair tables) */
    void (*binary8_double)(int, const uint8_t *, int64_t, int, const uint8_t *, int64_t, int,
                           int64_t, const int64_t *, int64_t, int64_t, int64_t, void *, int);
    /* bcast_tile on 8 columns (AVX2 and AVX-512, NULL in portable C): the last slice of a
     * pixel tile that keeps at most 8 of its 16 columns */
    void (*bcast_tile8)(const int16_t *, int64_t, int, const int16_t *, int64_t, int64_t,
                        int64_t, int32_t *, int64_t);
    /* depthwise sums of one channel over a zero-point-padded u8 plane (channel, plane, acc):
     * the plane copy, then per plane row one 64-byte load and one byte permute per quad of
     * taps, shared by the vectors of neighbouring rows, and one u8 x s8 quad multiply-add per
     * vector, kernel row and quad (AVX-512 VBMI + VNNI only, NULL elsewhere) */
    void (*dw_quads)(const ortnpu_dwq_t *, uint8_t *, uint32_t *);
} ortnpu_isa_t;

/* The table of the widest path allowed by `isa` (0 portable C, 1 AVX2, 2 AVX-512 VNNI) that
 * the CPU supports. */
ORTNPU_HIDDEN const ortnpu_isa_t *ortnpu_pick_isa(int isa);

static inline int threads_of(int nthreads) {
    return nthreads < 1 ? 1 : (nthreads > 1024 ? 1024 : nthreads);
}

/* ------------------------------------------------------------------------- typed access */
/* largest |raw value| of a type */
static inline int64_t type_abs(int t) {
    return t == ORTNPU_T_I8 ? 128 : (t == ORTNPU_T_U8 ? 255 : 32768);
}

static inline int64_t ld(const void *p, int t, int64_t i) {
    switch (t) {
    case ORTNPU_T_I8: return ((const int8_t *)p)[i];
    case ORTNPU_T_U8: return ((const uint8_t *)p)[i];
    default: return ((const int16_t *)p)[i];
    }
}

/* dst[i] = src[start + i*stride] widened to int16 (every activation type fits int16). */
static inline void load_i16(int16_t *dst, const void *src, int t, int64_t start, int64_t stride,
                            int64_t count) {
    if (t == ORTNPU_T_I8) {
        const int8_t *s = (const int8_t *)src + start;
        if (stride == 1)
            for (int64_t i = 0; i < count; i++) dst[i] = s[i];
        else
            for (int64_t i = 0; i < count; i++) dst[i] = s[i * stride];
    } else if (t == ORTNPU_T_U8) {
        const uint8_t *s = (const uint8_t *)src + start;
        if (stride == 1)
            for (int64_t i = 0; i < count; i++) dst[i] = s[i];
        else
            for (int64_t i = 0; i < count; i++) dst[i] = s[i * stride];
    } else {
        const int16_t *s = (const int16_t *)src + start;
        if (stride == 1)
            memcpy(dst, s, (size_t)count * sizeof *dst);
        else
            for (int64_t i = 0; i < count; i++) dst[i] = s[i * stride];
    }
}

static inline void fill_i16(int16_t *dst, int16_t v, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = v;
}

/* y[i*ostride] = clamp(v[i] + zp, lo, hi) as the output type; v holds int32-range values. */
static inline void store_clamp(const int64_t *v, int64_t n, const ortnpu_out_t *o, void *y,
                               int64_t idx0, int64_t ostride) {
    const int64_t zp = o->y_zp, lo = o->act_min, hi = o->act_max;
    for (int64_t i = 0; i < n; i++) {
        int64_t t = v[i] + zp;
        t = t < lo ? lo : (t > hi ? hi : t);
        int64_t at = idx0 + i * ostride;
        switch (o->otype) {
        case ORTNPU_T_I8: ((int8_t *)y)[at] = (int8_t)t; break;
        case ORTNPU_T_U8: ((uint8_t *)y)[at] = (uint8_t)t; break;
        default: ((int16_t *)y)[at] = (int16_t)t; break;
        }
    }
}

#define CHUNK 256

/* Generic output of accumulators: acc32 (int32, exact or wrapped) or acc64 (exact int64
 * sums), plus corr (uint64, per element with stride cs), brought to the accumulator width,
 * rescaled, offset, clamped and stored at y[idx0 + i*ostride]. */
static inline void finish_any(const int32_t *acc32, const int64_t *acc64, int64_t n,
                              const uint64_t *corr, int64_t cs, const int32_t *m, int64_t ms,
                              const int32_t *sh, int64_t ss, const ortnpu_out_t *o, void *y,
                              int64_t idx0, int64_t ostride) {
    int64_t buf[CHUNK];
    for (int64_t b = 0; b < n; b += CHUNK) {
        int64_t len = n - b < CHUNK ? n - b : CHUNK;
        for (int64_t i = 0; i < len; i++) {
            int64_t j = b + i;
            uint64_t raw = acc32 ? (uint64_t)(int64_t)acc32[j] : (uint64_t)acc64[j];
            uint64_t s = raw + corr[j * cs];
            buf[i] = o->acc_bits == 32 ? wrap32(s64(s)) : s64(s);
        }
        rescale_chunk(buf, len, m + b * ms, ms, sh + b * ss, ss, o->rule);
        store_clamp(buf, len, o, y, idx0 + b * ostride, ostride);
    }
}

/* One row of outputs with per-row constant parameters; uses the fused AVX2 epilogue for the
 * common case (int32 accumulator, tflite_double, contiguous output). */
static inline void finish_row(const ortnpu_isa_t *I, const int32_t *acc32, const int64_t *acc64,
                              int64_t n, uint64_t corr, const int32_t *m, const int32_t *sh,
                              const ortnpu_out_t *o, void *y, int64_t idx0) {
    if (acc32 && o->acc_bits == 32 && o->rule == ORTNPU_R_DOUBLE) {
        char *base = (char *)y + idx0 * (o->otype == ORTNPU_T_I16 ? 2 : 1);
        I->finish32_double(acc32, n, (uint32_t)corr, *m, *sh, o->y_zp, o->act_min, o->act_max,
                           base, o->otype);
        return;
    }
    finish_any(acc32, acc64, n, &corr, 0, m, 0, sh, 0, o, y, idx0, 1);
}

static inline int out_ok(const ortnpu_out_t *o) {
    if (!o || !type_ok(o->otype)) return 0;
    if (o->rule < 0 || o->rule > ORTNPU_R_TOSA_DOUBLE || (o->acc_bits != 32 && o->acc_bits != 64)) return 0;
    if (o->act_min > o->act_max || o->act_min < type_min(o->otype) ||
        o->act_max > type_max(o->otype))
        return 0;
    return o->y_zp >= -(INT64_C(1) << 16) && o->y_zp <= (INT64_C(1) << 16);
}

/* Number of int16 pairs whose madd sum provably fits int32 when each product is at most
 * maxprod in magnitude; 0 means "no limit needed" (32-bit accumulator wraps anyway). */
static inline int64_t pair_block(int acc_bits, int64_t maxprod) {
    if (acc_bits == 32) return 0;
    int64_t b = INT32_MAX / (2 * maxprod);
    return b < 1 ? 1 : b;
}

static inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
static inline int64_t round16(int64_t a) { return (a + 15) & ~INT64_C(15); }
#endif
