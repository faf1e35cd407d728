/* The per-ISA inner loops: kernels_isa.h compiled once as portable C and once inside an AVX2
 * target region, the AVX-512 VNNI tiles and epilogue in a third target region, their function
 * tables (ortnpu_isa_t) and the run-time choice between them (ortnpu_pick_isa). The kernel
 * files reach the loops only through the table, so this is the only file compiled with
 * target-specific code generation. */
#include "kernels_common.h"

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
/* The AVX2 tile's step: VPMADDWD (16 int16 pair products, 8 sums) and VPADDD, twelve
 * independent chains: 16 multiply-adds per VPMADDWD. */
static uint64_t mac_probe_avx2(uint64_t n) {
    __m256i a = _mm256_set1_epi16(1), b = _mm256_set1_epi16(1);
    __m256i c[12];
    for (int k = 0; k < 12; k++) c[k] = _mm256_setzero_si256();
    for (uint64_t i = 0; i < n; i++) {
        __asm__ volatile("" : "+x"(a), "+x"(b));
        for (int k = 0; k < 12; k++) c[k] = _mm256_add_epi32(c[k], _mm256_madd_epi16(a, b));
    }
    __m256i s = c[0];
    for (int k = 1; k < 12; k++) s = _mm256_add_epi32(s, c[k]);
    return _mm256_extract_epi32(s, 0) ? n * 12 * 16 : 0;
}
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
/* VPDPBUSD / VPDPWSSD as inline assembly, the accumulator an in-out operand: with the
 * intrinsics GCC 12 copied every accumulator of a tile to another register and back on each
 * step (the 4 x 4 u8 tile of a 320-channel 1x1 convolution: 372 GMAC/s, 529 with these, on a
 * 550 GMAC/s core; C harness). Same instructions, same bits. */
static inline __attribute__((always_inline)) __m512i dpbusd(__m512i acc, __m512i u8,
                                                            __m512i s8) {
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u8), "v"(s8));
    return acc;
}
static inline __attribute__((always_inline)) __m512i dpwssd(__m512i acc, __m512i a, __m512i b) {
    __asm__("vpdpwssd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
    return acc;
}

/* The lanes of a 16-lane step that hold data when `left` values remain (none to all). */
static inline __attribute__((always_inline)) __mmask16 lanes16(int64_t left) {
    return left >= 16 ? (__mmask16)0xFFFF : left <= 0 ? 0 : (__mmask16)((1u << left) - 1u);
}

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
            a0[r] = dpwssd(a0[r], _mm512_set1_epi32(u0), v0);
            a1[r] = dpwssd(a1[r], _mm512_set1_epi32(u1), v1);
        }
    }
    if (j < j1) {
        __m512i v0 = _mm512_loadu_si512((const void *)(V + 2 * j * ldv));
        for (int r = 0; r < R; r++) {
            int32_t u0;
            memcpy(&u0, U + r * ldu + 2 * j, sizeof u0);
            a0[r] = dpwssd(a0[r], _mm512_set1_epi32(u0), v0);
        }
    }
    for (int r = 0; r < R; r++)
        _mm512_storeu_si512((void *)(C + r * ldc), _mm512_add_epi32(a0[r], a1[r]));
}

static void bcast_tile_vnni(const int16_t *U, int64_t ldu, int R, const int16_t *V, int64_t ldv,
                            int64_t j0, int64_t j1, int32_t *C, int64_t ldc, int64_t ncol) {
    for (int64_t g = 0; g < ncol; g++) { /* groups of 16 columns, as in kernels_isa.h */
        const int16_t *Vg = V + 32 * g;
        int32_t *Cg = C + 16 * g;
        switch (R) {
        case 1: bcast_tile_vnni_r(U, ldu, 1, Vg, ldv, j0, j1, Cg, ldc); break;
        case 2: bcast_tile_vnni_r(U, ldu, 2, Vg, ldv, j0, j1, Cg, ldc); break;
        case 3: bcast_tile_vnni_r(U, ldu, 3, Vg, ldv, j0, j1, Cg, ldc); break;
        default: bcast_tile_vnni_r(U, ldu, 4, Vg, ldv, j0, j1, Cg, ldc); break;
        }
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
            a0[r] = dpbusd(a0[r], v0, _mm512_set1_epi32(u0));
            a1[r] = dpbusd(a1[r], v1, _mm512_set1_epi32(u1));
        }
    }
    if (j < j1) {
        __m512i v0 = _mm512_loadu_si512((const void *)(V + 4 * j * ldv));
        for (int r = 0; r < R; r++) {
            int32_t u0;
            memcpy(&u0, U + r * ldu + 4 * j, sizeof u0);
            a0[r] = dpbusd(a0[r], v0, _mm512_set1_epi32(u0));
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
            for (int c = 0; c < NC; c++) a[r][c] = dpbusd(a[r][c], v[c], w);
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
    __m512i zp16, lo8, hi8;   /* the packed 8-bit store's zero point (int16) and clamp */
    __m128i lcount, rcount;
    int left, right, otype, pack8;   /* pack8: 8-bit output, |zp| <= 2^14: zero point and
                                        * clamp after packing (fin512_packed) */
} fin512_t;

static inline __attribute__((always_inline)) fin512_t
fin512_setup(uint32_t corr, int64_t qm, int shift, int64_t zp, int64_t lo, int64_t hi,
             int otype) {
    fin512_t f;
    const int left = shift > 0 ? shift : 0;
    f.left = left;
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
    f.pack8 = otype != ORTNPU_T_I16 && zp <= 16384 && zp >= -16384;
    f.zp16 = _mm512_set1_epi16((int16_t)(f.pack8 ? zp : 0));
    f.lo8 = _mm512_set1_epi8((char)lo);
    f.hi8 = _mm512_set1_epi8((char)hi);
    f.otype = otype;
    return f;
}

/* rs_double of 16 int32 lanes with the setup's multiplier and shift (no clamp) */
static inline __attribute__((always_inline)) __m512i fin512_rescale(const fin512_t *f,
                                                                    __m512i a) {
    if (f->left) a = _mm512_sll_epi32(a, f->lcount);
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
    return h;
}

/* clamp, + zero point: the output values, in int32 lanes */
static inline __attribute__((always_inline)) __m512i fin512_clamp(const fin512_t *f, __m512i h) {
    return _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(h, f->vlo), f->vhi), f->vzp);
}

/* clamp, + zero point, narrowing store of the lanes in k */
static inline __attribute__((always_inline)) void fin512_store(const fin512_t *f, __m512i h,
                                                               __mmask16 k, void *outp) {
    h = fin512_clamp(f, h);
    if (f->otype == ORTNPU_T_I16)
        _mm512_mask_cvtsepi32_storeu_epi16(outp, k, h);
    else if (f->otype == ORTNPU_T_I8)
        _mm512_mask_cvtsepi32_storeu_epi8(outp, k, h);
    else
        _mm512_mask_cvtusepi32_storeu_epi8(outp, k, h);
}

static inline __attribute__((always_inline)) void
fin512_step(const fin512_t *f, const int32_t *acc, __mmask16 k, void *outp) {
    const __m512i a = _mm512_add_epi32(_mm512_maskz_loadu_epi32(k, acc), f->vcorr);
    fin512_store(f, fin512_rescale(f, a), k, outp);
}

/* 16 8-bit values (k lanes) widened to int32 */
static inline __attribute__((always_inline)) __m512i load8x16(const uint8_t *p, __mmask16 k,
                                                              int is_signed) {
    const __m128i v = _mm_maskz_loadu_epi8(k, p);
    return is_signed ? _mm512_cvtepi8_epi32(v) : _mm512_cvtepu8_epi32(v);
}

/* Add (op 0) or Mul (op 1) of 8-bit a and b under tflite_double, 16 lanes at a time, the
 * scalar kernel's steps (kernels_elementwise.c): Add: each (x - zp) << left_shift wrapped to
 * int32 and rescaled, the int32 sum (wrapping) rescaled; Mul: the offsets' product (fits
 * int32: |.| <= 255 * 255) rescaled. sa, sb: 1, or 0 for a value broadcast over the n
 * outputs. prm as ortnpu_binary: a_zp, b_zp, then Add: left_shift, a/b/y multiplier and
 * shift; Mul: multiplier, shift. */
static void binary8_double_avx512(int op, const uint8_t *a, int64_t sa, int a_signed,
                                  const uint8_t *b, int64_t sb, int b_signed, int64_t n,
                                  const int64_t *prm, int64_t zp, int64_t lo, int64_t hi,
                                  void *outp, int otype) {
    const fin512_t fy = op == 0 ? fin512_setup(0, prm[7], (int)prm[8], zp, lo, hi, otype)
                                : fin512_setup(0, prm[2], (int)prm[3], zp, lo, hi, otype);
    const fin512_t fa = fin512_setup(0, op == 0 ? prm[3] : 0, op == 0 ? (int)prm[4] : 0, 0, 0,
                                     0, otype);
    const fin512_t fb = fin512_setup(0, op == 0 ? prm[5] : 0, op == 0 ? (int)prm[6] : 0, 0, 0,
                                     0, otype);
    const __m512i azp = _mm512_set1_epi32((int32_t)prm[0]), bzp = _mm512_set1_epi32((int32_t)prm[1]);
    const __m128i ls = _mm_cvtsi32_si128(op == 0 ? (int)prm[2] : 0);
    const int es = otype == ORTNPU_T_I16 ? 2 : 1;
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = lanes16(n - i);
        __m512i va = sa ? load8x16(a + i, k, a_signed)
                        : _mm512_set1_epi32(a_signed ? (int8_t)a[0] : a[0]);
        __m512i vb = sb ? load8x16(b + i, k, b_signed)
                        : _mm512_set1_epi32(b_signed ? (int8_t)b[0] : b[0]);
        va = _mm512_sub_epi32(va, azp);
        vb = _mm512_sub_epi32(vb, bzp);
        __m512i v;
        if (op == 0) {
            va = fin512_rescale(&fa, _mm512_sll_epi32(va, ls));
            vb = fin512_rescale(&fb, _mm512_sll_epi32(vb, ls));
            v = _mm512_add_epi32(va, vb);
        } else {
            v = _mm512_mullo_epi32(va, vb);
        }
        fin512_store(&fy, fin512_rescale(&fy, v), k, (char *)outp + i * es);
    }
}

/* Store 4 vectors of 8-bit outputs (fin512_packed): int16 saturation, + zero point
 * (saturating; 0 when !pack8, whose values are already clamped and offset in int32), 8-bit
 * saturation, byte clamp; the first nb bytes (64: all). */
static inline __attribute__((always_inline)) void fin512_pack8(const fin512_t *f,
                                                               const __m512i *v, int64_t nb,
                                                               int8_t *out) {
    const __m512i order = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
    const __m512i w01 = _mm512_adds_epi16(_mm512_packs_epi32(v[0], v[1]), f->zp16);
    const __m512i w23 = _mm512_adds_epi16(_mm512_packs_epi32(v[2], v[3]), f->zp16);
    __m512i b;
    if (f->otype == ORTNPU_T_I8)
        b = _mm512_min_epi8(_mm512_max_epi8(_mm512_packs_epi16(w01, w23), f->lo8), f->hi8);
    else
        b = _mm512_min_epu8(_mm512_max_epu8(_mm512_packus_epi16(w01, w23), f->lo8), f->hi8);
    b = _mm512_permutexvar_epi32(order, b);
    if (nb >= 64)
        _mm512_storeu_si512(out, b);
    else
        _mm512_mask_storeu_epi8(out, ((__mmask64)1 << nb) - 1, b);
}

/* Four (8-bit outputs) or two (16-bit) rescaled vectors of consecutive outputs packed with
 * saturation and stored in one 64-byte write: a third faster than a narrowing store per vector
 * on the AVX-512 machine (0.13 against 0.17 ns per value); pack works per 128-bit lane, the
 * permute restores the order. 16-bit outputs are clamped and offset in int32 first. 8-bit
 * outputs skip that: the rescaled h saturated to int16, plus the zero point with int16
 * saturation, saturated to 8 bits, is clamp(h + zp) into the 8-bit type (when h is outside
 * int16, the saturated value plus a zero point of at most 2^14 in magnitude still lies beyond
 * the 8-bit range on h's side), and act_min/act_max then clamp bytes: three int32 operations
 * per vector fewer. */
static inline __attribute__((always_inline)) int64_t
fin512_packed(const fin512_t *f, const int32_t *acc, int64_t n, void *outp) {
    const int64_t per = f->otype == ORTNPU_T_I16 ? 32 : 64;
    int64_t i = 0;
    for (; i + per <= n; i += per) {
        __m512i v[4];
        for (int j = 0; j < per / 16; j++) {
            const __m512i a = _mm512_add_epi32(_mm512_loadu_si512(acc + i + 16 * j), f->vcorr);
            v[j] = f->pack8 ? fin512_rescale(f, a) : fin512_clamp(f, fin512_rescale(f, a));
        }
        if (f->otype != ORTNPU_T_I16) {
            fin512_pack8(f, v, 64, (int8_t *)outp + i);
            continue;
        }
        const __m512i order = _mm512_set_epi64(7, 5, 3, 1, 6, 4, 2, 0);
        _mm512_storeu_si512((int16_t *)outp + i,
                            _mm512_permutexvar_epi64(order, _mm512_packs_epi32(v[0], v[1])));
    }
    if (f->pack8 && i < n) {   /* the last 1-63 outputs: masked loads, one masked store */
        __m512i v[4];
        for (int j = 0; j < 4; j++) {
            const __mmask16 k = lanes16(n - i - 16 * j);
            v[j] = fin512_rescale(f, _mm512_add_epi32(_mm512_maskz_loadu_epi32(k, acc + i + 16 * j),
                                                      f->vcorr));
        }
        fin512_pack8(f, v, n - i, (int8_t *)outp + i);
        i = n;
    }
    return i;
}

static void finish32_double_avx512(const int32_t *acc, int64_t n, uint32_t corr, int64_t qm,
                                   int shift, int64_t zp, int64_t lo, int64_t hi, void *outp,
                                   int otype) {
    const fin512_t f = fin512_setup(corr, qm, shift, zp, lo, hi, otype);
    const int es = otype == ORTNPU_T_I16 ? 2 : 1;
    for (int64_t i = fin512_packed(&f, acc, n, outp); i < n; i += 16) {
        const __mmask16 k = lanes16(n - i);
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
        for (int64_t i = fin512_packed(&f, acc + (q - q0), seg, dst); i < seg; i += 16) {
            const __mmask16 k = lanes16(seg - i);
            fin512_step(&f, acc + (q - q0) + i, k, dst + i * es);
        }
        q += seg;
        ox += seg;
    }
}

/* finish32_double with parameters per lane (the output channels of the rows GEMM of
 * FullyConnected, kernels_linear.c): acc + corr[i] + rowadd wrapped to int32, then
 * rs_double(., qm[i], shift[i]), clamp, + zp: the steps of fin512_step with variable shift
 * counts (sllv/srav) and per-lane multipliers; n lanes, the tail masked. */
static void finish32_double_lanes_avx512(const int32_t *acc, int64_t n, const int32_t *corr,
                                         int32_t rowadd, const int32_t *qm,
                                         const int32_t *shift, int64_t zp, int64_t lo,
                                         int64_t hi, void *outp, int otype) {
    const __m512i vrow = _mm512_set1_epi32(rowadd), zero = _mm512_setzero_si512();
    const __m512i one = _mm512_set1_epi32(1), half = _mm512_set1_epi64(INT64_C(1) << 30);
    const __m512i vlo = _mm512_set1_epi32((int32_t)(lo - zp));
    const __m512i vhi = _mm512_set1_epi32((int32_t)(hi - zp));
    const __m512i vzp = _mm512_set1_epi32((int32_t)zp);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = lanes16(n - i);
        __m512i a = _mm512_add_epi32(_mm512_maskz_loadu_epi32(k, acc + i),
                                     _mm512_add_epi32(_mm512_maskz_loadu_epi32(k, corr + i),
                                                      vrow));
        const __m512i s = _mm512_maskz_loadu_epi32(k, shift + i);
        const __m512i vq = _mm512_maskz_loadu_epi32(k, qm + i);
        const __m512i left = _mm512_max_epi32(s, zero);
        const __m512i right = _mm512_max_epi32(_mm512_sub_epi32(zero, s), zero);
        a = _mm512_sllv_epi32(a, left);
        __m512i ev = _mm512_add_epi64(_mm512_mul_epi32(a, vq), half);
        __m512i od = _mm512_add_epi64(
            _mm512_mul_epi32(_mm512_srli_epi64(a, 32), _mm512_srli_epi64(vq, 32)), half);
        __m512i h = _mm512_mask_blend_epi32((__mmask16)0xAAAA, _mm512_srli_epi64(ev, 31),
                                            _mm512_slli_epi64(od, 1));
        const __m512i mask = _mm512_sub_epi32(_mm512_sllv_epi32(one, right), one);
        const __m512i rem = _mm512_and_si512(h, mask);
        const __m512i thr0 = _mm512_srli_epi32(mask, 1);
        const __m512i thr = _mm512_mask_add_epi32(thr0, _mm512_cmplt_epi32_mask(h, zero), thr0,
                                                  one);
        h = _mm512_srav_epi32(h, right);
        h = _mm512_mask_add_epi32(h, _mm512_cmpgt_epi32_mask(rem, thr), h, one);
        h = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(h, vlo), vhi), vzp);
        if (otype == ORTNPU_T_I16)
            _mm512_mask_cvtsepi32_storeu_epi16((char *)outp + 2 * i, k, h);
        else if (otype == ORTNPU_T_I8)
            _mm512_mask_cvtsepi32_storeu_epi8((char *)outp + i, k, h);
        else
            _mm512_mask_cvtusepi32_storeu_epi8((char *)outp + i, k, h);
    }
}

/* Twelve independent VPDPBUSD chains (more than latency x throughput on current cores), so
 * the loop runs at the instruction's throughput: 64 u8 x s8 multiply-adds each. */
static uint64_t mac_probe_vnni(uint64_t n) {
    __m512i a = _mm512_set1_epi8(1), b = _mm512_set1_epi8(1);
    __m512i c[12];
    for (int k = 0; k < 12; k++) c[k] = _mm512_setzero_si512();
    for (uint64_t i = 0; i < n; i++) {
        __asm__ volatile("" : "+v"(a), "+v"(b));   /* keep the loop from being folded */
        for (int k = 0; k < 12; k++) c[k] = _mm512_dpbusd_epi32(c[k], a, b);
    }
    __m512i s = c[0];
    for (int k = 1; k < 12; k++) s = _mm512_add_epi32(s, c[k]);
    return (uint64_t)(uint32_t)_mm512_reduce_add_epi32(s) ? n * 12 * 64 : 0;
}

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

/* AVX-512 VBMI on top: the depthwise sums by byte permutes (VPERMB picks each output's window
 * bytes out of 64 loaded ones, VPDPBUSD multiplies four taps at once). */
#if defined(__clang__)
#pragma clang attribute push(                                                                \
    __attribute__((target("avx2,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi"))),         \
    apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")
#endif
/* The sums of R vector groups from group g0 at column x0 (m = 1) or of R groups of m rows:
 * group g reads the plane rows g * step + ky, so neighbouring groups share rows (step 1 or 2:
 * R + 2 or 2R + 1 loads and permutes for 3R multiply-adds with a 3-row kernel). KH, NQ,
 * STEP: compile-time values (0: the channel's, in loops). */
static inline __attribute__((always_inline)) void
dwq_groups(const ortnpu_dwq_t *c, const uint8_t *plane, uint32_t *acc, int64_t g0, int64_t x0,
           const __m512i *ix, const int R, const int KH, const int NQ, const int STEP) {
    const int kh = KH ? KH : c->kh, nq = NQ ? NQ : c->nq;
    const int64_t step = STEP ? STEP : c->m * c->sh, wp = c->wp;
    const uint8_t *src = plane + g0 * step * wp + x0 * c->sw;
    __m512i s[4];
    for (int g = 0; g < R; g++) s[g] = _mm512_setzero_si512();
    const int64_t U = (R - 1) * step + kh;
#pragma GCC unroll 16
    for (int64_t u = 0; u < U; u++) {
        const __m512i a = _mm512_loadu_si512((const void *)(src + u * wp));
#pragma GCC unroll 4
        for (int q = 0; q < nq; q++) {
            const __m512i qv = _mm512_permutexvar_epi8(ix[q], a);
#pragma GCC unroll 4
            for (int g = 0; g < R; g++) {
                const int64_t ky = u - g * step;
                if (ky >= 0 && ky < kh)
                    s[g] = dpbusd(s[g], qv, _mm512_set1_epi32(c->wq[ky * nq + q]));
            }
        }
    }
    for (int g = 0; g < R; g++) {   /* m = 1: l outputs of row g; else m rows (fewer at the end) */
        const int64_t gg = g0 + g;
        const int64_t n = c->m == 1 ? (c->ow - x0 < c->l ? c->ow - x0 : c->l)
                                    : (c->oh - gg * c->m < c->m ? c->oh - gg * c->m : c->m) * c->ow;
        uint32_t *dst = acc + gg * c->m * c->ow + x0;
        if (n >= 16)
            _mm512_storeu_si512((void *)dst, s[g]);
        else
            _mm512_mask_storeu_epi32(dst, (__mmask16)((1u << n) - 1u), s[g]);
    }
}

static inline __attribute__((always_inline)) void
dwq_run(const ortnpu_dwq_t *c, const uint8_t *plane, uint32_t *acc, const int KH, const int NQ,
        const int STEP) {
    __m512i ix[4];
    for (int q = 0; q < c->nq; q++)
        ix[q] = _mm512_loadu_si512((const void *)(c->patterns + 64 * q));
    const int64_t groups = c->m == 1 ? c->oh : (c->oh + c->m - 1) / c->m;
    for (int64_t x0 = 0; x0 < (c->m == 1 ? c->ow : 1); x0 += c->l) {
        int64_t g = 0;
        for (; g + 4 <= groups; g += 4) dwq_groups(c, plane, acc, g, x0, ix, 4, KH, NQ, STEP);
        for (; g < groups; g++) dwq_groups(c, plane, acc, g, x0, ix, 1, KH, NQ, STEP);
    }
}

static void dw_quads_vbmi(const ortnpu_dwq_t *c, uint8_t *plane, uint32_t *acc) {
    if (c->x) {   /* the plane's interior, 64 bytes at a time (the padding is the caller's) */
        const __m512i flip = _mm512_set1_epi8((char)c->flip);
        for (int64_t r = 0; r < c->h; r++) {
            const uint8_t *s = c->x + r * c->w;
            uint8_t *d = plane + (r + c->pt) * c->wp + c->pl;
            for (int64_t i = 0; i < c->w; i += 64) {
                const int64_t left = c->w - i;
                const __mmask64 k = left >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << left) - 1);
                _mm512_mask_storeu_epi8(d + i, k, _mm512_xor_si512(
                    _mm512_maskz_loadu_epi8(k, s + i), flip));
            }
        }
    }
    const int64_t step = c->m * c->sh;
    if (c->kh == 3 && c->nq == 1 && step == 1)
        dwq_run(c, plane, acc, 3, 1, 1);
    else if (c->kh == 3 && c->nq == 1 && step == 2)
        dwq_run(c, plane, acc, 3, 1, 2);
    else if (c->kh == 5 && c->nq == 2 && step == 1)
        dwq_run(c, plane, acc, 5, 2, 1);
    else if (c->kh == 5 && c->nq == 2 && step == 2)
        dwq_run(c, plane, acc, 5, 2, 2);
    else
        dwq_run(c, plane, acc, 0, 0, 0);
}
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

/* the AVX-512 VNNI table, and the same with VBMI's depthwise path */
#define ORTNPU_VNNI_TABLE(DW_QUADS)                                                            \
    {bcast_tile_vnni, dot_tile_avx2, interleave_avx2, dw_row_avx2, finish32_double_avx512,     \
     bcast_tile_u8_vnni, dw_row3_avx2, dw_cl_pixels_avx2, quad_gather_avx2, dw3_row_avx2,      \
     finish32_double_grid_avx512, wide_tile_u8_vnni, finish32_double_lanes_avx512,             \
     binary8_double_avx512, bcast_tile8_avx2, DW_QUADS}
static const ortnpu_isa_t isa_table_vnni = ORTNPU_VNNI_TABLE(NULL);
static const ortnpu_isa_t isa_table_vbmi = ORTNPU_VNNI_TABLE(dw_quads_vbmi);
#undef ORTNPU_VNNI_TABLE
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

uint64_t ortnpu_mac_probe(uint64_t n) {
#if ORTNPU_HAVE_AVX2
    if (ortnpu_cpu_has_vnni()) return mac_probe_vnni(n);
    if (ortnpu_cpu_has_avx2()) return mac_probe_avx2(n);
#endif
    (void)n;
    return 0;
}

uint64_t ortnpu_clock_probe(uint64_t n) {
    uint64_t x = 0;
#if defined(__x86_64__) && defined(__GNUC__)
    /* eight adds per step, each waiting for the one before: 8 cycles a step at any width */
    for (uint64_t i = 0; i < n / 8; i++)
        __asm__ volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
                         "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0"
                         : "+r"(x));
#else
    (void)n;
#endif
    return x;
}

const ortnpu_isa_t *ortnpu_pick_isa(int isa) {
#if ORTNPU_HAVE_AVX2
    if (isa == 2 && ortnpu_cpu_has_vnni())
        return __builtin_cpu_supports("avx512vbmi") ? &isa_table_vbmi : &isa_table_vnni;
    if (isa >= 1 && ortnpu_cpu_has_avx2()) return &isa_table_avx2;
#endif
    (void)isa;
    return &isa_table_scalar;
}
