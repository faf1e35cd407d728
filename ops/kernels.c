/* ortnpu C kernels: drivers (validation, packing, threading, output) around the per-ISA inner
 * loops of kernels_isa.h. Exactness contract: see ortnpu_kernels.h and rescale.h.
 *
 * Accumulation. Conv and FullyConnected multiply raw activations (padding holds x_zp) by the
 * int8 weights and correct once per output channel:
 *     sum (x - x_zp) * w  =  sum x * w  -  x_zp * sum w,
 * an identity of integers; with the bias, corr[c] = bias[c] - x_zp * wsum[c] is added in
 * uint64 (wrapping like numpy's int64) and the result wrapped to int32 when acc_bits == 32.
 * Raw int8/uint8/int16 values fit int16, so the inner products can use int16 pair
 * multiply-adds into int32 lanes. Those lanes wrap modulo 2^32, which is exactly the int32
 * accumulator; for acc_bits == 64 the K range is cut into blocks whose sums provably fit int32
 * and the block sums are added in int64, so the 64-bit accumulator is exact as well.
 */
#include <stdlib.h>
#include <string.h>

#include "ortnpu_kernels.h"
#include "rescale.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#include <pthread.h>

/* Per-thread scratch buffers: grown on demand, then reused by every later call on the same
 * thread, so the hot path does not allocate (large mallocs would map fresh zeroed pages on
 * every call). Freed when the thread ends. A caller's slots (OUT*) and the slots of the
 * parallel regions it starts (IN*) are distinct because the caller is also a team member. */
enum { S_OUT0, S_OUT1, S_OUT2, S_OUT3, S_OUT4, S_OUT5, S_IN0, S_IN1, S_IN2, S_IN3, S_SLOTS };
typedef struct {
    void *p;
    size_t n;
} scratch_t;
static pthread_key_t g_scratch_key;
static pthread_once_t g_scratch_once = PTHREAD_ONCE_INIT;

static void scratch_release(void *t) {
    scratch_t *s = t;
    for (int k = 0; k < S_SLOTS; k++) free(s[k].p);
    free(s);
}

static void scratch_init(void) { (void)pthread_key_create(&g_scratch_key, scratch_release); }

static void *scratch(int slot, size_t bytes) {
    pthread_once(&g_scratch_once, scratch_init);
    scratch_t *t = pthread_getspecific(g_scratch_key);
    if (!t) {
        t = calloc(S_SLOTS, sizeof(scratch_t));
        if (!t || pthread_setspecific(g_scratch_key, t)) {
            free(t);
            return NULL;
        }
    }
    scratch_t *s = &t[slot];
    if (s->n < bytes) {
        free(s->p);
        s->n = 0;
        size_t n = bytes + bytes / 4 + 64;
        if (posix_memalign(&s->p, 64, n)) {
            s->p = NULL;
            return NULL;
        }
        s->n = n;
    }
    return s->p;
}

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

typedef struct {
    void (*bcast_tile)(const int16_t *, int64_t, int, const int16_t *, int64_t, int64_t, int64_t,
                       int32_t *, int64_t);
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
    /* channels-last depthwise output pixel: acc[c] = sum over taps of x[off[t] + c] * w[t][c] */
    void (*dw_cl_pixel)(uint32_t *, const int16_t *, const int64_t *, const int16_t *, int64_t,
                        int64_t);
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
} ortnpu_isa_t;

/* portable build of the inner loops */
#define ORTNPU_ISA_AVX2 0
#define FN(name) name##_scalar
#include "kernels_isa.h"
#undef FN
#undef ORTNPU_ISA_AVX2

#if ORTNPU_HAVE_AVX2
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2")
#endif
#define ORTNPU_ISA_AVX2 1
#define FN(name) name##_avx2
#include "kernels_isa.h"
#undef FN
#undef ORTNPU_ISA_AVX2
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

#if ORTNPU_HAVE_AVX2
/* AVX-512 VNNI: the GEMM tile with vpdpwssd (int16 pair products summed into int32 lanes,
 * wrapping: the same bits as madd + add). 16 columns fill one zmm; the K range is split in two
 * interleaved halves so that eight accumulator chains hide the instruction latency. */
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,avx512f,avx512bw,avx512vl,avx512vnni"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,avx512f,avx512bw,avx512vl,avx512vnni")
#endif
static inline __attribute__((always_inline)) void
bcast_tile_vnni_r(const int16_t *U, int64_t ldu, const int R, const int16_t *V, int64_t ldv,
                  int64_t j0, int64_t j1, int32_t *C, int64_t ldc) {
    __m512i a0[4], a1[4];
    for (int r = 0; r < R; r++) {
        a0[r] = _mm512_setzero_si512();
        a1[r] = _mm512_setzero_si512();
    }
    int64_t j = j0;
    for (; j + 2 <= j1; j += 2) {
        __m512i v0 = _mm512_loadu_si512((const void *)(V + 2 * j * ldv));
        __m512i v1 = _mm512_loadu_si512((const void *)(V + 2 * (j + 1) * ldv));
        for (int r = 0; r < R; r++) {
            int32_t u0, u1;
            memcpy(&u0, U + r * ldu + 2 * j, sizeof u0);
            memcpy(&u1, U + r * ldu + 2 * j + 2, sizeof u1);
            a0[r] = _mm512_dpwssd_epi32(a0[r], _mm512_set1_epi32(u0), v0);
            a1[r] = _mm512_dpwssd_epi32(a1[r], _mm512_set1_epi32(u1), v1);
        }
    }
    if (j < j1) {
        __m512i v0 = _mm512_loadu_si512((const void *)(V + 2 * j * ldv));
        for (int r = 0; r < R; r++) {
            int32_t u0;
            memcpy(&u0, U + r * ldu + 2 * j, sizeof u0);
            a0[r] = _mm512_dpwssd_epi32(a0[r], _mm512_set1_epi32(u0), v0);
        }
    }
    for (int r = 0; r < R; r++)
        _mm512_storeu_si512((void *)(C + r * ldc), _mm512_add_epi32(a0[r], a1[r]));
}

static void bcast_tile_vnni(const int16_t *U, int64_t ldu, int R, const int16_t *V, int64_t ldv,
                            int64_t j0, int64_t j1, int32_t *C, int64_t ldc) {
    switch (R) {
    case 1: bcast_tile_vnni_r(U, ldu, 1, V, ldv, j0, j1, C, ldc); break;
    case 2: bcast_tile_vnni_r(U, ldu, 2, V, ldv, j0, j1, C, ldc); break;
    case 3: bcast_tile_vnni_r(U, ldu, 3, V, ldv, j0, j1, C, ldc); break;
    default: bcast_tile_vnni_r(U, ldu, 4, V, ldv, j0, j1, C, ldc); break;
    }
}
/* The same with u8 activations x s8 weights in groups of four (vpdpbusd, no saturation:
 * exact modulo 2^32): twice the products per instruction of the int16 pairs. */
static inline __attribute__((always_inline)) void
bcast_tile_u8_vnni_r(const int8_t *U, int64_t ldu, const int R, const uint8_t *V, int64_t ldv,
                     int64_t j0, int64_t j1, int32_t *C, int64_t ldc) {
    __m512i a0[4], a1[4];
    for (int r = 0; r < R; r++) {
        a0[r] = _mm512_setzero_si512();
        a1[r] = _mm512_setzero_si512();
    }
    int64_t j = j0;
    for (; j + 2 <= j1; j += 2) {
        __m512i v0 = _mm512_loadu_si512((const void *)(V + 4 * j * ldv));
        __m512i v1 = _mm512_loadu_si512((const void *)(V + 4 * (j + 1) * ldv));
        for (int r = 0; r < R; r++) {
            int32_t u0, u1;
            memcpy(&u0, U + r * ldu + 4 * j, sizeof u0);
            memcpy(&u1, U + r * ldu + 4 * j + 4, sizeof u1);
            a0[r] = _mm512_dpbusd_epi32(a0[r], v0, _mm512_set1_epi32(u0));
            a1[r] = _mm512_dpbusd_epi32(a1[r], v1, _mm512_set1_epi32(u1));
        }
    }
    if (j < j1) {
        __m512i v0 = _mm512_loadu_si512((const void *)(V + 4 * j * ldv));
        for (int r = 0; r < R; r++) {
            int32_t u0;
            memcpy(&u0, U + r * ldu + 4 * j, sizeof u0);
            a0[r] = _mm512_dpbusd_epi32(a0[r], v0, _mm512_set1_epi32(u0));
        }
    }
    for (int r = 0; r < R; r++)
        _mm512_storeu_si512((void *)(C + r * ldc), _mm512_add_epi32(a0[r], a1[r]));
}

/* The u8 x s8 tile over 16 * NC columns at once (NC up to 4) and the whole K range: each
 * broadcast weight quad feeds NC accumulators, which is what small-K layers (1x1 convs with
 * few input channels) need; 16 accumulators hide the instruction latency. */
static inline __attribute__((always_inline)) void
wide_tile_u8_vnni_rn(const int8_t *U, int64_t ldu, const int R, const uint8_t *V, int64_t ldv,
                     int64_t kp, int32_t *C, int64_t ldc, const int NC) {
    __m512i a[4][4];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < NC; c++) a[r][c] = _mm512_setzero_si512();
    for (int64_t j = 0; j < kp; j++) {
        __m512i v[4];
        for (int c = 0; c < NC; c++)
            v[c] = _mm512_loadu_si512((const void *)(V + 4 * (j * ldv + 16 * c)));
        for (int r = 0; r < R; r++) {
            int32_t u;
            memcpy(&u, U + r * ldu + 4 * j, sizeof u);
            const __m512i w = _mm512_set1_epi32(u);
            for (int c = 0; c < NC; c++) a[r][c] = _mm512_dpbusd_epi32(a[r][c], v[c], w);
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < NC; c++)
            _mm512_storeu_si512((void *)(C + r * ldc + 16 * c), a[r][c]);
}

static void wide_tile_u8_vnni(const int8_t *U, int64_t ldu, int R, const uint8_t *V,
                              int64_t ldv, int64_t kp, int32_t *C, int64_t ldc, int NC) {
#define ORTNPU_WIDE(RR)                                                                         \
    switch (NC) {                                                                              \
    case 1: wide_tile_u8_vnni_rn(U, ldu, RR, V, ldv, kp, C, ldc, 1); break;                    \
    case 2: wide_tile_u8_vnni_rn(U, ldu, RR, V, ldv, kp, C, ldc, 2); break;                    \
    case 3: wide_tile_u8_vnni_rn(U, ldu, RR, V, ldv, kp, C, ldc, 3); break;                    \
    default: wide_tile_u8_vnni_rn(U, ldu, RR, V, ldv, kp, C, ldc, 4); break;                   \
    }
    switch (R) {
    case 1: ORTNPU_WIDE(1) break;
    case 2: ORTNPU_WIDE(2) break;
    case 3: ORTNPU_WIDE(3) break;
    default: ORTNPU_WIDE(4) break;
    }
#undef ORTNPU_WIDE
}

static void bcast_tile_u8_vnni(const int8_t *U, int64_t ldu, int R, const uint8_t *V,
                               int64_t ldv, int64_t j0, int64_t j1, int32_t *C, int64_t ldc) {
    switch (R) {
    case 1: bcast_tile_u8_vnni_r(U, ldu, 1, V, ldv, j0, j1, C, ldc); break;
    case 2: bcast_tile_u8_vnni_r(U, ldu, 2, V, ldv, j0, j1, C, ldc); break;
    case 3: bcast_tile_u8_vnni_r(U, ldu, 3, V, ldv, j0, j1, C, ldc); break;
    default: bcast_tile_u8_vnni_r(U, ldu, 4, V, ldv, j0, j1, C, ldc); break;
    }
}
/* finish32_double on 16 lanes: the same steps as the AVX2 version in kernels_isa.h (see the
 * comments there), with mask registers for the comparisons and saturating narrowing stores
 * (exact: the values are already clamped into the output type). */
/* One step of finish32_double on up to 16 lanes (mask k): the same steps as the AVX2 version
 * in kernels_isa.h (see the comments there), with mask registers for the comparisons and
 * saturating narrowing stores (exact: the values are already clamped into the output type). */
typedef struct {
    __m512i vcorr, vq, half, vmask, vthr, one, zero, vlo, vhi, vzp;
    __m128i lcount, rcount;
    int right, otype;
} fin512_t;

static inline __attribute__((always_inline)) fin512_t
fin512_setup(uint32_t corr, int64_t qm, int shift, int64_t zp, int64_t lo, int64_t hi,
             int otype) {
    fin512_t f;
    const int left = shift > 0 ? shift : 0;
    f.right = shift > 0 ? 0 : -shift;
    f.lcount = _mm_cvtsi32_si128(left);
    f.rcount = _mm_cvtsi32_si128(f.right);
    f.vcorr = _mm512_set1_epi32(s32(corr));
    f.vq = _mm512_set1_epi32((int32_t)qm);
    f.half = _mm512_set1_epi64(INT64_C(1) << 30);
    const int32_t mask_s = (int32_t)((1u << f.right) - 1u);
    f.vmask = _mm512_set1_epi32(mask_s);
    f.vthr = _mm512_set1_epi32(mask_s >> 1);
    f.one = _mm512_set1_epi32(1);
    f.zero = _mm512_setzero_si512();
    f.vlo = _mm512_set1_epi32((int32_t)(lo - zp));
    f.vhi = _mm512_set1_epi32((int32_t)(hi - zp));
    f.vzp = _mm512_set1_epi32((int32_t)zp);
    f.otype = otype;
    return f;
}

static inline __attribute__((always_inline)) void
fin512_step(const fin512_t *f, const int32_t *acc, __mmask16 k, void *outp) {
    __m512i a = _mm512_add_epi32(_mm512_maskz_loadu_epi32(k, acc), f->vcorr);
    a = _mm512_sll_epi32(a, f->lcount);
    __m512i ev = _mm512_add_epi64(_mm512_mul_epi32(a, f->vq), f->half);
    __m512i od = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(a, 32), f->vq), f->half);
    __m512i h = _mm512_mask_blend_epi32((__mmask16)0xAAAA, _mm512_srli_epi64(ev, 31),
                                        _mm512_slli_epi64(od, 1));
    if (f->right > 0) {
        __m512i rem = _mm512_and_si512(h, f->vmask);
        __m512i thr = _mm512_mask_add_epi32(f->vthr, _mm512_cmplt_epi32_mask(h, f->zero),
                                            f->vthr, f->one);
        h = _mm512_sra_epi32(h, f->rcount);
        h = _mm512_mask_add_epi32(h, _mm512_cmpgt_epi32_mask(rem, thr), h, f->one);
    }
    h = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(h, f->vlo), f->vhi), f->vzp);
    if (f->otype == ORTNPU_T_I16)
        _mm512_mask_cvtsepi32_storeu_epi16(outp, k, h);
    else if (f->otype == ORTNPU_T_I8)
        _mm512_mask_cvtsepi32_storeu_epi8(outp, k, h);
    else
        _mm512_mask_cvtusepi32_storeu_epi8(outp, k, h);
}

static void finish32_double_avx512(const int32_t *acc, int64_t n, uint32_t corr, int64_t qm,
                                   int shift, int64_t zp, int64_t lo, int64_t hi, void *outp,
                                   int otype) {
    const fin512_t f = fin512_setup(corr, qm, shift, zp, lo, hi, otype);
    const int es = otype == ORTNPU_T_I16 ? 2 : 1;
    for (int64_t i = 0; i < n; i += 16) {
        const int64_t left = n - i;
        const __mmask16 k = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
        fin512_step(&f, acc + i, k, (char *)outp + i * es);
    }
}

/* finish32_double over a tile of the phase-width grid: acc holds grid pixels q0 .. q0 + len,
 * of which columns ox >= ow (q = oy * wph + ox) are dropped; out is the channel's output plane.
 * Masked loads and stores: no compaction pass. */
static void finish32_double_grid_avx512(const int32_t *acc, int64_t q0, int64_t len,
                                        int64_t wph, int64_t ow, uint32_t corr, int64_t qm,
                                        int shift, int64_t zp, int64_t lo, int64_t hi,
                                        void *out, int otype) {
    const fin512_t f = fin512_setup(corr, qm, shift, zp, lo, hi, otype);
    const int es = otype == ORTNPU_T_I16 ? 2 : 1;
    int64_t q = q0, end = q0 + len, oy = q0 / wph, ox = q0 % wph;
    while (q < end) {
        if (ox >= ow) { /* dropped columns up to the next row */
            q += wph - ox;
            oy++;
            ox = 0;
            continue;
        }
        const int64_t seg = ow - ox < end - q ? ow - ox : end - q;
        char *dst = (char *)out + (oy * ow + ox) * es;
        for (int64_t i = 0; i < seg; i += 16) {
            const int64_t left = seg - i;
            const __mmask16 k = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
            fin512_step(&f, acc + (q - q0) + i, k, dst + i * es);
        }
        q += seg;
        ox += seg;
    }
}

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

static const ortnpu_isa_t isa_table_vnni = {
    bcast_tile_vnni, dot_tile_avx2, interleave_avx2, dw_row_avx2, finish32_double_avx512,
    bcast_tile_u8_vnni, dw_row3_avx2, dw_cl_pixel_avx2, quad_gather_avx2,
    dw3_row_avx2, finish32_double_grid_avx512, wide_tile_u8_vnni,
};
#endif

int ortnpu_cpu_has_vnni(void) {
#if ORTNPU_HAVE_AVX2
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512vnni");
#else
    return 0;
#endif
}

int ortnpu_cpu_has_avx2(void) {
#if ORTNPU_HAVE_AVX2
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") ? 1 : 0;
#else
    return 0;
#endif
}

int ortnpu_has_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int ortnpu_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static const ortnpu_isa_t *pick_isa(int isa) {
#if ORTNPU_HAVE_AVX2
    if (isa == 2 && ortnpu_cpu_has_vnni()) return &isa_table_vnni;
    if (isa >= 1 && ortnpu_cpu_has_avx2()) return &isa_table_avx2;
#endif
    (void)isa;
    return &isa_table_scalar;
}

static int threads_of(int nthreads) { return nthreads < 1 ? 1 : (nthreads > 1024 ? 1024 : nthreads); }

/* ------------------------------------------------------------------------- typed access */
/* largest |raw value| of a type */
static int64_t type_abs(int t) { return t == ORTNPU_T_I8 ? 128 : (t == ORTNPU_T_U8 ? 255 : 32768); }

static inline int64_t ld(const void *p, int t, int64_t i) {
    switch (t) {
    case ORTNPU_T_I8: return ((const int8_t *)p)[i];
    case ORTNPU_T_U8: return ((const uint8_t *)p)[i];
    default: return ((const int16_t *)p)[i];
    }
}

/* dst[i] = src[start + i*stride] widened to int16 (every activation type fits int16). */
static void load_i16(int16_t *dst, const void *src, int t, int64_t start, int64_t stride,
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

static void fill_i16(int16_t *dst, int16_t v, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = v;
}

/* y[i*ostride] = clamp(v[i] + zp, lo, hi) as the output type; v holds int32-range values. */
static void store_clamp(const int64_t *v, int64_t n, const ortnpu_out_t *o, void *y,
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

/* v[i] = rescale(v[i], m[i*ms], shift[i*ss]) with the rule chosen outside the loop. */
static void rescale_chunk(int64_t *v, int64_t n, const int32_t *m, int64_t ms, const int32_t *sh,
                          int64_t ss, int rule) {
#define ORTNPU_RESCALE_LOOP(F)                                                              \
    for (int64_t i = 0; i < n; i++) v[i] = F(v[i], m[i * ms], sh[i * ss]);
    switch (rule) {
    case ORTNPU_R_DOUBLE: ORTNPU_RESCALE_LOOP(rs_double) break;
    case ORTNPU_R_SINGLE: ORTNPU_RESCALE_LOOP(rs_single) break;
    case ORTNPU_R_INT64: ORTNPU_RESCALE_LOOP(rs_int64) break;
    default: ORTNPU_RESCALE_LOOP(rs_half_up) break;
    }
#undef ORTNPU_RESCALE_LOOP
}

#define CHUNK 256

/* Generic output of accumulators: acc32 (int32, exact or wrapped) or acc64 (exact int64
 * sums), plus corr (uint64, per element with stride cs), brought to the accumulator width,
 * rescaled, offset, clamped and stored at y[idx0 + i*ostride]. */
static void finish_any(const int32_t *acc32, const int64_t *acc64, int64_t n, const uint64_t *corr,
                       int64_t cs, const int32_t *m, int64_t ms, const int32_t *sh, int64_t ss,
                       const ortnpu_out_t *o, void *y, int64_t idx0, int64_t ostride) {
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
static void finish_row(const ortnpu_isa_t *I, const int32_t *acc32, const int64_t *acc64,
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

static int out_ok(const ortnpu_out_t *o) {
    if (!o || !type_ok(o->otype)) return 0;
    if (o->rule < 0 || o->rule > 3 || (o->acc_bits != 32 && o->acc_bits != 64)) return 0;
    if (o->act_min > o->act_max || o->act_min < type_min(o->otype) ||
        o->act_max > type_max(o->otype))
        return 0;
    return o->y_zp >= -(INT64_C(1) << 16) && o->y_zp <= (INT64_C(1) << 16);
}

static int params_ok(const int32_t *m, const int32_t *s, int64_t n, int rule) {
    for (int64_t i = 0; i < n; i++)
        if (!mult_ok(rule, m[i]) || !shift_ok(rule, s[i])) return 0;
    return 1;
}

/* Number of int16 pairs whose madd sum provably fits int32 when each product is at most
 * maxprod in magnitude; 0 means "no limit needed" (32-bit accumulator wraps anyway). */
static int64_t pair_block(int acc_bits, int64_t maxprod) {
    if (acc_bits == 32) return 0;
    int64_t b = INT32_MAX / (2 * maxprod);
    return b < 1 ? 1 : b;
}

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
static int64_t round16(int64_t a) { return (a + 15) & ~INT64_C(15); }

/* ============================================================================== Conv */

/* The im2col of the GEMM convolution reads a zero-point padded copy of the input split into
 * stride phases: phase (py, px) of a plane holds the padded pixels (i * sh + py, j * sw + px),
 * hph x wph of them. Output pixel (oy, ox) then reads tap (ky, kx) at phase
 * ((ky * dh) % sh, (kx * dw) % sw), position (oy + ky * dh / sh, ox + kx * dw / sw): for every
 * stride, a tap's values for a run of output pixels are one contiguous slice. Output pixels go
 * over the phase-width grid q = oy * wph + ox; columns ox >= ow are computed and dropped.
 * Values are uint8 with the quad offset for G = 4, int16 for G = 2. */
typedef struct {
    int64_t K, K2, Kp, P, TP;
    const void *xp;
    int64_t hph, wph, nph; /* phase plane size, phases kept per channel */
    /* only the phases some tap reads are kept (a stride larger than the kernel would
     * otherwise copy phases nobody reads): row phase py is kept as rmap[py] (-1: not kept),
     * column phase px as cmap[px]; phase index = rmap[py] * npx + cmap[px] */
    const int32_t *rmap, *cmap;
    int64_t npx;
} conv_ctx_t;

static const int16_t conv_zeros[288] = {0};

/* int8 to uint8 by adding 128 (restrict: lets the compiler vectorize the byte loop) */
static void flip_i8(uint8_t *restrict d, const int8_t *restrict s, int64_t n) {
    for (int64_t i = 0; i < n; i++) d[i] = (uint8_t)s[i] ^ 0x80u;
}

/* Even and odd bytes of src[0..n) to ev[0..(n+1)/2) and od[0..n/2), each XOR f. */
static void deinterleave2_u8(const uint8_t *restrict src, int64_t n, uint8_t *restrict ev,
                             uint8_t *restrict od, uint8_t f) {
    int64_t i = 0;
#if ORTNPU_HAVE_SSE2
    const __m128i lo8 = _mm_set1_epi16(0x00FF), vf = _mm_set1_epi8((char)f);
    for (; i + 32 <= n; i += 32) {
        __m128i a = _mm_loadu_si128((const __m128i *)(src + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(src + i + 16));
        __m128i e = _mm_packus_epi16(_mm_and_si128(a, lo8), _mm_and_si128(b, lo8));
        __m128i o = _mm_packus_epi16(_mm_srli_epi16(a, 8), _mm_srli_epi16(b, 8));
        _mm_storeu_si128((__m128i *)(ev + i / 2), _mm_xor_si128(e, vf));
        _mm_storeu_si128((__m128i *)(od + i / 2), _mm_xor_si128(o, vf));
    }
#endif
    for (; i < n; i++) {
        if (i & 1)
            od[i / 2] = src[i] ^ f;
        else
            ev[i / 2] = src[i] ^ f;
    }
}

/* The phase planes of every input plane (see conv_ctx_t); 64 elements of slack at the end
 * because the last tile reads up to 15 pixels past the last output. */
static void *pad_phases(const ortnpu_conv_t *p, const void *x, int G, int16_t qoff,
                        const conv_ctx_t *cx) {
    const int64_t planes = p->n * p->c, phase = cx->hph * cx->wph, plane = cx->nph * phase;
    const int64_t es = G == 4 ? 1 : 2, sh = p->sh, sw = p->sw;
    char *xp = scratch(S_OUT2, (size_t)((planes * plane + 64) * es));
    if (!xp) return NULL;
    memset(xp + planes * plane * es, 0, (size_t)(64 * es));
    const int64_t zp = p->x_zp + (G == 4 ? qoff : 0);
    const int padded = p->pt || p->pl || p->pb || p->pr || (p->h + p->pt + p->pb) % sh ||
                       (p->w + p->pl + p->pr) % sw;
    if (padded && G == 4)
        memset(xp, (int)(uint8_t)zp, (size_t)(planes * plane));
    else if (padded)
        fill_i16((int16_t *)(void *)xp, (int16_t)zp, planes * plane);
    /* per column phase: first input column x0, how many, and where they start (no
     * divisions in the loops below: they cost more than the copy on small maps) */
    int64_t x0s[16], cnts[16], js[16];
    const int64_t nphx = sw < 16 ? sw : 16;
    for (int64_t px = 0; px < nphx; px++) {
        x0s[px] = ((px - p->pl) % sw + sw) % sw;
        cnts[px] = x0s[px] < p->w ? (p->w - x0s[px] + sw - 1) / sw : 0;
        js[px] = (x0s[px] + p->pl) / sw;
    }
    const uint8_t flip = p->xtype == ORTNPU_T_I8 ? 0x80u : 0u;
    if (sh == 1 && sw == 1 && p->pt == 0 && p->pl == 0 && p->pb == 0 && p->pr == 0) {
        /* no padding, one phase: the copy is the whole input in one pass (small maps would
         * otherwise pay a call per row) */
        const int64_t total = planes * p->h * p->w;
        if (G == 2)
            load_i16((int16_t *)(void *)xp, x, p->xtype, 0, 1, total);
        else if (flip)
            flip_i8((uint8_t *)xp, (const int8_t *)x, total);
        else
            memcpy(xp, x, (size_t)total);
        return xp;
    }
    for (int64_t pl = 0; pl < planes; pl++) {
        int64_t rph = p->pt % sh, ri = p->pt / sh; /* phase and index of padded row y + pt */
        for (int64_t y = 0; y < p->h; y++) {
            const int64_t src = (pl * p->h + y) * p->w;
            const int32_t rk = cx->rmap[rph];
            const int64_t row = pl * plane + (int64_t)rk * cx->npx * phase + ri * cx->wph;
            if (++rph == sh) {
                rph = 0;
                ri++;
            }
            if (rk < 0) continue; /* a row phase no tap reads */
            if (G == 4 && sw == 2 && cx->npx == 2) { /* both phases of the row in one pass */
                uint8_t *ph0 = (uint8_t *)xp + row, *ph1 = ph0 + phase;
                uint8_t *ev = p->pl % 2 ? ph1 : ph0, *od = p->pl % 2 ? ph0 : ph1;
                deinterleave2_u8((const uint8_t *)x + src, p->w, ev + p->pl / 2,
                                 od + (p->pl + 1) / 2, flip);
                continue;
            }
            for (int64_t px = 0; px < sw; px++) {
                if (cx->cmap[px] < 0) continue;
                const int64_t x0 = px < 16 ? x0s[px] : ((px - p->pl) % sw + sw) % sw;
                const int64_t cnt = px < 16 ? cnts[px]
                                            : (x0 < p->w ? (p->w - x0 + sw - 1) / sw : 0);
                const int64_t j0 = px < 16 ? js[px] : (x0 + p->pl) / sw;
                if (cnt <= 0) continue;
                const int64_t at = row + cx->cmap[px] * phase + j0;
                if (G == 2) {
                    load_i16((int16_t *)(void *)xp + at, x, p->xtype, src + x0, sw, cnt);
                } else if (sw == 1) {
                    if (flip)
                        flip_i8((uint8_t *)xp + at, (const int8_t *)x + src + x0, cnt);
                    else
                        memcpy(xp + at, (const uint8_t *)x + src + x0, (size_t)cnt);
                } else {
                    uint8_t *d = (uint8_t *)xp + at;
                    const uint8_t *sx = (const uint8_t *)x + src + x0;
                    for (int64_t i = 0; i < cnt; i++) d[i] = sx[i * sw] ^ flip;
                }
            }
        }
    }
    return xp;
}

/* Move the valid columns (ox < ow) of a tile's accumulator row [q0, q0 + len) to its front;
 * returns how many and sets *first to the output index of the first. */
#define ORTNPU_COMPACT(NAME, T)                                                                 \
    static int64_t NAME(T *acc, int64_t q0, int64_t len, int64_t wp, int64_t ow,             \
                        int64_t *first) {                                                      \
        int64_t cnt = 0, q = q0, end = q0 + len;                                               \
        *first = -1;                                                                           \
        while (q < end) {                                                                      \
            int64_t oy = q / wp, ox = q % wp;                                                  \
            if (ox >= ow) {                                                                    \
                q = (oy + 1) * wp;                                                             \
                continue;                                                                      \
            }                                                                                  \
            int64_t seg = ow - ox < end - q ? ow - ox : end - q;                               \
            if (*first < 0) *first = oy * ow + ox;                                             \
            if (cnt != q - q0) memmove(acc + cnt, acc + (q - q0), (size_t)seg * sizeof(T));    \
            cnt += seg;                                                                        \
            q += seg;                                                                          \
        }                                                                                      \
        return cnt;                                                                            \
    }
ORTNPU_COMPACT(compact32, int32_t)
ORTNPU_COMPACT(compact64, int64_t)
#undef ORTNPU_COMPACT

/* The tap after (ci, ky, kx) in weight order, without divisions. */
static inline void next_tap(const ortnpu_conv_t *p, int64_t *ci, int64_t *ky, int64_t *kx) {
    if (++*kx == p->kw) {
        *kx = 0;
        if (++*ky == p->kh) {
            *ky = 0;
            ++*ci;
        }
    }
}

/* GEMM convolution: per (image, group, pixel tile) the im2col tile V holds, for every group
 * of G taps (G = 2: int16 pairs; G = 4: u8 quads for the VNNI u8 x s8 tile) and every pixel of
 * the tile, the G values side by side (4 bytes per tap group and pixel either way); U holds the
 * weights of each output channel as G-groups. Output channels go by blocks of four. */
static void conv_gemm(const ortnpu_isa_t *I, const ortnpu_conv_t *p, const ortnpu_out_t *o,
                      const void *x, const void *U, int G, int16_t qoff, const uint64_t *corr,
                      const int32_t *mult, const int32_t *shift, void *y, int nt, int *err) {
    conv_ctx_t cx;
    cx.K = p->cg * p->kh * p->kw;
    cx.Kp = ceil_div(cx.K, G); /* tap groups */
    cx.K2 = G * cx.Kp;         /* weight row length, in elements */
    cx.P = p->oh * p->ow;
    cx.hph = ceil_div(p->h + p->pt + p->pb, p->sh);
    cx.wph = ceil_div(p->w + p->pl + p->pr, p->sw);
    int32_t *maps = scratch(S_OUT3, (size_t)(p->sh + p->sw) * sizeof(int32_t));
    if (!maps) {
        *err = ORTNPU_ENOMEM;
        return;
    }
    for (int64_t k = 0; k < p->sh + p->sw; k++) maps[k] = -1;
    int64_t npy = 0, npx = 0;
    for (int64_t ky = 0; ky < p->kh; ky++)
        if (maps[(ky * p->dh) % p->sh] < 0) maps[(ky * p->dh) % p->sh] = (int32_t)npy++;
    for (int64_t kx = 0; kx < p->kw; kx++)
        if (maps[p->sh + (kx * p->dw) % p->sw] < 0)
            maps[p->sh + (kx * p->dw) % p->sw] = (int32_t)npx++;
    cx.rmap = maps;
    cx.cmap = maps + p->sh;
    cx.npx = npx;
    cx.nph = npy * npx;
    cx.xp = pad_phases(p, x, G, qoff, &cx);
    if (!cx.xp) {
        *err = ORTNPU_ENOMEM;
        return;
    }
    const int64_t Pq = (p->oh - 1) * cx.wph + p->ow; /* grid pixels the tiles cover */
    /* pixel tile: the packed im2col tile (Kp x TP x 4 bytes) stays within ~128 KiB */
    int64_t tp = (INT64_C(128) * 1024 / (cx.Kp * 4)) & ~INT64_C(15);
    if (tp < 16) tp = 16;
    if (tp > 256) tp = 256;
    if (tp > round16(Pq)) tp = round16(Pq);
    /* several threads and too few tiles: smaller pixel tiles (down to 64 pixels) before
     * splitting output channels, whose items each repeat the tile's im2col */
    const int64_t images = p->n * p->group;
    if (nt > 1 && images * ceil_div(Pq, tp) < 2 * nt) {
        int64_t want = round16(ceil_div(Pq, ceil_div(2 * nt, images)));
        if (want < 64) want = 64;
        if (want < tp) tp = want;
    }
    cx.TP = tp;
    const int64_t coutg = p->cout / p->group, nblk = ceil_div(coutg, 4);
    const int64_t ntiles = ceil_div(Pq, cx.TP);
    const int64_t base_items = p->n * p->group * ntiles;
    int64_t nsplit = 1; /* split output channels only to feed several threads: each split
                         * repeats the tile's im2col */
    if (nt > 1 && base_items < 2 * nt) nsplit = ceil_div(2 * nt, base_items);
    if (nsplit > nblk) nsplit = nblk;
    const int64_t items = base_items * nsplit;
    /* tap groups per exact int32 block (acc_bits 64): each group sums G products of at most
     * max|value| * 128 */
    const int64_t vabs = G == 4 ? 255 : type_abs(p->xtype);
    const int64_t kb = o->acc_bits == 32 ? 0 : INT32_MAX / (G * vabs * 128);
    const int blocked = kb > 0 && kb < cx.Kp;
    const int64_t TP = cx.TP, Kp = cx.Kp, K2 = cx.K2;

#pragma omp parallel num_threads(nt)
    {
        uint8_t *V = scratch(S_IN0, (size_t)(Kp * TP * 4));
        int32_t *acc = scratch(S_IN2, (size_t)(4 * TP) * sizeof(int32_t));
        int64_t *acc64 = blocked ? scratch(S_IN3, (size_t)(4 * TP) * sizeof(int64_t)) : NULL;
        int ok = V && acc && (!blocked || acc64);
        if (!ok) {
#pragma omp atomic write
            *err = ORTNPU_ENOMEM;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < items; it++) {
            if (!ok) continue;
            int64_t split = it % nsplit, rest = it / nsplit;
            int64_t t = rest % ntiles, ng = rest / ntiles;
            int64_t g = ng % p->group, n = ng / p->group;
            int64_t p0 = t * TP, tpx = Pq - p0 < TP ? Pq - p0 : TP, tpc = round16(tpx);
            /* im2col of this tile into V: V[j][c][0..G) = taps G*j .. G*j+G-1 of pixel c */
            int64_t ci = g * p->cg, ky = 0, kx = 0; /* tap kk, advanced without divisions */
            for (int64_t k = 0; k < cx.K; k += G) {
                const void *src[4];
                for (int h = 0; h < G; h++) {
                    if (k + h < cx.K) {
                        const int64_t ry = ky * p->dh, rx = kx * p->dw;
                        const int64_t ph = cx.rmap[ry % p->sh] * cx.npx + cx.cmap[rx % p->sw];
                        const int64_t at = (((n * p->c + ci) * cx.nph + ph) * cx.hph +
                                            ry / p->sh) * cx.wph + rx / p->sw + p0;
                        src[h] = (const char *)cx.xp + at * (G == 4 ? 1 : 2);
                        next_tap(p, &ci, &ky, &kx);
                    } else {
                        src[h] = conv_zeros; /* the weights are 0 there */
                    }
                }
                if (G == 2)
                    I->interleave(src[0], src[1], (int16_t *)(void *)V + k * TP, tpc);
                else
                    I->quad_gather(src[0], src[1], src[2], src[3], V + k * TP, tpc);
            }
            int64_t b0 = split * nblk / nsplit, b1 = (split + 1) * nblk / nsplit;
            for (int64_t blk = b0; blk < b1; blk++) {
                int64_t c0 = g * coutg + blk * 4;
                int R = (int)(coutg - blk * 4 < 4 ? coutg - blk * 4 : 4);
                const int wide = G == 4 && !blocked && I->wide_tile_u8;
                for (int64_t col = 0; wide && col < tpc; col += 64) {
                    int nc = (int)((tpc - col) / 16 < 4 ? (tpc - col) / 16 : 4);
                    I->wide_tile_u8((const int8_t *)U + c0 * K2, K2, R, V + 4 * col, TP, Kp,
                                    acc + col, TP, nc);
                }
                for (int64_t col = 0; !wide && col < tpc; col += 16) {
                    int64_t jstep = blocked ? kb : Kp;
                    if (blocked)
                        for (int r = 0; r < R; r++)
                            for (int c = 0; c < 16; c++) acc64[r * TP + col + c] = 0;
                    for (int64_t j0 = 0; j0 < Kp; j0 += jstep) {
                        int64_t j1 = j0 + jstep < Kp ? j0 + jstep : Kp;
                        int32_t tmp[4 * 16];
                        int32_t *dst = blocked ? tmp : acc + col;
                        int64_t ldc = blocked ? 16 : TP;
                        if (G == 2)
                            I->bcast_tile((const int16_t *)U + c0 * K2, K2, R,
                                          (const int16_t *)(const void *)V + 2 * col, TP, j0, j1,
                                          dst, ldc);
                        else
                            I->bcast_tile_u8((const int8_t *)U + c0 * K2, K2, R, V + 4 * col, TP,
                                             j0, j1, dst, ldc);
                        if (blocked)
                            for (int r = 0; r < R; r++)
                                for (int c = 0; c < 16; c++)
                                    acc64[r * TP + col + c] += tmp[r * 16 + c];
                    }
                }
                for (int r = 0; r < R; r++) {
                    int64_t c = c0 + r, pi = p->n_params == 1 ? 0 : c;
                    int64_t first = p0, cnt = tpx;
                    if (cx.wph != p->ow && !blocked && I->finish32_double_grid &&
                        o->acc_bits == 32 && o->rule == ORTNPU_R_DOUBLE) {
                        const int es = o->otype == ORTNPU_T_I16 ? 2 : 1;
                        I->finish32_double_grid(
                            acc + r * TP, p0, tpx, cx.wph, p->ow, (uint32_t)corr[c], mult[pi],
                            shift[pi], o->y_zp, o->act_min, o->act_max,
                            (char *)y + (n * p->cout + c) * cx.P * es, o->otype);
                        continue;
                    }
                    if (cx.wph != p->ow)
                        cnt = blocked ? compact64(acc64 + r * TP, p0, tpx, cx.wph, p->ow, &first)
                                      : compact32(acc + r * TP, p0, tpx, cx.wph, p->ow, &first);
                    if (cnt > 0)
                        finish_row(I, blocked ? NULL : acc + r * TP,
                                   blocked ? acc64 + r * TP : NULL, cnt, corr[c], mult + pi,
                                   shift + pi, o, y, (n * p->cout + c) * cx.P + first);
                }
            }
        }
    }
}

/* Depthwise (one input channel per output channel): direct convolution on a zp-padded int16
 * copy of the input plane, int32 accumulators (exact or wrapping, see the caller). */
static void conv_depthwise(const ortnpu_isa_t *I, const ortnpu_conv_t *p, const ortnpu_out_t *o,
                           const void *x, const int8_t *w, const uint64_t *corr,
                           const int32_t *mult, const int32_t *shift, void *y, int nt, int *err) {
    const int64_t hp = p->h + p->pt + p->pb, wp = p->w + p->pl + p->pr;
    const int64_t mdw = p->cout / p->group; /* depth multiplier */
    const int64_t P = p->oh * p->ow, items = p->n * p->cout, taps = p->kh * p->kw;
#pragma omp parallel num_threads(nt)
    {
        const int pairs3 = I->dw3_row && p->kh == 3 && p->kw == 3 && p->dh == 1 &&
                           p->dw == 1 && (p->sw == 1 || p->sw == 2);
        /* slack: dw3_row reads up to 2 * ow + 24 values past a row start */
        int16_t *plane = scratch(S_IN0, (size_t)(hp * wp + 2 * p->ow + 64) * sizeof(int16_t));
        uint32_t *acc = scratch(S_IN1, (size_t)(P + 16) * sizeof(uint32_t));
        int ok = plane && acc;
        if (!ok) {
#pragma omp atomic write
            *err = ORTNPU_ENOMEM;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < items; it++) {
            if (!ok) continue;
            int64_t n = it / p->cout, co = it % p->cout, ci = co / mdw;
            const int64_t src = (n * p->c + ci) * p->h * p->w;
            const int16_t zp = (int16_t)p->x_zp;
            fill_i16(plane, zp, p->pt * wp);
            for (int64_t r = 0; r < p->h; r++) {
                int16_t *d = plane + (r + p->pt) * wp;
                fill_i16(d, zp, p->pl);
                load_i16(d + p->pl, x, p->xtype, src + r * p->w, 1, p->w);
                fill_i16(d + p->pl + p->w, zp, p->pr);
            }
            fill_i16(plane + (p->pt + p->h) * wp, zp, p->pb * wp);
            const int8_t *wk = w + co * taps;
            for (int64_t oy = 0; pairs3 && oy < p->oh; oy++) {
                const int16_t *r0 = plane + oy * p->sh * wp;
                I->dw3_row(acc + oy * p->ow, r0, r0 + wp, r0 + 2 * wp, p->sw, p->ow, wk, NULL);
            }
            for (int64_t oy = 0; !pairs3 && oy < p->oh; oy++) {
                uint32_t *a = acc + oy * p->ow;
                memset(a, 0, (size_t)p->ow * sizeof *a);
                for (int64_t ky = 0; ky < p->kh; ky++) {
                    const int16_t *srow = plane + (oy * p->sh + ky * p->dh) * wp;
                    if (p->kw == 3)
                        I->dw_row3(a, srow, p->sw, p->ow, p->dw, wk + ky * 3);
                    else
                        for (int64_t kx = 0; kx < p->kw; kx++)
                            I->dw_row(a, srow + kx * p->dw, p->sw, p->ow, wk[ky * p->kw + kx]);
                }
            }
            int64_t pi = p->n_params == 1 ? 0 : co;
            finish_row(I, (const int32_t *)acc, NULL, P, corr[co], mult + pi, shift + pi, o, y,
                       (n * p->cout + co) * P);
        }
    }
}

/* Depthwise convolution, depth multiplier 1, 8-bit input, 32-bit accumulator, channels last:
 * the inner loop runs across channels (contiguous after a transpose), which keeps the vector
 * lanes full on small maps where the per-channel rows of conv_depthwise are a few pixels wide.
 * Padded taps are skipped, so x - x_zp is accumulated and corr gets x_zp * sum(w) back: the
 * wrapped int32 sum is the same modulo 2^32 whatever the order, hence the same bits. */
static void conv_depthwise_cl(const ortnpu_isa_t *I, const ortnpu_conv_t *p,
                              const ortnpu_out_t *o, const void *x, const int8_t *w,
                              const uint64_t *corr, const int32_t *mult, const int32_t *shift,
                              void *y, int nt, int *err) {
    const int64_t C = p->c, P = p->oh * p->ow, taps = p->kh * p->kw;
    const int64_t hp = p->h + p->pt + p->pb, wp = p->w + p->pl + p->pr;
    int16_t *xt = scratch(S_OUT2, (size_t)(hp * wp * C) * sizeof(int16_t));
    int16_t *wt = scratch(S_OUT3, (size_t)(taps * C) * sizeof(int16_t));
    uint32_t *acc = scratch(S_OUT4, (size_t)(P * C) * sizeof(uint32_t));
    int64_t *off = scratch(S_OUT5, (size_t)taps * sizeof(int64_t));
    int16_t *plane = scratch(S_IN0, (size_t)(16 * p->h * p->w) * sizeof(int16_t));
    if (!xt || !wt || !acc || !off || !plane) {
        *err = ORTNPU_ENOMEM;
        return;
    }
    for (int64_t c = 0; c < C; c++)
        for (int64_t t = 0; t < taps; t++) wt[t * C + c] = w[c * taps + t];
    for (int64_t ky = 0; ky < p->kh; ky++)
        for (int64_t kx = 0; kx < p->kw; kx++)
            off[ky * p->kw + kx] = (ky * p->dh * wp + kx * p->dw) * C;
    for (int64_t n = 0; n < p->n; n++) {
        /* channels-last copy with the zero point in the padding: every tap is read, and
         * corr (bias - x_zp * sum w) accounts for the zero point */
        const int16_t zp = (int16_t)p->x_zp;
        const int64_t HW = p->h * p->w;
        fill_i16(xt, zp, hp * wp * C);
        /* by blocks of 16 channels: 16 input streams read in step, 16 contiguous values
         * written per pixel */
        for (int64_t c0 = 0; c0 < C; c0 += 16) {
            const int64_t cb = C - c0 < 16 ? C - c0 : 16;
            for (int64_t c = 0; c < cb; c++)
                load_i16(plane + c * HW, x, p->xtype, (n * C + c0 + c) * HW, 1, HW);
            for (int64_t iy = 0; iy < p->h; iy++)
                for (int64_t ix = 0; ix < p->w; ix++) {
                    int16_t *d = xt + ((iy + p->pt) * wp + p->pl + ix) * C + c0;
                    const int16_t *sr = plane + iy * p->w + ix;
                    if (cb == 16)
                        for (int c = 0; c < 16; c++) d[c] = sr[c * HW];
                    else
                        for (int64_t c = 0; c < cb; c++) d[c] = sr[c * HW];
                }
        }
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t q = 0; q < P; q++) {
            const int64_t oy = q / p->ow, ox = q % p->ow;
            I->dw_cl_pixel(acc + q * C, xt + (oy * p->sh * wp + ox * p->sw) * C, off, wt, taps,
                           C);
        }
#pragma omp parallel num_threads(nt)
        {
            /* back to channel rows by blocks of 16 channels (64 contiguous bytes per pixel) */
            int32_t *rows = scratch(S_IN1, (size_t)(16 * P) * sizeof(int32_t));
            if (!rows) {
#pragma omp atomic write
                *err = ORTNPU_ENOMEM;
            }
#pragma omp for schedule(static)
            for (int64_t c0 = 0; c0 < C; c0 += 16) {
                if (!rows) continue;
                const int64_t cb = C - c0 < 16 ? C - c0 : 16;
                for (int64_t q = 0; q < P; q++)
                    for (int64_t c = 0; c < cb; c++) rows[c * P + q] = (int32_t)acc[q * C + c0 + c];
                for (int64_t c = 0; c < cb; c++) {
                    const int64_t pi = p->n_params == 1 ? 0 : c0 + c;
                    finish_row(I, rows + c * P, NULL, P, corr[c0 + c], mult + pi, shift + pi, o,
                               y, (n * C + c0 + c) * P);
                }
            }
        }
    }
}

static int conv_args_ok(const ortnpu_conv_t *p, const ortnpu_out_t *o) {
    if (!p || !out_ok(o) || !type_ok(p->xtype)) return 0;
    if (p->n < 0 || p->c < 1 || p->h < 1 || p->w < 1 || p->cout < 1 || p->cg < 1 || p->kh < 1 ||
        p->kw < 1 || p->group < 1 || p->sh < 1 || p->sw < 1 || p->dh < 1 || p->dw < 1 ||
        p->pt < 0 || p->pl < 0 || p->pb < 0 || p->pr < 0)
        return 0;
    if (p->cg * p->group != p->c || p->cout % p->group) return 0;
    int64_t span_h = p->dh * (p->kh - 1) + 1, span_w = p->dw * (p->kw - 1) + 1;
    if (span_h > p->h + p->pt + p->pb || span_w > p->w + p->pl + p->pr) return 0;
    if (p->oh != (p->h + p->pt + p->pb - span_h) / p->sh + 1 ||
        p->ow != (p->w + p->pl + p->pr - span_w) / p->sw + 1)
        return 0;
    if (p->x_zp < type_min(p->xtype) || p->x_zp > type_max(p->xtype)) return 0;
    return p->n_params == 1 || p->n_params == p->cout;
}

/* The weights in the layout of the chosen kernel, and the per-channel correction
 * corr[c] = bias[c] - zp * sum(w[c]) (zp with the quad offset on the u8 x s8 path). */
struct ortnpu_conv_pack {
    int G, depthwise;
    int16_t qoff;
    int isa;
    void *U;        /* GEMM weights: rows of K2 (G == 2: int16, G == 4: int8); NULL depthwise */
    uint64_t *corr;
    int owned;      /* U and corr were malloc'ed for this pack (else per-thread scratch) */
};

static int conv_pack_fill(const ortnpu_isa_t *I, const ortnpu_conv_t *p, const ortnpu_out_t *o,
                          const int8_t *w, const int64_t *bias, ortnpu_conv_pack_t *pk,
                          int owned) {
    pk->depthwise = p->cg == 1 && p->group > 1 &&
        (o->acc_bits == 32 || p->kh * p->kw * type_abs(p->xtype) * 128 <= INT32_MAX);
    /* u8 x s8 quads on VNNI for 8-bit inputs: an int8 x becomes x + 128, so the padding value
     * and the zero point of the correction move by 128 as well */
    pk->G = (I->bcast_tile_u8 && p->xtype != ORTNPU_T_I16) ? 4 : 2;
    pk->qoff = p->xtype == ORTNPU_T_I8 ? 128 : 0;
    pk->owned = owned;
    const int G = pk->G;
    const int64_t zp_eff = G == 4 ? p->x_zp + pk->qoff : p->x_zp;
    const int64_t K = p->cg * p->kh * p->kw, K2 = G * ceil_div(K, G);
    const size_t ubytes = (size_t)(p->cout * K2) * (G == 2 ? sizeof(int16_t) : 1);
    const size_t cbytes = (size_t)p->cout * sizeof(uint64_t);
    pk->U = pk->depthwise ? NULL : (owned ? malloc(ubytes) : scratch(S_OUT0, ubytes));
    pk->corr = owned ? malloc(cbytes) : scratch(S_OUT1, cbytes);
    if ((!pk->depthwise && !pk->U) || !pk->corr) return ORTNPU_ENOMEM;
    for (int64_t c = 0; c < p->cout; c++) {
        const int8_t *wr = w + c * K;
        int64_t s = 0;
        for (int64_t k = 0; k < K; k++) s += wr[k];
        if (pk->U && G == 2) {
            int16_t *u = (int16_t *)pk->U + c * K2;
            for (int64_t k = 0; k < K2; k++) u[k] = k < K ? wr[k] : 0;
        } else if (pk->U) {
            int8_t *u = (int8_t *)pk->U + c * K2;
            for (int64_t k = 0; k < K2; k++) u[k] = k < K ? wr[k] : 0;
        }
        pk->corr[c] = (uint64_t)bias[c] - (uint64_t)((pk->depthwise ? p->x_zp : zp_eff) * s);
    }
    return ORTNPU_OK;
}

/* ORTNPU_DW_ROWS=1 or ortnpu_force_dw_rows(1) (tests) forces the depthwise row kernel; the
 * environment is read once (getenv scans it on every call) */
static int g_dw_rows = -1;
void ortnpu_force_dw_rows(int on) { g_dw_rows = on ? 1 : 0; }
static int force_dw_rows(void) {
    if (g_dw_rows < 0) g_dw_rows = getenv("ORTNPU_DW_ROWS") != NULL;
    return g_dw_rows;
}

static int conv_run(const ortnpu_isa_t *I, const ortnpu_conv_pack_t *pk, const ortnpu_conv_t *p,
                    const ortnpu_out_t *o, const void *x, const int8_t *w, const int32_t *mult,
                    const int32_t *shift, void *y, int nt) {
    int err = ORTNPU_OK;
    /* small maps (below ~20x20 outputs) run channels-last; ORTNPU_DW_ROWS=1 forces the row
     * kernel (the tests compare both paths with the reference) */
    if (pk->depthwise && p->cout == p->c && p->xtype != ORTNPU_T_I16 && o->acc_bits == 32 &&
        p->oh * p->ow < 400 && !force_dw_rows())
        conv_depthwise_cl(I, p, o, x, w, pk->corr, mult, shift, y, nt, &err);
    else if (pk->depthwise)
        conv_depthwise(I, p, o, x, w, pk->corr, mult, shift, y, nt, &err);
    else
        conv_gemm(I, p, o, x, pk->U, pk->G, pk->qoff, pk->corr, mult, shift, y, nt, &err);
    return err;
}

int ortnpu_conv2d(const ortnpu_conv_t *p, const ortnpu_out_t *o, const void *x, const int8_t *w,
                  const int64_t *bias, const int32_t *mult, const int32_t *shift, void *y,
                  int nthreads, int isa) {
    if (!conv_args_ok(p, o) || !params_ok(mult, shift, p->n_params, o->rule))
        return ORTNPU_EBADARG;
    if (p->n == 0) return ORTNPU_OK;
    const ortnpu_isa_t *I = pick_isa(isa);
    ortnpu_conv_pack_t pk;
    int rc = conv_pack_fill(I, p, o, w, bias, &pk, 0);
    if (rc != ORTNPU_OK) return rc;
    return conv_run(I, &pk, p, o, x, w, mult, shift, y, threads_of(nthreads));
}

ortnpu_conv_pack_t *ortnpu_conv_pack_new(const ortnpu_conv_t *p, const ortnpu_out_t *o,
                                         const int8_t *w, const int64_t *bias, int isa) {
    if (!conv_args_ok(p, o)) return NULL;
    ortnpu_conv_pack_t *pk = calloc(1, sizeof(*pk));
    if (!pk) return NULL;
    pk->isa = isa;
    if (conv_pack_fill(pick_isa(isa), p, o, w, bias, pk, 1) != ORTNPU_OK) {
        ortnpu_conv_pack_free(pk);
        return NULL;
    }
    return pk;
}

void ortnpu_conv_pack_free(ortnpu_conv_pack_t *pk) {
    if (!pk) return;
    if (pk->owned) {
        free(pk->U);
        free(pk->corr);
    }
    free(pk);
}

int ortnpu_conv2d_packed(const ortnpu_conv_pack_t *pk, const ortnpu_conv_t *p,
                         const ortnpu_out_t *o, const void *x, const int8_t *w,
                         const int32_t *mult, const int32_t *shift, void *y, int nthreads) {
    if (!pk || !conv_args_ok(p, o) || !params_ok(mult, shift, p->n_params, o->rule))
        return ORTNPU_EBADARG;
    if (p->n == 0) return ORTNPU_OK;
    return conv_run(pick_isa(pk->isa), pk, p, o, x, w, mult, shift, y, threads_of(nthreads));
}

/* ==================================================================== FullyConnected */

int ortnpu_fully_connected(int64_t rows, int64_t k, int64_t n, const void *x, int32_t xtype,
                           int64_t x_zp, const int8_t *w, const int64_t *bias,
                           const int32_t *mult, const int32_t *shift, int32_t n_params,
                           const ortnpu_out_t *o, void *y, int nthreads, int isa) {
    if (!out_ok(o) || !type_ok(xtype) || rows < 0 || k < 0 || n < 0) return ORTNPU_EBADARG;
    if (x_zp < type_min(xtype) || x_zp > type_max(xtype)) return ORTNPU_EBADARG;
    if (n_params != 1 && n_params != n) return ORTNPU_EBADARG;
    if (!params_ok(mult, shift, n_params, o->rule)) return ORTNPU_EBADARG;
    if (rows == 0 || n == 0) return ORTNPU_OK;
    const ortnpu_isa_t *I = pick_isa(isa);
    const int nt = threads_of(nthreads);
    const int64_t k16 = round16(k);
    int16_t *X = scratch(S_OUT0, (size_t)(rows * k16 + 1) * sizeof(int16_t));
    uint64_t *corr = scratch(S_OUT1, (size_t)n * sizeof(uint64_t));
    if (!X || !corr) {
        return ORTNPU_ENOMEM;
    }
    /* x - x_zp fits int16 for 8-bit inputs (and int16 ones with zp 0): subtract it here;
     * otherwise keep raw values and correct with x_zp * sum(w) per output */
    const int fold = xtype != ORTNPU_T_I16 || x_zp == 0;
    const int64_t zsub = fold ? x_zp : 0, zcorr = fold ? 0 : x_zp;
    for (int64_t r = 0; r < rows; r++) {
        int16_t *d = X + r * k16;
        load_i16(d, x, xtype, r * k, 1, k);
        if (zsub)
            for (int64_t kk = 0; kk < k; kk++) d[kk] = (int16_t)(d[kk] - zsub);
        fill_i16(d + k, 0, k16 - k);
    }
    int64_t xabs = type_max(xtype) - zsub > zsub - type_min(xtype) ? type_max(xtype) - zsub
                                                                   : zsub - type_min(xtype);
    /* exact int32 blocks of k (multiple of 16) for the 64-bit accumulator */
    int64_t kb = pair_block(o->acc_bits, xabs * 128) * 2;
    kb &= ~INT64_C(15); /* at least 496 (int16 input): 496 * 2^22 < 2^31 */
    const int blocked = o->acc_bits == 64 && kb < k;
    const int64_t nblk = ceil_div(n, 4);
    const int pc = n_params != 1;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t b = 0; b < nblk; b++) {
        const int64_t n0 = b * 4;
        const int NW = (int)(n - n0 < 4 ? n - n0 : 4);
        uint64_t cr[4];
        for (int q = 0; q < NW; q++) {
            int64_t s = 0;
            if (zcorr != 0)
                for (int64_t kk = 0; kk < k; kk++) s += w[(n0 + q) * k + kk];
            cr[q] = (uint64_t)bias[n0 + q] - (uint64_t)(zcorr * s);
        }
        for (int64_t r0 = 0; r0 < rows; r0 += 2) {
            const int R = rows - r0 >= 2 ? 2 : 1;
            int32_t c32[8];
            int64_t c64[8];
            if (!blocked) {
                I->dot_tile(X + r0 * k16, k16, R, w + n0 * k, k, NW, 0, k, c32);
            } else {
                memset(c64, 0, sizeof c64);
                for (int64_t k0 = 0; k0 < k; k0 += kb) {
                    int64_t k1 = k0 + kb < k ? k0 + kb : k;
                    I->dot_tile(X + r0 * k16, k16, R, w + n0 * k, k, NW, k0, k1, c32);
                    for (int i = 0; i < 8; i++) c64[i] += c32[i];
                }
            }
            for (int r = 0; r < R; r++)
                finish_any(blocked ? NULL : c32 + 4 * r, blocked ? c64 + 4 * r : NULL, NW, cr, 1,
                           mult + (pc ? n0 : 0), pc, shift + (pc ? n0 : 0), pc, o, y,
                           (r0 + r) * n + n0, 1);
        }
    }
    return ORTNPU_OK;
}

/* ============================================================================ MatMul */

int ortnpu_matmul(int64_t batch, int64_t m, int64_t k, int64_t n, const void *a, int32_t atype,
                  int64_t a_zp, const int64_t *a_off, int64_t a_len, const void *b,
                  int32_t btype, int64_t b_zp, const int64_t *b_off, int64_t b_len,
                  int32_t mult, int32_t shift, const ortnpu_out_t *o, void *y, int nthreads,
                  int isa) {
    if (!out_ok(o) || !type_ok(atype) || !type_ok(btype) || batch < 0 || m < 0 || k < 0 || n < 0)
        return ORTNPU_EBADARG;
    if (a_zp < type_min(atype) || a_zp > type_max(atype) || b_zp < type_min(btype) ||
        b_zp > type_max(btype))
        return ORTNPU_EBADARG;
    if (!mult_ok(o->rule, mult) || !shift_ok(o->rule, shift)) return ORTNPU_EBADARG;
    for (int64_t i = 0; i < batch; i++)
        if (a_off[i] < 0 || a_off[i] + m * k > a_len || b_off[i] < 0 || b_off[i] + k * n > b_len)
            return ORTNPU_EBADARG;
    if (batch == 0 || m == 0 || n == 0) return ORTNPU_OK;
    const ortnpu_isa_t *I = pick_isa(isa);
    const int nt = threads_of(nthreads);
    /* range of the zero-point-subtracted operands */
    int64_t alo = type_min(atype) - a_zp, ahi = type_max(atype) - a_zp;
    int64_t blo = type_min(btype) - b_zp, bhi = type_max(btype) - b_zp;
    int64_t ra = -alo > ahi ? -alo : ahi, rb = -blo > bhi ? -blo : bhi;
    int fits = alo >= -32768 && ahi <= 32767 && blo >= -32768 && bhi <= 32767;
    int64_t kb = pair_block(o->acc_bits, ra * rb);
    if (o->acc_bits == 64 && 2 * ra * rb > INT32_MAX) fits = 0;
    int err = ORTNPU_OK;
    if (!fits) {
        /* exact int64 loops: products reach 2^32, beyond the int16 pair path */
#pragma omp parallel num_threads(nt)
        {
            int64_t *acc = malloc((size_t)n * sizeof(int64_t));
            if (!acc) {
#pragma omp atomic write
                err = ORTNPU_ENOMEM;
            }
#pragma omp for schedule(dynamic, 1)
            for (int64_t it = 0; it < batch * m; it++) {
                if (!acc) continue;
                int64_t bi = it / m, i = it % m;
                memset(acc, 0, (size_t)n * sizeof *acc);
                for (int64_t kk = 0; kk < k; kk++) {
                    int64_t av = ld(a, atype, a_off[bi] + i * k + kk) - a_zp;
                    int64_t row = b_off[bi] + kk * n;
                    for (int64_t j = 0; j < n; j++) acc[j] += av * (ld(b, btype, row + j) - b_zp);
                }
                uint64_t zero = 0;
                finish_any(NULL, acc, n, &zero, 0, &mult, 0, &shift, 0, o, y, it * n, 1);
            }
            free(acc);
        }
        return err;
    }
    const int64_t Kp = (k + 1) / 2, K2 = 2 * Kp, np16 = round16(n);
    const int64_t usz = m * K2, vsz = Kp * np16 * 2;
    int16_t *U = malloc((size_t)(batch * usz + 1) * sizeof(int16_t));
    int16_t *V = malloc((size_t)(batch * vsz + 1) * sizeof(int16_t));
    if (!U || !V) {
        free(U);
        free(V);
        return ORTNPU_ENOMEM;
    }
    const int blocked = kb > 0 && kb < Kp;
#pragma omp parallel num_threads(nt)
    {
        int16_t *r0 = malloc((size_t)(2 * np16) * sizeof(int16_t));
        int32_t *acc = malloc((size_t)(4 * np16) * sizeof(int32_t));
        int64_t *acc64 = blocked ? malloc((size_t)(4 * np16) * sizeof(int64_t)) : NULL;
        int ok = r0 && acc && (!blocked || acc64);
        if (!ok) {
#pragma omp atomic write
            err = ORTNPU_ENOMEM;
        }
        /* pack: U = rows of a - a_zp (int16, K padded even), V = pairs of rows of b - b_zp */
#pragma omp for schedule(static)
        for (int64_t bi = 0; bi < batch; bi++) {
            if (!ok) continue;
            int16_t *u = U + bi * usz, *v = V + bi * vsz, *r1 = r0 + np16;
            for (int64_t i = 0; i < m; i++) {
                for (int64_t kk = 0; kk < k; kk++)
                    u[i * K2 + kk] = (int16_t)(ld(a, atype, a_off[bi] + i * k + kk) - a_zp);
                if (K2 > k) u[i * K2 + k] = 0;
            }
            for (int64_t j = 0; j < Kp; j++) {
                for (int h = 0; h < 2; h++) {
                    int16_t *row = h ? r1 : r0;
                    int64_t kk = 2 * j + h;
                    fill_i16(row, 0, np16);
                    if (kk < k)
                        for (int64_t c = 0; c < n; c++)
                            row[c] = (int16_t)(ld(b, btype, b_off[bi] + kk * n + c) - b_zp);
                }
                I->interleave(r0, r1, v + j * np16 * 2, np16);
            }
        }
        const int64_t mblk = ceil_div(m, 4);
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < batch * mblk; it++) {
            if (!ok) continue;
            int64_t bi = it / mblk, i0 = (it % mblk) * 4;
            int R = (int)(m - i0 < 4 ? m - i0 : 4);
            const int16_t *u = U + bi * usz + i0 * K2, *v = V + bi * vsz;
            for (int64_t col = 0; col < np16; col += 16) {
                if (!blocked) {
                    I->bcast_tile(u, K2, R, v + 2 * col, np16, 0, Kp, acc + col, np16);
                } else {
                    for (int r = 0; r < R; r++)
                        for (int c = 0; c < 16; c++) acc64[r * np16 + col + c] = 0;
                    for (int64_t j0 = 0; j0 < Kp; j0 += kb) {
                        int64_t j1 = j0 + kb < Kp ? j0 + kb : Kp;
                        int32_t tmp[64];
                        I->bcast_tile(u, K2, R, v + 2 * col, np16, j0, j1, tmp, 16);
                        for (int r = 0; r < R; r++)
                            for (int c = 0; c < 16; c++) acc64[r * np16 + col + c] += tmp[r * 16 + c];
                    }
                }
            }
            for (int r = 0; r < R; r++)
                finish_row(I, blocked ? NULL : acc + r * np16, blocked ? acc64 + r * np16 : NULL,
                           n, 0, &mult, &shift, o, y, (bi * m + i0 + r) * n);
        }
        free(r0);
        free(acc);
        free(acc64);
    }
    free(U);
    free(V);
    return err;
}

/* ======================================================================= Add and Mul */

static void load_i64(int64_t *dst, const void *src, int t, int64_t start, int64_t stride,
                     int64_t count) {
    if (t == ORTNPU_T_I8)
        for (int64_t i = 0; i < count; i++) dst[i] = ((const int8_t *)src)[start + i * stride];
    else if (t == ORTNPU_T_U8)
        for (int64_t i = 0; i < count; i++) dst[i] = ((const uint8_t *)src)[start + i * stride];
    else
        for (int64_t i = 0; i < count; i++) dst[i] = ((const int16_t *)src)[start + i * stride];
}

/* Add on 8-bit inputs: each input's shifted, rescaled value depends on the input value
 * alone, so it is computed once per possible value (2 x 256 rescales) instead of once per
 * element: the same numbers, a third of the work. Returns 0 when the tables do not apply. */
int ortnpu_binary_tables(int32_t op, int32_t atype, int32_t btype, const int64_t *prm,
                         int32_t rule, int64_t *ta, int64_t *tb) {
    if (op != 0 || atype == ORTNPU_T_I16 || btype == ORTNPU_T_I16 || !type_ok(atype) ||
        !type_ok(btype))
        return 0;
    const int ls = (int)prm[2];
    for (int64_t v = 0; v < 256; v++) {
        ta[v] = rescale1(s32((uint32_t)(uint64_t)(v + type_min(atype) - prm[0]) << ls),
                         (int32_t)prm[3], (int32_t)prm[4], rule);
        tb[v] = rescale1(s32((uint32_t)(uint64_t)(v + type_min(btype) - prm[1]) << ls),
                         (int32_t)prm[5], (int32_t)prm[6], rule);
    }
    return 1;
}

int ortnpu_binary(int32_t op, int32_t ndim, const int64_t *shape, const void *a, int32_t atype,
                  const int64_t *astride, int64_t a_len, const void *b, int32_t btype,
                  const int64_t *bstride, int64_t b_len, const int64_t *prm,
                  const ortnpu_out_t *o, void *y, int nthreads, int isa) {
    return ortnpu_binary_tabled(op, ndim, shape, a, atype, astride, a_len, b, btype, bstride,
                                b_len, prm, NULL, o, y, nthreads, isa);
}

int ortnpu_binary_tabled(int32_t op, int32_t ndim, const int64_t *shape, const void *a,
                         int32_t atype, const int64_t *astride, int64_t a_len, const void *b,
                         int32_t btype, const int64_t *bstride, int64_t b_len,
                         const int64_t *prm, const int64_t *given, const ortnpu_out_t *o,
                         void *y, int nthreads, int isa) {
    const ortnpu_isa_t *I = pick_isa(isa);
    if (!out_ok(o) || !type_ok(atype) || !type_ok(btype) || ndim < 1 || ndim > 16 ||
        (op != 0 && op != 1))
        return ORTNPU_EBADARG;
    /* parameters: zero points in their type's range, rescales in the rule's range */
    if (prm[0] < type_min(atype) || prm[0] > type_max(atype) || prm[1] < type_min(btype) ||
        prm[1] > type_max(btype))
        return ORTNPU_EBADARG;
    if (op == 0) {
        if (prm[2] < 0 || prm[2] > 31) return ORTNPU_EBADARG;
        for (int i = 3; i < 9; i += 2)
            if (!mult_ok(o->rule, prm[i]) || !shift_ok(o->rule, prm[i + 1])) return ORTNPU_EBADARG;
    } else if (!mult_ok(o->rule, prm[2]) || !shift_ok(o->rule, prm[3])) {
        return ORTNPU_EBADARG;
    }
    /* bounds: the largest offset reached must lie inside each input */
    int64_t outer = 1, amax = 0, bmax = 0;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0 || astride[d] < 0 || bstride[d] < 0) return ORTNPU_EBADARG;
        if (shape[d] == 0) return ORTNPU_OK;
        if (d < ndim - 1) outer *= shape[d];
        amax += (shape[d] - 1) * astride[d];
        bmax += (shape[d] - 1) * bstride[d];
    }
    if (amax >= a_len || bmax >= b_len) return ORTNPU_EBADARG;
    const int64_t inner = shape[ndim - 1], nch = ceil_div(inner, CHUNK);
    const int nt = threads_of(nthreads);
    const int32_t m32[3] = {(int32_t)prm[op == 0 ? 3 : 2], (int32_t)prm[op == 0 ? 5 : 2],
                            (int32_t)prm[op == 0 ? 7 : 2]};
    const int32_t s32v[3] = {(int32_t)prm[op == 0 ? 4 : 3], (int32_t)prm[op == 0 ? 6 : 3],
                             (int32_t)prm[op == 0 ? 8 : 3]};
    /* tables of the per-input terms (given: made by ortnpu_binary_tables with these
     * parameters, 512 values) */
    int64_t own[512];
    const int64_t *ta = given, *tb = given ? given + 256 : NULL;
    int tables = given != NULL;
    if (!tables) {
        tables = ortnpu_binary_tables(op, atype, btype, prm, o->rule, own, own + 256);
        ta = own;
        tb = own + 256;
    }
    const int64_t amin = type_min(atype), bmin = type_min(btype);
#pragma omp parallel for num_threads(nt) schedule(static) if (outer * inner > 32768)
    for (int64_t it = 0; it < outer * nch; it++) {
        int64_t row = it / nch, c0 = (it % nch) * CHUNK;
        int64_t len = inner - c0 < CHUNK ? inner - c0 : CHUNK;
        int64_t ao = 0, bo = 0, rem = row;
        for (int d = ndim - 2; d >= 0; d--) {
            int64_t idx = rem % shape[d];
            rem /= shape[d];
            ao += idx * astride[d];
            bo += idx * bstride[d];
        }
        const int64_t sa = astride[ndim - 1], sb = bstride[ndim - 1];
        ao += c0 * sa;
        bo += c0 * sb;
        int64_t va[CHUNK], vb[CHUNK];
        load_i64(va, a, atype, ao, sa, len);
        load_i64(vb, b, btype, bo, sb, len);
        if (tables && o->rule == ORTNPU_R_DOUBLE) {
            /* the sum's rescale, offset, clamp and store: the vectorized output stage of the
             * convolutions (rs_double of an int32 row with no correction) */
            int32_t sum[CHUNK];
            for (int64_t i = 0; i < len; i++)
                sum[i] = (int32_t)wrap32(ta[va[i] - amin] + tb[vb[i] - bmin]);
            char *base = (char *)y + (row * inner + c0) * (o->otype == ORTNPU_T_I16 ? 2 : 1);
            I->finish32_double(sum, len, 0u, m32[2], s32v[2], o->y_zp, o->act_min, o->act_max,
                               base, o->otype);
            continue;
        }
        if (tables) {
            for (int64_t i = 0; i < len; i++)
                va[i] = wrap32(ta[va[i] - amin] + tb[vb[i] - bmin]);
            rescale_chunk(va, len, &m32[2], 0, &s32v[2], 0, o->rule);
        } else if (op == 0) {
            /* Add: (x - zp) << left_shift wrapped to int32, rescaled per input, summed with
             * int32 wrap-around, rescaled again */
            const int ls = (int)prm[2];
            for (int64_t i = 0; i < len; i++) {
                va[i] = s32((uint32_t)(uint64_t)(va[i] - prm[0]) << ls);
                vb[i] = s32((uint32_t)(uint64_t)(vb[i] - prm[1]) << ls);
            }
            rescale_chunk(va, len, &m32[0], 0, &s32v[0], 0, o->rule);
            rescale_chunk(vb, len, &m32[1], 0, &s32v[1], 0, o->rule);
            for (int64_t i = 0; i < len; i++) va[i] = wrap32(va[i] + vb[i]);
            rescale_chunk(va, len, &m32[2], 0, &s32v[2], 0, o->rule);
        } else {
            /* Mul: the product of the offsets (|.| < 2^32) wrapped to int32 */
            for (int64_t i = 0; i < len; i++) va[i] = wrap32((va[i] - prm[0]) * (vb[i] - prm[1]));
            rescale_chunk(va, len, &m32[0], 0, &s32v[0], 0, o->rule);
        }
        store_clamp(va, len, o, y, row * inner + c0, 1);
    }
    return ORTNPU_OK;
}

/* ======================================================================= Requantize */

int ortnpu_requantize(int64_t outer, int64_t ch, int64_t inner, const void *x, int32_t xtype,
                      int64_t x_zp, const int32_t *mult, const int32_t *shift, int32_t n_params,
                      const ortnpu_out_t *o, void *y, int nthreads, int isa) {
    (void)isa;
    if (!out_ok(o) || !type_ok(xtype) || outer < 0 || ch < 0 || inner < 0) return ORTNPU_EBADARG;
    if (x_zp < type_min(xtype) || x_zp > type_max(xtype)) return ORTNPU_EBADARG;
    if (n_params != 1 && n_params != ch) return ORTNPU_EBADARG;
    if (!params_ok(mult, shift, n_params, o->rule)) return ORTNPU_EBADARG;
    const int64_t total = outer * ch * inner;
    if (total == 0) return ORTNPU_OK;
    const int nt = threads_of(nthreads);
    const int pc = n_params != 1;
    /* rows: with per-channel parameters and inner == 1 a row runs along the channels (per
     * element parameters); otherwise a row is one channel's inner block (constant ones) */
    const int along = pc && inner == 1;
    const int64_t rowlen = along ? ch : (pc ? inner : total);
    const int64_t rows = total / rowlen, nch = ceil_div(rowlen, CHUNK);
#pragma omp parallel for num_threads(nt) schedule(static) if (total > 32768)
    for (int64_t it = 0; it < rows * nch; it++) {
        int64_t row = it / nch, c0 = (it % nch) * CHUNK;
        int64_t len = rowlen - c0 < CHUNK ? rowlen - c0 : CHUNK;
        int64_t start = row * rowlen + c0;
        int64_t v[CHUNK];
        load_i64(v, x, xtype, start, 1, len);
        for (int64_t i = 0; i < len; i++) v[i] -= x_zp;
        if (along)
            rescale_chunk(v, len, mult + c0, 1, shift + c0, 1, o->rule);
        else {
            int64_t c = pc ? row % ch : 0;
            rescale_chunk(v, len, mult + c, 0, shift + c, 0, o->rule);
        }
        store_clamp(v, len, o, y, start, 1);
    }
    return ORTNPU_OK;
}

/* ============================================================================== Lut */

int ortnpu_lut(int64_t count, const void *x, int32_t xtype, const void *table, int32_t ttype,
               int64_t table_len, void *y, int nthreads) {
    if (!type_ok(xtype) || !type_ok(ttype) || count < 0) return ORTNPU_EBADARG;
    if (table_len != (xtype == ORTNPU_T_I16 ? 65536 : 256)) return ORTNPU_EBADARG;
    const int nt = threads_of(nthreads);
    const int64_t off = -type_min(xtype);
#pragma omp parallel for num_threads(nt) schedule(static) if (count > 65536)
    for (int64_t c0 = 0; c0 < count; c0 += 4096) {
        int64_t end = c0 + 4096 < count ? c0 + 4096 : count;
        for (int64_t i = c0; i < end; i++) {
            int64_t idx = ld(x, xtype, i) + off; /* in [0, table_len) by construction */
            switch (ttype) {
            case ORTNPU_T_I8: ((int8_t *)y)[i] = ((const int8_t *)table)[idx]; break;
            case ORTNPU_T_U8: ((uint8_t *)y)[i] = ((const uint8_t *)table)[idx]; break;
            default: ((int16_t *)y)[i] = ((const int16_t *)table)[idx]; break;
            }
        }
    }
    return ORTNPU_OK;
}

/* ============================================================================ Pooling */

/* Max pooling of one plane without padding or dilation: the max of the kh input rows first
 * (a vectorizable element-wise max), then the windows along that row; tmp holds w values. */
#define ORTNPU_MAXPOOL_PLANE(NAME, T)                                                           \
    static void NAME(const T *x, int64_t w, int64_t kh, int64_t kw, int64_t sh, int64_t sw,   \
                     int64_t oh, int64_t ow, int64_t lo, int64_t hi, T *y, T *tmp) {           \
        for (int64_t oy = 0; oy < oh; oy++) {                                                  \
            const T *r0 = x + oy * sh * w;                                                     \
            memcpy(tmp, r0, (size_t)w * sizeof(T));                                            \
            for (int64_t ky = 1; ky < kh; ky++) {                                              \
                const T *r = r0 + ky * w;                                                      \
                for (int64_t i = 0; i < w; i++) tmp[i] = r[i] > tmp[i] ? r[i] : tmp[i];        \
            }                                                                                  \
            T *out = y + oy * ow;                                                              \
            for (int64_t ox = 0; ox < ow; ox++) {                                              \
                const T *t = tmp + ox * sw;                                                    \
                T m = t[0];                                                                    \
                for (int64_t kx = 1; kx < kw; kx++) m = t[kx] > m ? t[kx] : m;                 \
                out[ox] = (T)(m < lo ? lo : (m > hi ? hi : m));                                \
            }                                                                                  \
        }                                                                                      \
    }
ORTNPU_MAXPOOL_PLANE(maxpool_plane_i8, int8_t)
ORTNPU_MAXPOOL_PLANE(maxpool_plane_u8, uint8_t)
ORTNPU_MAXPOOL_PLANE(maxpool_plane_i16, int16_t)
#undef ORTNPU_MAXPOOL_PLANE

/* 2x2 stride-2 max pooling of one 8-bit plane without padding: SSE2 on the uint8 view
 * (int8 values XOR 0x80 keep their order), 8 outputs per 16 input bytes of two rows. */
static void maxpool2x2_u8view(const uint8_t *x, int64_t w, int64_t oh, int64_t ow, uint8_t f,
                              uint8_t lo, uint8_t hi, uint8_t *y) {
    for (int64_t oy = 0; oy < oh; oy++) {
        const uint8_t *r0 = x + 2 * oy * w, *r1 = r0 + w;
        uint8_t *out = y + oy * ow;
        int64_t ox = 0;
#if ORTNPU_HAVE_SSE2
        const __m128i vf = _mm_set1_epi8((char)f), lo8 = _mm_set1_epi16(0x00FF);
        const __m128i vlo = _mm_set1_epi8((char)lo), vhi = _mm_set1_epi8((char)hi);
        for (; ox < ow && ow >= 8; ox += 8) {
            if (ox + 8 > ow) ox = ow - 8; /* last step overlaps the previous one: same values */
            __m128i a = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(r0 + 2 * ox)), vf);
            __m128i b = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(r1 + 2 * ox)), vf);
            __m128i m = _mm_max_epu8(a, b);
            __m128i pm = _mm_max_epi16(_mm_and_si128(m, lo8), _mm_srli_epi16(m, 8));
            __m128i r = _mm_packus_epi16(pm, pm);
            r = _mm_min_epu8(_mm_max_epu8(r, vlo), vhi);
            _mm_storel_epi64((__m128i *)(out + ox), _mm_xor_si128(r, vf));
        }
#endif
        for (; ox < ow; ox++) {
            uint8_t a = r0[2 * ox] ^ f, b = r0[2 * ox + 1] ^ f, c = r1[2 * ox] ^ f,
                    d = r1[2 * ox + 1] ^ f;
            uint8_t m = a > b ? a : b;
            m = c > m ? c : m;
            m = d > m ? d : m;
            m = m < lo ? lo : (m > hi ? hi : m);
            out[ox] = m ^ f;
        }
    }
}

int ortnpu_pool2d(int32_t op, int64_t n, int64_t c, int64_t h, int64_t w, const int64_t *win,
                  const void *x, int32_t xtype, int64_t act_min, int64_t act_max, void *y,
                  int nthreads) {
    const int64_t kh = win[0], kw = win[1], sh = win[2], sw = win[3], dh = win[4], dw = win[5];
    const int64_t pt = win[6], pl = win[7], pb = win[8], pr = win[9], oh = win[10], ow = win[11];
    if (!type_ok(xtype) || (op != 0 && op != 1) || n < 0 || c < 0 || h < 1 || w < 1)
        return ORTNPU_EBADARG;
    if (kh < 1 || kw < 1 || sh < 1 || sw < 1 || dh < 1 || dw < 1 || pt < 0 || pl < 0 || pb < 0 ||
        pr < 0 || act_min > act_max)
        return ORTNPU_EBADARG;
    int64_t span_h = dh * (kh - 1) + 1, span_w = dw * (kw - 1) + 1;
    if (span_h > h + pt + pb || span_w > w + pl + pr) return ORTNPU_EBADARG;
    if (oh != (h + pt + pb - span_h) / sh + 1 || ow != (w + pl + pr - span_w) / sw + 1)
        return ORTNPU_EBADARG;
    const int nt = threads_of(nthreads);
    if (op == 0 && pt == 0 && pl == 0 && pb == 0 && pr == 0 && dh == 1 && dw == 1 &&
        kh == 2 && kw == 2 && sh == 2 && sw == 2 && xtype != ORTNPU_T_I16) {
        /* the clamp bounds in the uint8 view (clamped to the type first) */
        const int64_t tmin = type_min(xtype), tmax = type_max(xtype);
        const int64_t amin = act_min < tmin ? tmin : (act_min > tmax ? tmax : act_min);
        const int64_t amax = act_max < tmin ? tmin : (act_max > tmax ? tmax : act_max);
        const uint8_t f = xtype == ORTNPU_T_I8 ? 0x80u : 0u;
        const uint8_t lo = (uint8_t)amin ^ f, hi = (uint8_t)amax ^ f;
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t i = 0; i < n * c; i++)
            maxpool2x2_u8view((const uint8_t *)x + i * h * w, w, oh, ow, f, lo, hi,
                              (uint8_t *)y + i * oh * ow);
        return ORTNPU_OK;
    }
    if (op == 0 && pt == 0 && pl == 0 && pb == 0 && pr == 0 && dh == 1 && dw == 1) {
        int err = ORTNPU_OK;
#pragma omp parallel num_threads(nt)
        {
            int16_t *tmp = scratch(S_IN0, (size_t)w * sizeof(int16_t));
            if (!tmp) {
#pragma omp atomic write
                err = ORTNPU_ENOMEM;
            }
#pragma omp for schedule(static)
            for (int64_t i = 0; i < n * c; i++) {
                if (!tmp) continue;
                const int64_t src = i * h * w, dst = i * oh * ow;
                if (xtype == ORTNPU_T_I8)
                    maxpool_plane_i8((const int8_t *)x + src, w, kh, kw, sh, sw, oh, ow,
                                     act_min, act_max, (int8_t *)y + dst, (int8_t *)tmp);
                else if (xtype == ORTNPU_T_U8)
                    maxpool_plane_u8((const uint8_t *)x + src, w, kh, kw, sh, sw, oh, ow,
                                     act_min, act_max, (uint8_t *)y + dst, (uint8_t *)tmp);
                else
                    maxpool_plane_i16((const int16_t *)x + src, w, kh, kw, sh, sw, oh, ow,
                                      act_min, act_max, (int16_t *)y + dst, tmp);
            }
        }
        return err;
    }
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t pl_i = 0; pl_i < n * c; pl_i++) {
        const int64_t src = pl_i * h * w, dst = pl_i * oh * ow;
        for (int64_t oy = 0; oy < oh; oy++) {
            for (int64_t ox = 0; ox < ow; ox++) {
                int64_t best = INT64_MIN, sum = 0, cnt = 0;
                for (int64_t ky = 0; ky < kh; ky++) {
                    int64_t iy = oy * sh + ky * dh - pt;
                    if (iy < 0 || iy >= h) continue;
                    for (int64_t kx = 0; kx < kw; kx++) {
                        int64_t ix = ox * sw + kx * dw - pl;
                        if (ix < 0 || ix >= w) continue;
                        int64_t v = ld(x, xtype, src + iy * w + ix);
                        best = v > best ? v : best;
                        sum += v;
                        cnt++;
                    }
                }
                int64_t r;
                if (op == 0) {
                    r = best; /* no in-bounds element: INT64_MIN, clamped to act_min */
                } else if (cnt == 0) {
                    r = 0;    /* impossible after validation; avoid dividing by zero */
                } else {
                    /* (sum +- count/2) / count, C's truncating division */
                    int64_t half = cnt / 2;
                    r = (sum > 0 ? sum + half : sum - half) / cnt;
                }
                r = r < act_min ? act_min : (r > act_max ? act_max : r);
                int64_t at = dst + oy * ow + ox;
                switch (xtype) {
                case ORTNPU_T_I8: ((int8_t *)y)[at] = (int8_t)r; break;
                case ORTNPU_T_U8: ((uint8_t *)y)[at] = (uint8_t)r; break;
                default: ((int16_t *)y)[at] = (int16_t)r; break;
                }
            }
        }
    }
    return ORTNPU_OK;
}

int ortnpu_global_avgpool(int64_t n, int64_t c, int64_t hw, const void *x, int32_t xtype,
                          int64_t act_min, int64_t act_max, void *y, int nthreads) {
    if (!type_ok(xtype) || n < 0 || c < 0 || hw < 1 || act_min > act_max) return ORTNPU_EBADARG;
    const int nt = threads_of(nthreads);
#pragma omp parallel for num_threads(nt) schedule(static) if (n * c * hw > 65536)
    for (int64_t i = 0; i < n * c; i++) {
        int64_t sum = 0;
        if (xtype == ORTNPU_T_I8)
            for (int64_t j = 0; j < hw; j++) sum += ((const int8_t *)x)[i * hw + j];
        else if (xtype == ORTNPU_T_U8)
            for (int64_t j = 0; j < hw; j++) sum += ((const uint8_t *)x)[i * hw + j];
        else
            for (int64_t j = 0; j < hw; j++) sum += ((const int16_t *)x)[i * hw + j];
        int64_t half = hw / 2;
        int64_t r = (sum > 0 ? sum + half : sum - half) / hw;
        r = r < act_min ? act_min : (r > act_max ? act_max : r);
        switch (xtype) {
        case ORTNPU_T_I8: ((int8_t *)y)[i] = (int8_t)r; break;
        case ORTNPU_T_U8: ((uint8_t *)y)[i] = (uint8_t)r; break;
        default: ((int16_t *)y)[i] = (int16_t)r; break;
        }
    }
    return ORTNPU_OK;
}
