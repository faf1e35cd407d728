/* Inner loops compiled once per instruction set: included by kernels_isa.c twice, once for
 * portable C (ORTNPU_ISA_AVX2 == 0) and once inside an AVX2 target region (== 1). FN(name)
 * appends the ISA suffix. Everything here is integer arithmetic whose result is fixed by the C
 * language, so the AVX2 build (hand-written intrinsics or auto-vectorized loops) gives exactly
 * the bits of the portable build; the tests run both.
 *
 * The portable build uses SSE2 intrinsics for the GEMM tile on x86-64 (SSE2 is part of the
 * x86-64 baseline) unless ORTNPU_PLAIN_C is defined; elsewhere it is plain C.
 *
 * Layouts used by the GEMM tile (see kernels_linear.c for how the drivers pack them):
 *   U: "broadcast" operand, row r is U + r*ldu, an int16 pair (k=2j, 2j+1) at U + r*ldu + 2j.
 *   V: "vector" operand, pair j of column c at V + 2*(j*ldv + c).
 *   C[r*ldc + c] = sum over j in [j0, j1) of U[r][2j]*V[j][c][0] + U[r][2j+1]*V[j][c][1],
 *   16 columns, int32 with wrap-around (exact modulo 2^32; the drivers bound the K range when
 *   the exact sum is needed).
 */

/* The hot inner loops start on a 64-byte boundary, so that their loops sit at the same place in
 * the cache lines whatever code precedes them: moved 144 bytes by an unrelated change to the
 * epilogue, the GEMM tile ran ResNet-18-like's 3x3 convolutions 5-7 % slower on the benchmark's
 * AMD EPYC (2.03 -> 2.13 ms at 64 channels, 2.20 -> 2.34 ms at 256). */
#ifndef ORTNPU_HOT
#define ORTNPU_HOT __attribute__((aligned(64)))
#endif

/* --------------------------------------------------------------------------- GEMM tile */
#if ORTNPU_ISA_AVX2
static inline __attribute__((always_inline)) void
FN(bcast_tile_r)(const int16_t *U, int64_t ldu, const int R, const int16_t *V, int64_t ldv,
                 int64_t j0, int64_t j1, int32_t *C, int64_t ldc) {
    __m256i c0[4], c1[4];
    for (int r = 0; r < R; r++) {
        c0[r] = _mm256_setzero_si256();
        c1[r] = _mm256_setzero_si256();
    }
    for (int64_t j = j0; j < j1; j++) {
        const int16_t *vp = V + 2 * j * ldv;
        __m256i v0 = _mm256_loadu_si256((const __m256i *)vp);
        __m256i v1 = _mm256_loadu_si256((const __m256i *)(vp + 16));
        for (int r = 0; r < R; r++) {
            int32_t u;
            memcpy(&u, U + r * ldu + 2 * j, sizeof u);
            __m256i b = _mm256_set1_epi32(u);
            /* madd never saturates: its only overflow (both products (-32768)^2) wraps to
             * -2^31, still exact modulo 2^32 */
            c0[r] = _mm256_add_epi32(c0[r], _mm256_madd_epi16(b, v0));
            c1[r] = _mm256_add_epi32(c1[r], _mm256_madd_epi16(b, v1));
        }
    }
    for (int r = 0; r < R; r++) {
        _mm256_storeu_si256((__m256i *)(C + r * ldc), c0[r]);
        _mm256_storeu_si256((__m256i *)(C + r * ldc + 8), c1[r]);
    }
}
#elif ORTNPU_HAVE_SSE2
/* Baseline x86-64 (SSE2, always present): the same tile with _mm_madd_epi16, in two halves of
 * eight columns so that the accumulators fit the sixteen xmm registers. */
static inline __attribute__((always_inline)) void
FN(bcast_tile_r)(const int16_t *U, int64_t ldu, const int R, const int16_t *V, int64_t ldv,
                 int64_t j0, int64_t j1, int32_t *C, int64_t ldc) {
    for (int half = 0; half < 2; half++) {
        __m128i c0[4], c1[4];
        for (int r = 0; r < R; r++) {
            c0[r] = _mm_setzero_si128();
            c1[r] = _mm_setzero_si128();
        }
        for (int64_t j = j0; j < j1; j++) {
            const int16_t *vp = V + 2 * j * ldv + 16 * half;
            __m128i v0 = _mm_loadu_si128((const __m128i *)vp);
            __m128i v1 = _mm_loadu_si128((const __m128i *)(vp + 8));
            for (int r = 0; r < R; r++) {
                int32_t u;
                memcpy(&u, U + r * ldu + 2 * j, sizeof u);
                __m128i b = _mm_set1_epi32(u);
                c0[r] = _mm_add_epi32(c0[r], _mm_madd_epi16(b, v0));
                c1[r] = _mm_add_epi32(c1[r], _mm_madd_epi16(b, v1));
            }
        }
        for (int r = 0; r < R; r++) {
            _mm_storeu_si128((__m128i *)(C + r * ldc + 8 * half), c0[r]);
            _mm_storeu_si128((__m128i *)(C + r * ldc + 8 * half + 4), c1[r]);
        }
    }
}
#else
static inline void FN(bcast_tile_r)(const int16_t *U, int64_t ldu, const int R,
                                    const int16_t *V, int64_t ldv, int64_t j0, int64_t j1,
                                    int32_t *C, int64_t ldc) {
    uint32_t acc[4][16];
    memset(acc, 0, sizeof acc);
    for (int64_t j = j0; j < j1; j++) {
        const int16_t *vp = V + 2 * j * ldv;
        for (int r = 0; r < R; r++) {
            const int32_t u0 = U[r * ldu + 2 * j], u1 = U[r * ldu + 2 * j + 1];
            for (int c = 0; c < 16; c++) {
                /* each product fits int32 (|.| <= 2^30); their sum may not: add unsigned */
                acc[r][c] += (uint32_t)(u0 * vp[2 * c]) + (uint32_t)(u1 * vp[2 * c + 1]);
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < 16; c++) C[r * ldc + c] = s32(acc[r][c]);
}
#endif

/* ncol groups of 16 columns in one call: a tile over few taps (a 1x1 convolution of 16 or 32
 * channels) does little work per group, and a call per group cost a large share of it. */
ORTNPU_HOT static void FN(bcast_tile)(const int16_t *U, int64_t ldu, int R,
                                      const int16_t *V, int64_t ldv,
                                      int64_t j0, int64_t j1, int32_t *C,
                                      int64_t ldc, int64_t ncol) {
    for (int64_t g = 0; g < ncol; g++) {
        const int16_t *Vg = V + 32 * g;
        int32_t *Cg = C + 16 * g;
        switch (R) {
        case 1: FN(bcast_tile_r)(U, ldu, 1, Vg, ldv, j0, j1, Cg, ldc); break;
        case 2: FN(bcast_tile_r)(U, ldu, 2, Vg, ldv, j0, j1, Cg, ldc); break;
        case 3: FN(bcast_tile_r)(U, ldu, 3, Vg, ldv, j0, j1, Cg, ldc); break;
        default: FN(bcast_tile_r)(U, ldu, 4, Vg, ldv, j0, j1, Cg, ldc); break;
        }
    }
}

#if ORTNPU_ISA_AVX2
/* The tile on 8 columns (AVX2 only): the last slice of a grid whose length leaves at most 8
 * columns after its 16-column groups (7x7 maps: 49 = 3 x 16 + 1) computed 16 columns for the
 * few it keeps. Two accumulators per row (even and odd pairs) keep two madd chains going;
 * their sum is the same modulo 2^32. */
static inline __attribute__((always_inline)) void
FN(bcast_tile8_r)(const int16_t *U, int64_t ldu, const int R, const int16_t *V, int64_t ldv,
                  int64_t j0, int64_t j1, int32_t *C, int64_t ldc) {
    __m256i c0[4], c1[4];
    for (int r = 0; r < R; r++) c0[r] = c1[r] = _mm256_setzero_si256();
    int64_t j = j0;
    for (; j + 2 <= j1; j += 2) {
        const __m256i v0 = _mm256_loadu_si256((const __m256i *)(V + 2 * j * ldv));
        const __m256i v1 = _mm256_loadu_si256((const __m256i *)(V + 2 * (j + 1) * ldv));
        for (int r = 0; r < R; r++) {
            int32_t u0, u1;
            memcpy(&u0, U + r * ldu + 2 * j, sizeof u0);
            memcpy(&u1, U + r * ldu + 2 * j + 2, sizeof u1);
            c0[r] = _mm256_add_epi32(c0[r], _mm256_madd_epi16(_mm256_set1_epi32(u0), v0));
            c1[r] = _mm256_add_epi32(c1[r], _mm256_madd_epi16(_mm256_set1_epi32(u1), v1));
        }
    }
    if (j < j1) {
        const __m256i v0 = _mm256_loadu_si256((const __m256i *)(V + 2 * j * ldv));
        for (int r = 0; r < R; r++) {
            int32_t u0;
            memcpy(&u0, U + r * ldu + 2 * j, sizeof u0);
            c0[r] = _mm256_add_epi32(c0[r], _mm256_madd_epi16(_mm256_set1_epi32(u0), v0));
        }
    }
    for (int r = 0; r < R; r++)
        _mm256_storeu_si256((__m256i *)(C + r * ldc), _mm256_add_epi32(c0[r], c1[r]));
}

ORTNPU_HOT static void FN(bcast_tile8)(const int16_t *U, int64_t ldu, int R, const int16_t *V,
                                       int64_t ldv, int64_t j0, int64_t j1, int32_t *C,
                                       int64_t ldc) {
    switch (R) {
    case 1: FN(bcast_tile8_r)(U, ldu, 1, V, ldv, j0, j1, C, ldc); break;
    case 2: FN(bcast_tile8_r)(U, ldu, 2, V, ldv, j0, j1, C, ldc); break;
    case 3: FN(bcast_tile8_r)(U, ldu, 3, V, ldv, j0, j1, C, ldc); break;
    default: FN(bcast_tile8_r)(U, ldu, 4, V, ldv, j0, j1, C, ldc); break;
    }
}
#define ORTNPU_TILE8 FN(bcast_tile8)
#else
#define ORTNPU_TILE8 NULL
#endif

/* ------------------------------------------------------------------------- dot tile (FC)
 * C[r*4 + q] = sum over k in [k0, k1) of X[r*ldx + k] * W[q*ldw + k] (int32, wrapping),
 * R <= 2 rows of X (int16), NW <= 4 rows of W (int8). */
#if ORTNPU_ISA_AVX2
static inline __attribute__((always_inline)) void
FN(dot_tile_r)(const int16_t *X, int64_t ldx, const int R, const int8_t *W, int64_t ldw,
               const int NW, int64_t k0, int64_t k1, int32_t *C) {
    __m256i acc[2][4];
    for (int r = 0; r < R; r++)
        for (int q = 0; q < NW; q++) acc[r][q] = _mm256_setzero_si256();
    int64_t k = k0;
    for (; k + 16 <= k1; k += 16) {
        __m256i xv[2];
        for (int r = 0; r < R; r++) xv[r] = _mm256_loadu_si256((const __m256i *)(X + r * ldx + k));
        for (int q = 0; q < NW; q++) {
            __m256i wv = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(W + q * ldw + k)));
            for (int r = 0; r < R; r++)
                acc[r][q] = _mm256_add_epi32(acc[r][q], _mm256_madd_epi16(xv[r], wv));
        }
    }
    for (int r = 0; r < R; r++) {
        for (int q = 0; q < NW; q++) {
            __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc[r][q]),
                                      _mm256_extracti128_si256(acc[r][q], 1));
            s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
            s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
            uint32_t t = (uint32_t)_mm_cvtsi128_si32(s);
            for (int64_t kk = k; kk < k1; kk++)
                t += (uint32_t)((int32_t)X[r * ldx + kk] * W[q * ldw + kk]);
            C[r * 4 + q] = s32(t);
        }
    }
}
#else
static inline void FN(dot_tile_r)(const int16_t *X, int64_t ldx, const int R, const int8_t *W,
                                  int64_t ldw, const int NW, int64_t k0, int64_t k1,
                                  int32_t *C) {
    for (int r = 0; r < R; r++) {
        for (int q = 0; q < NW; q++) {
            const int16_t *xr = X + r * ldx;
            const int8_t *wr = W + q * ldw;
            uint32_t t = 0;
            for (int64_t k = k0; k < k1; k++) t += (uint32_t)((int32_t)xr[k] * wr[k]);
            C[r * 4 + q] = s32(t);
        }
    }
}
#endif

ORTNPU_HOT static void FN(dot_tile)(const int16_t *X, int64_t ldx, int R, const int8_t *W,
                                    int64_t ldw, int NW, int64_t k0, int64_t k1, int32_t *C) {
    if (R == 2 && NW == 4)
        FN(dot_tile_r)(X, ldx, 2, W, ldw, 4, k0, k1, C);
    else if (R == 1 && NW == 4)
        FN(dot_tile_r)(X, ldx, 1, W, ldw, 4, k0, k1, C);
    else
        for (int q = 0; q < NW; q++) {
            int32_t t[8] = {0};
            if (R == 2)
                FN(dot_tile_r)(X, ldx, 2, W + q * ldw, ldw, 1, k0, k1, t);
            else
                FN(dot_tile_r)(X, ldx, 1, W + q * ldw, ldw, 1, k0, k1, t);
            for (int r = 0; r < R; r++) C[r * 4 + q] = t[r * 4];
        }
}

/* ------------------------------------------------------------------ helpers, auto-vectorized */
/* dst[2i] = a[i], dst[2i+1] = b[i]: two K rows into the pair layout of V. */
ORTNPU_HOT static void FN(interleave)(const int16_t *restrict a, const int16_t *restrict b,
                                      int16_t *restrict dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        dst[2 * i] = a[i];
        dst[2 * i + 1] = b[i];
    }
}

/* dst[4i + q] = src_q[i]: four byte rows into the u8 quad layout (the rows are already
 * offset to uint8). SSE2 unpacks on x86-64, plain C elsewhere and for the tail. */
static void FN(quad_gather)(const uint8_t *restrict a, const uint8_t *restrict b,
                            const uint8_t *restrict c, const uint8_t *restrict d,
                            uint8_t *restrict dst, int64_t n) {
    int64_t i = 0;
#if ORTNPU_HAVE_SSE2
    for (; i + 16 <= n; i += 16) {
        __m128i va = _mm_loadu_si128((const __m128i *)(a + i));
        __m128i vb = _mm_loadu_si128((const __m128i *)(b + i));
        __m128i vc = _mm_loadu_si128((const __m128i *)(c + i));
        __m128i vd = _mm_loadu_si128((const __m128i *)(d + i));
        __m128i ab0 = _mm_unpacklo_epi8(va, vb), ab1 = _mm_unpackhi_epi8(va, vb);
        __m128i cd0 = _mm_unpacklo_epi8(vc, vd), cd1 = _mm_unpackhi_epi8(vc, vd);
        _mm_storeu_si128((__m128i *)(dst + 4 * i), _mm_unpacklo_epi16(ab0, cd0));
        _mm_storeu_si128((__m128i *)(dst + 4 * i + 16), _mm_unpackhi_epi16(ab0, cd0));
        _mm_storeu_si128((__m128i *)(dst + 4 * i + 32), _mm_unpacklo_epi16(ab1, cd1));
        _mm_storeu_si128((__m128i *)(dst + 4 * i + 48), _mm_unpackhi_epi16(ab1, cd1));
    }
#endif
    for (; i < n; i++) {
        dst[4 * i] = a[i];
        dst[4 * i + 1] = b[i];
        dst[4 * i + 2] = c[i];
        dst[4 * i + 3] = d[i];
    }
}

/* Depthwise: acc[ox] += wv * src[ox*sw] over one output row (wrapping uint32). */
static void FN(dw_row)(uint32_t *restrict acc, const int16_t *restrict src, int64_t sw,
                       int64_t ow, int32_t wv) {
    if (sw == 1) {
        for (int64_t i = 0; i < ow; i++) acc[i] += (uint32_t)(wv * (int32_t)src[i]);
    } else if (sw == 2) {
        for (int64_t i = 0; i < ow; i++) acc[i] += (uint32_t)(wv * (int32_t)src[2 * i]);
    } else {
        for (int64_t i = 0; i < ow; i++) acc[i] += (uint32_t)(wv * (int32_t)src[i * sw]);
    }
}

/* The same for three taps of one kernel row at once (kw == 3): a third of the accumulator
 * traffic. */
static void FN(dw_row3)(uint32_t *restrict acc, const int16_t *restrict src, int64_t sw,
                        int64_t ow, int64_t dw, const int8_t *wk) {
    const int32_t w0 = wk[0], w1 = wk[1], w2 = wk[2];
    const int16_t *s1 = src + dw, *s2 = src + 2 * dw;
    if (sw == 1) {
        for (int64_t i = 0; i < ow; i++)
            acc[i] += (uint32_t)(w0 * (int32_t)src[i]) + (uint32_t)(w1 * (int32_t)s1[i]) +
                      (uint32_t)(w2 * (int32_t)s2[i]);
    } else {
        /* Strided taps: gather each tap into a contiguous block first, so the multiply-adds
         * run on contiguous data the compiler vectorizes (the gathered loop did not). */
        int32_t g0[128], g1[128], g2[128];
        for (int64_t i0 = 0; i0 < ow; i0 += 128) {
            const int64_t n = ow - i0 < 128 ? ow - i0 : 128;
            for (int64_t i = 0; i < n; i++) {
                g0[i] = src[(i0 + i) * sw];
                g1[i] = s1[(i0 + i) * sw];
                g2[i] = s2[(i0 + i) * sw];
            }
            uint32_t *a = acc + i0;
            for (int64_t i = 0; i < n; i++)
                a[i] += (uint32_t)(w0 * g0[i]) + (uint32_t)(w1 * g1[i]) + (uint32_t)(w2 * g2[i]);
        }
    }
}

/* Depthwise 3x3, dilation 1, stride 1 or 2, one output row: acc[i] = sum over the nine taps
 * (stored, not added), with int16 pair multiply-adds (madd: a0*b0 + a1*b1, exact in int32 for
 * int16 values times int8 weights) straight from the input rows, no repacking: the pair
 * (x[s*i], x[s*i+1]) meets weights (w0, w1) and the pair (x[s*i+2], x[s*i+3]) meets (w2, 0).
 * Stride 2 reads those pairs as they lie in memory, 8 outputs per load; stride 1 reads them
 * for the even and the odd outputs separately and interleaves the two results. Reads up to
 * 2 * ow + 24 values past each row start (the caller's plane has the slack) and stores whole
 * vectors (up to 15 values past ow: the caller's accumulator has the slack). NULL in the
 * portable build. */
#if ORTNPU_ISA_AVX2
ORTNPU_HOT static void FN(dw3_row)(uint32_t *restrict acc, const int16_t *r0, const int16_t *r1,
                                   const int16_t *r2, int64_t sw, int64_t ow, const int8_t *wk,
                                   int16_t *unused) {
    (void)unused;
    const int16_t *rows[3] = {r0, r1, r2};
    __m256i w01[3], w2z[3];
    for (int ky = 0; ky < 3; ky++) {
        w01[ky] = _mm256_set1_epi32((int32_t)(((uint32_t)(uint16_t)(int16_t)wk[3 * ky + 1] << 16) |
                                              (uint16_t)(int16_t)wk[3 * ky]));
        w2z[ky] = _mm256_set1_epi32((int32_t)(uint16_t)(int16_t)wk[3 * ky + 2]);
    }
    if (sw == 2) {
        for (int64_t i = 0; i < ow; i += 8) {
            __m256i s = _mm256_setzero_si256();
            for (int ky = 0; ky < 3; ky++) {
                const int16_t *r = rows[ky] + 2 * i;
                s = _mm256_add_epi32(s, _mm256_madd_epi16(
                    _mm256_loadu_si256((const __m256i *)r), w01[ky]));
                s = _mm256_add_epi32(s, _mm256_madd_epi16(
                    _mm256_loadu_si256((const __m256i *)(r + 2)), w2z[ky]));
            }
            _mm256_storeu_si256((__m256i *)(acc + i), s);
        }
        return;
    }
    for (int64_t i = 0; i < ow; i += 16) {
        __m256i ev = _mm256_setzero_si256(), od = _mm256_setzero_si256();
        for (int ky = 0; ky < 3; ky++) {
            const int16_t *r = rows[ky] + i;
            ev = _mm256_add_epi32(ev, _mm256_madd_epi16(
                _mm256_loadu_si256((const __m256i *)r), w01[ky]));
            ev = _mm256_add_epi32(ev, _mm256_madd_epi16(
                _mm256_loadu_si256((const __m256i *)(r + 2)), w2z[ky]));
            od = _mm256_add_epi32(od, _mm256_madd_epi16(
                _mm256_loadu_si256((const __m256i *)(r + 1)), w01[ky]));
            od = _mm256_add_epi32(od, _mm256_madd_epi16(
                _mm256_loadu_si256((const __m256i *)(r + 3)), w2z[ky]));
        }
        /* ev = outputs i, i+2, .., i+14; od = i+1, .., i+15: interleave back in order */
        __m256i lo = _mm256_unpacklo_epi32(ev, od), hi = _mm256_unpackhi_epi32(ev, od);
        _mm256_storeu_si256((__m256i *)(acc + i), _mm256_permute2x128_si256(lo, hi, 0x20));
        _mm256_storeu_si256((__m256i *)(acc + i + 8), _mm256_permute2x128_si256(lo, hi, 0x31));
    }
}
#else
#define dw3_row_scalar NULL
#endif

/* Channels-last depthwise, npx (1 or 2) output pixels of a row, step elements apart in x:
 * acc[p * C + c] = sum over the taps of x[p * step + off[t] + c] * w[t * C + c]. The values are
 * 8-bit activations (raw, zero point in the padding) and int8 weights, each product at most
 * 255 * 128 in magnitude. The AVX2 build multiplies with vpmaddwd against the weights with the
 * odd channels masked out (even lanes) and the even ones (odd lanes): each int32 lane is then
 * one exact product, with no shuffles in the tap loop (faster than vpmullw and two widenings
 * per tap, which kept the shuffle ports busy), and two pixels share each weight load. */
ORTNPU_HOT static void FN(dw_cl_pixels)(uint32_t *restrict acc, const int16_t *restrict x,
                                        int64_t step, int npx, const int64_t *restrict off,
                                        const int16_t *restrict w, int64_t taps, int64_t C) {
    int64_t c0 = 0;
#if ORTNPU_ISA_AVX2
    const __m256i even = _mm256_set1_epi32(0xFFFF);
    const int64_t s1 = npx > 1 ? step : 0; /* one pixel: the second lane pair repeats it */
    for (; c0 + 16 <= C; c0 += 16) {
        __m256i e0 = _mm256_setzero_si256(), o0 = e0, e1 = e0, o1 = e0;
        for (int64_t t = 0; t < taps; t++) {
            const __m256i wv = _mm256_loadu_si256((const __m256i *)(w + t * C + c0));
            const __m256i we = _mm256_and_si256(wv, even), wo = _mm256_andnot_si256(even, wv);
            const __m256i x0 = _mm256_loadu_si256((const __m256i *)(x + off[t] + c0));
            const __m256i x1 = _mm256_loadu_si256((const __m256i *)(x + s1 + off[t] + c0));
            e0 = _mm256_add_epi32(e0, _mm256_madd_epi16(x0, we));
            o0 = _mm256_add_epi32(o0, _mm256_madd_epi16(x0, wo));
            e1 = _mm256_add_epi32(e1, _mm256_madd_epi16(x1, we));
            o1 = _mm256_add_epi32(o1, _mm256_madd_epi16(x1, wo));
        }
        /* e = channels 0, 2, .., 14; o = 1, 3, .., 15: interleave back in order */
        __m256i lo = _mm256_unpacklo_epi32(e0, o0), hi = _mm256_unpackhi_epi32(e0, o0);
        _mm256_storeu_si256((__m256i *)(acc + c0), _mm256_permute2x128_si256(lo, hi, 0x20));
        _mm256_storeu_si256((__m256i *)(acc + c0 + 8), _mm256_permute2x128_si256(lo, hi, 0x31));
        if (npx < 2) continue;
        lo = _mm256_unpacklo_epi32(e1, o1);
        hi = _mm256_unpackhi_epi32(e1, o1);
        _mm256_storeu_si256((__m256i *)(acc + C + c0), _mm256_permute2x128_si256(lo, hi, 0x20));
        _mm256_storeu_si256((__m256i *)(acc + C + c0 + 8),
                            _mm256_permute2x128_si256(lo, hi, 0x31));
    }
#endif
    for (int px = 0; px < npx; px++)
        for (int64_t c = c0; c < C; c++) {
            uint32_t a = 0;
            for (int64_t t = 0; t < taps; t++)
                a += (uint32_t)((int32_t)x[px * step + off[t] + c] * (int32_t)w[t * C + c]);
            acc[px * C + c] = a;
        }
}

/* ------------------------------------------------------------------------------ epilogue
 * Fused output of an int32 accumulator row with per-row constant parameters and the
 * tflite_double rule: y = clamp(rs_double(wrap32(acc + corr), qm, shift) + zp, lo, hi). */
#define ORTNPU_FINISH_SCALAR_LOOP(T)                                                         \
    do {                                                                                     \
        T *out = (T *)outp;                                                                  \
        for (; i < n; i++) {                                                                 \
            int64_t v = rs_double(s32((uint32_t)acc[i] + corr), qm, shift) + zp;             \
            out[i] = (T)(v < lo ? lo : (v > hi ? hi : v));                                   \
        }                                                                                    \
    } while (0)

#if ORTNPU_ISA_AVX2
/* rs_double of 8 int32 lanes with one multiplier and shift, the steps shared by the AVX2
 * epilogues: x << left (wrapping); SaturatingRoundingDoublingHighMul as ab + 2^30 in 64 bits
 * for even and odd lanes, bits 31..62 of each the result; RoundingDivideByPOT. */
typedef struct {
    __m256i vq, half, vmask, vthr, zero;
    __m128i lcount, rcount;
    int left, right;
} FN(rs8_t);

static inline __attribute__((always_inline)) FN(rs8_t) FN(rs8_setup)(int64_t qm, int shift) {
    FN(rs8_t) f;
    f.right = shift > 0 ? 0 : -shift;
    f.left = shift > 0 ? shift : 0;
    f.lcount = _mm_cvtsi32_si128(f.left);
    f.rcount = _mm_cvtsi32_si128(f.right);
    f.vq = _mm256_set1_epi32((int32_t)qm);
    f.half = _mm256_set1_epi64x(INT64_C(1) << 30);
    const int32_t mask_s = (int32_t)((1u << f.right) - 1u);
    f.vmask = _mm256_set1_epi32(mask_s);
    f.vthr = _mm256_set1_epi32(mask_s >> 1);
    f.zero = _mm256_setzero_si256();
    return f;
}

/* SaturatingRoundingDoublingHighMul of 8 int32 lanes: a * q + 2^30 in 64 bits for the even
 * lanes (multipliers in q_ev's even lanes) and the odd ones (in q_od's even lanes), bits 31..62
 * of each */
static inline __attribute__((always_inline)) __m256i FN(hmul8)(__m256i a, __m256i q_ev,
                                                               __m256i q_od, __m256i half) {
    const __m256i ev = _mm256_add_epi64(_mm256_mul_epi32(a, q_ev), half);
    const __m256i od = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(a, 32), q_od), half);
    return _mm256_blend_epi32(_mm256_srli_epi64(ev, 31), _mm256_slli_epi64(od, 1), 0xAA);
}

/* rs_double of 8 int32 lanes with the setup's multiplier and shift (no clamp) */
static inline __attribute__((always_inline)) __m256i FN(rs8)(const FN(rs8_t) *f, __m256i a) {
    if (f->left > 0) a = _mm256_sll_epi32(a, f->lcount);
    __m256i h = FN(hmul8)(a, f->vq, f->vq, f->half);
    if (f->right > 0) {
        const __m256i rem = _mm256_and_si256(h, f->vmask);
        const __m256i thr = _mm256_sub_epi32(f->vthr, _mm256_cmpgt_epi32(f->zero, h));
        h = _mm256_sub_epi32(_mm256_sra_epi32(h, f->rcount), _mm256_cmpgt_epi32(rem, thr));
    }
    return h;
}

/* clamp to [lo, hi] given as [lo - zp, hi - zp] (the shifted bounds fit int32 while r + zp
 * might not), + zp, and the narrowing store of the 8 lanes at dst */
static inline __attribute__((always_inline)) void FN(store8)(__m256i h, __m256i vlo,
                                                             __m256i vhi, __m256i vzp,
                                                             void *dst, int otype) {
    h = _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(h, vlo), vhi), vzp);
    const __m128i p16 = _mm_packs_epi32(_mm256_castsi256_si128(h),
                                        _mm256_extracti128_si256(h, 1));
    if (otype == ORTNPU_T_I16)
        _mm_storeu_si128((__m128i *)dst, p16);
    else if (otype == ORTNPU_T_I8)
        _mm_storel_epi64((__m128i *)dst, _mm_packs_epi16(p16, p16));
    else
        _mm_storel_epi64((__m128i *)dst, _mm_packus_epi16(p16, p16));
}
#endif

ORTNPU_HOT static void FN(finish32_double)(const int32_t *acc, int64_t n, uint32_t corr,
                                           int64_t qm, int shift, int64_t zp, int64_t lo,
                                           int64_t hi, void *outp, int otype) {
    int64_t i = 0;
#if ORTNPU_ISA_AVX2
    const FN(rs8_t) f = FN(rs8_setup)(qm, shift);
    const __m256i vcorr = _mm256_set1_epi32(s32(corr));
    const __m256i vlo = _mm256_set1_epi32((int32_t)(lo - zp));
    const __m256i vhi = _mm256_set1_epi32((int32_t)(hi - zp));
    const __m256i vzp = _mm256_set1_epi32((int32_t)zp);
    const int es = otype == ORTNPU_T_I16 ? 2 : 1;
    if (otype != ORTNPU_T_I16 && zp >= -256 && zp <= 256) {
        /* 8-bit outputs, 32 at a time: int16 packs (saturating), + zp (saturating), 8-bit packs
         * (saturating), then the clamp on bytes. Saturation never changes a result: a value
         * beyond int16 stays beyond the 8-bit range after a zero point of at most 256. */
        const __m256i zp16 = _mm256_set1_epi16((int16_t)zp);
        const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        const __m256i lo8 = _mm256_set1_epi8((char)lo), hi8 = _mm256_set1_epi8((char)hi);
        uint8_t *out = (uint8_t *)outp;
        for (; i + 32 <= n; i += 32) {
            __m256i h[4];
            for (int k = 0; k < 4; k++)
                h[k] = FN(rs8)(&f, _mm256_add_epi32(
                    _mm256_loadu_si256((const __m256i *)(acc + i + 8 * k)), vcorr));
            const __m256i a16 = _mm256_adds_epi16(_mm256_packs_epi32(h[0], h[1]), zp16);
            const __m256i b16 = _mm256_adds_epi16(_mm256_packs_epi32(h[2], h[3]), zp16);
            __m256i b8;
            if (otype == ORTNPU_T_I8)
                b8 = _mm256_max_epi8(_mm256_min_epi8(_mm256_packs_epi16(a16, b16), hi8), lo8);
            else
                b8 = _mm256_max_epu8(_mm256_min_epu8(_mm256_packus_epi16(a16, b16), hi8), lo8);
            /* the packs work within 128-bit lanes: 4-byte groups 0, 4, 1, 5, ... in order */
            _mm256_storeu_si256((__m256i *)(out + i), _mm256_permutevar8x32_epi32(b8, perm));
        }
    }
    /* a tail of 1-7 values as the last 8 lanes, overlapping the ones done: they are written
     * again with the same bits (the depthwise epilogue's rows of 196 and 49 outputs ended in 4
     * and 1 scalar steps per channel) */
    for (int64_t last = 0; !last && i < n && n >= 8; i += 8) {
        if (i + 8 > n) {
            i = n - 8;
            last = 1;
        }
        const __m256i a =
            _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)(acc + i)), vcorr);
        FN(store8)(FN(rs8)(&f, a), vlo, vhi, vzp, (char *)outp + i * es, otype);
    }
#endif
    if (otype == ORTNPU_T_I8)
        ORTNPU_FINISH_SCALAR_LOOP(int8_t);
    else if (otype == ORTNPU_T_U8)
        ORTNPU_FINISH_SCALAR_LOOP(uint8_t);
    else
        ORTNPU_FINISH_SCALAR_LOOP(int16_t);
}
#undef ORTNPU_FINISH_SCALAR_LOOP

/* finish32_double with parameters per lane (the output channels of FullyConnected's rows
 * GEMM, kernels_linear.c): y = clamp(rs_double(wrap32(acc + corr[i] + rowadd), qm[i],
 * shift[i]) + zp, lo, hi); the AVX2 build does eight lanes at a time with variable shift
 * counts (sllv/srav), the steps of finish32_double above. */
ORTNPU_HOT static void FN(finish32_double_lanes)(const int32_t *acc, int64_t n,
                                                 const int32_t *corr, int32_t rowadd,
                                                 const int32_t *qm, const int32_t *shift,
                                                 int64_t zp, int64_t lo, int64_t hi, void *outp,
                                                 int otype) {
    int64_t i = 0;
#if ORTNPU_ISA_AVX2
    const __m256i vrow = _mm256_set1_epi32(rowadd), zero = _mm256_setzero_si256();
    const __m256i one = _mm256_set1_epi32(1), half = _mm256_set1_epi64x(INT64_C(1) << 30);
    const __m256i vlo = _mm256_set1_epi32((int32_t)(lo - zp));
    const __m256i vhi = _mm256_set1_epi32((int32_t)(hi - zp));
    const __m256i vzp = _mm256_set1_epi32((int32_t)zp);
    const int es = otype == ORTNPU_T_I16 ? 2 : 1;
    /* a tail of 1-7 lanes as the last 8, overlapping (same bits again), as in finish32_double */
    for (int64_t last = 0; !last && i < n && n >= 8; i += 8) {
        if (i + 8 > n) {
            i = n - 8;
            last = 1;
        }
        const __m256i a = _mm256_add_epi32(
            _mm256_loadu_si256((const __m256i *)(acc + i)),
            _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)(corr + i)), vrow));
        const __m256i s = _mm256_loadu_si256((const __m256i *)(shift + i));
        const __m256i vq = _mm256_loadu_si256((const __m256i *)(qm + i));
        const __m256i left = _mm256_max_epi32(s, zero);
        const __m256i right = _mm256_max_epi32(_mm256_sub_epi32(zero, s), zero);
        /* x << left (wrapping), then the high multiply with each lane's multiplier */
        __m256i h = FN(hmul8)(_mm256_sllv_epi32(a, left), vq, _mm256_srli_epi64(vq, 32), half);
        /* RoundingDivideByPOT: threshold mask/2, plus one for a negative value */
        const __m256i mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, right), one);
        const __m256i rem = _mm256_and_si256(h, mask);
        const __m256i thr = _mm256_sub_epi32(_mm256_srli_epi32(mask, 1),
                                             _mm256_cmpgt_epi32(zero, h));
        h = _mm256_sub_epi32(_mm256_srav_epi32(h, right), _mm256_cmpgt_epi32(rem, thr));
        FN(store8)(h, vlo, vhi, vzp, (char *)outp + i * es, otype);
    }
#endif
    for (; i < n; i++) {
        int64_t v = rs_double(s32((uint32_t)acc[i] + (uint32_t)corr[i] + (uint32_t)rowadd),
                              qm[i], shift[i]) + zp;
        v = v < lo ? lo : (v > hi ? hi : v);
        if (otype == ORTNPU_T_I16)
            ((int16_t *)outp)[i] = (int16_t)v;
        else if (otype == ORTNPU_T_I8)
            ((int8_t *)outp)[i] = (int8_t)v;
        else
            ((uint8_t *)outp)[i] = (uint8_t)v;
    }
}

#if ORTNPU_ISA_AVX2
/* ------------------------------------------------------------- 8-bit Add/Mul in lanes
 * binary8_double (the program's 8-bit Add or Mul under tflite_double, see kernels_common.h)
 * in 8 AVX2 lanes: the AVX-512 kernel's steps (kernels_isa.c), with rs8 and store8 above.
 * A tail of fewer than 8 elements goes through the same lanes from a zero-padded copy: one
 * code path for every element. */

/* 8 values of an 8-bit operand widened to int32: 8 bytes from p, or p[0] broadcast (step 0) */
static inline __attribute__((always_inline)) __m256i FN(load8x8)(const uint8_t *p, int64_t step,
                                                                 int is_signed) {
    if (step == 0) return _mm256_set1_epi32(is_signed ? (int8_t)p[0] : p[0]);
    const __m128i v = _mm_loadl_epi64((const __m128i *)p);
    return is_signed ? _mm256_cvtepi8_epi32(v) : _mm256_cvtepu8_epi32(v);
}

static void FN(binary8_double)(int op, const uint8_t *a, int64_t sa, int a_signed,
                               const uint8_t *b, int64_t sb, int b_signed, int64_t n,
                               const int64_t *prm, int64_t zp, int64_t lo, int64_t hi,
                               void *outp, int otype) {
    const FN(rs8_t) fy = op == 0 ? FN(rs8_setup)(prm[7], (int)prm[8])
                                 : FN(rs8_setup)(prm[2], (int)prm[3]);
    const FN(rs8_t) fa = FN(rs8_setup)(op == 0 ? prm[3] : 0, op == 0 ? (int)prm[4] : 0);
    const FN(rs8_t) fb = FN(rs8_setup)(op == 0 ? prm[5] : 0, op == 0 ? (int)prm[6] : 0);
    const __m256i azp = _mm256_set1_epi32((int32_t)prm[0]);
    const __m256i bzp = _mm256_set1_epi32((int32_t)prm[1]);
    const __m128i ls = _mm_cvtsi32_si128(op == 0 ? (int)prm[2] : 0);
    const __m256i vlo = _mm256_set1_epi32((int32_t)(lo - zp));
    const __m256i vhi = _mm256_set1_epi32((int32_t)(hi - zp));
    const __m256i vzp = _mm256_set1_epi32((int32_t)zp);
    const int es = otype == ORTNPU_T_I16 ? 2 : 1;
    for (int64_t i = 0; i < n; i += 8) {
        const int64_t m = n - i < 8 ? n - i : 8;
        const uint8_t *pa = a + i * sa, *pb = b + i * sb;
        uint8_t ta[8] = {0}, tb[8] = {0};
        if (m < 8) { /* the tail, zero-padded (sa, sb are 0 or 1) */
            memcpy(ta, pa, (size_t)(sa ? m : 1));
            memcpy(tb, pb, (size_t)(sb ? m : 1));
            pa = ta;
            pb = tb;
        }
        __m256i va = _mm256_sub_epi32(FN(load8x8)(pa, sa, a_signed), azp);
        __m256i vb = _mm256_sub_epi32(FN(load8x8)(pb, sb, b_signed), bzp);
        __m256i v;
        if (op == 0)
            v = _mm256_add_epi32(FN(rs8)(&fa, _mm256_sll_epi32(va, ls)),
                                 FN(rs8)(&fb, _mm256_sll_epi32(vb, ls)));
        else
            v = _mm256_mullo_epi32(va, vb);
        char *dst = (char *)outp + i * es;
        if (m == 8) {
            FN(store8)(FN(rs8)(&fy, v), vlo, vhi, vzp, dst, otype);
        } else {
            uint8_t tmp[16];
            FN(store8)(FN(rs8)(&fy, v), vlo, vhi, vzp, tmp, otype);
            memcpy(dst, tmp, (size_t)(m * es));
        }
    }
}
#define ORTNPU_BINARY8 FN(binary8_double)
#else
#define ORTNPU_BINARY8 NULL
#endif

static const ortnpu_isa_t FN(isa_table) = {
    FN(bcast_tile), FN(dot_tile), FN(interleave), FN(dw_row), FN(finish32_double),
    NULL, FN(dw_row3), FN(dw_cl_pixels), FN(quad_gather), FN(dw3_row), NULL, NULL,
    FN(finish32_double_lanes), ORTNPU_BINARY8, ORTNPU_TILE8, NULL,
};
#undef ORTNPU_BINARY8
#undef ORTNPU_TILE8
