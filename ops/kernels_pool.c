/* MaxPool, AveragePool and GlobalAveragePool kernels (ortnpu/domain/ops_pool.py). */
#include "kernels_common.h"

/* ============================================================================ Pooling */

/* The windows of 3 values at stride 2 along one row of 8-bit values (t, at least 2 * ow + 1
 * of them): SSE2 on the uint8 view (int8 XOR 0x80 keeps the order), 8 outputs per 18 values.
 * Returns the outputs written (the rest are left to the caller's loop). */
static int64_t window3s2_u8view(const uint8_t *t, int64_t ow, uint8_t f, uint8_t lo, uint8_t hi,
                                uint8_t *out) {
    int64_t ox = 0;
#if ORTNPU_HAVE_SSE2
    const __m128i vf = _mm_set1_epi8((char)f), lo8 = _mm_set1_epi16(0x00FF);
    const __m128i vlo = _mm_set1_epi8((char)lo), vhi = _mm_set1_epi8((char)hi);
    /* reads t[2 * ox .. 2 * ox + 17]: needs 2 * ox + 18 <= 2 * ow + 1 */
    for (; 2 * ox + 18 <= 2 * ow + 1; ox += 8) {
        const __m128i a = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(t + 2 * ox)), vf);
        const __m128i b = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(t + 2 * ox + 2)), vf);
        /* low byte of each 16-bit lane: max(t[2i], t[2i + 1]), then t[2i + 2] */
        const __m128i m = _mm_max_epu8(_mm_max_epu8(a, _mm_srli_epi16(a, 8)), b);
        __m128i r = _mm_packus_epi16(_mm_and_si128(m, lo8), _mm_and_si128(m, lo8));
        r = _mm_min_epu8(_mm_max_epu8(r, vlo), vhi);
        _mm_storel_epi64((__m128i *)(out + ox), _mm_xor_si128(r, vf));
    }
#else
    (void)t, (void)f, (void)lo, (void)hi, (void)out, (void)ow;
#endif
    return ox;
}

/* Max pooling of one plane without padding or dilation: the max of the kh input rows first
 * (a vectorizable element-wise max), then the windows along that row (8-bit planes: 3 at
 * stride 2, ResNet's stem, in SSE2); tmp holds w values. FLIP: the XOR that maps T onto the
 * uint8 order (-1: no SIMD window path). */
#define ORTNPU_MAXPOOL_PLANE(NAME, T, FLIP)                                                     \
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
            int64_t ox0 = 0;                                                                   \
            if ((FLIP) >= 0 && kw == 3 && sw == 2 && lo >= ((FLIP) ? -128 : 0) &&             \
                hi <= ((FLIP) ? 127 : 255))                                                    \
                ox0 = window3s2_u8view((const uint8_t *)(const void *)tmp, ow,                 \
                                       (uint8_t)(FLIP), (uint8_t)((uint8_t)lo ^ (FLIP)),       \
                                       (uint8_t)((uint8_t)hi ^ (FLIP)),                        \
                                       (uint8_t *)(void *)out);                                \
            for (int64_t ox = ox0; ox < ow; ox++) {                                            \
                const T *t = tmp + ox * sw;                                                    \
                T m = t[0];                                                                    \
                for (int64_t kx = 1; kx < kw; kx++) m = t[kx] > m ? t[kx] : m;                 \
                out[ox] = (T)(m < lo ? lo : (m > hi ? hi : m));                                \
            }                                                                                  \
        }                                                                                      \
    }
ORTNPU_MAXPOOL_PLANE(maxpool_plane_i8, int8_t, 0x80)
ORTNPU_MAXPOOL_PLANE(maxpool_plane_u8, uint8_t, 0)
ORTNPU_MAXPOOL_PLANE(maxpool_plane_i16, int16_t, -1)
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

/* elements [at, at + len) of a plane of xtype values set to the type's minimum */
static void fill_min(char *buf, int32_t xtype, int64_t at, int64_t len) {
    if (xtype == ORTNPU_T_I16)
        fill_i16((int16_t *)(void *)buf + at, INT16_MIN, len);
    else
        memset(buf + at, xtype == ORTNPU_T_I8 ? 0x80 : 0, (size_t)len);
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
    /* Max pooling without dilation: per plane, the row maximum then the window maximum
     * (maxpool_plane_*). With padding (ResNet's 3x3 stride-2 pad-1 stem) the plane is first
     * copied into a buffer padded with the type's minimum, which never wins a maximum unless a
     * window lies wholly in the padding, where the reference clamps "no element" to act_min:
     * the copy gives the same only if act_min >= the type's minimum. */
    const int padded = pt || pl || pb || pr;
    const int64_t hp = h + pt + pb, wp = w + pl + pr;
    const int all_pad = pt >= kh || pl >= kw || (oh - 1) * sh - pt >= h || (ow - 1) * sw - pl >= w;
    if (op == 0 && dh == 1 && dw == 1 && (!all_pad || act_min >= type_min(xtype))) {
        const int es = xtype == ORTNPU_T_I16 ? 2 : 1;
        int err = ORTNPU_OK;
#pragma omp parallel num_threads(nt)
        {
            char *buf = padded ? ortnpu_scratch(S_IN1, (size_t)(hp * wp * es)) : NULL;
            int16_t *tmp = ortnpu_scratch(S_IN0, (size_t)wp * sizeof(int16_t));
            const int ok = tmp && (buf || !padded);
            if (!ok) {
#pragma omp atomic write
                err = ORTNPU_ENOMEM;
            }
#pragma omp for schedule(static)
            for (int64_t i = 0; i < n * c; i++) {
                if (!ok) continue;
                const char *plane = (const char *)x + i * h * w * es;
                if (padded) {
                    /* the type's minimum in the padding only (the runs before, between and
                     * after the rows' copies) */
                    fill_min(buf, xtype, 0, pt * wp + pl);
                    for (int64_t r = 0; r < h; r++) {
                        memcpy(buf + ((r + pt) * wp + pl) * es, plane + r * w * es,
                               (size_t)(w * es));
                        fill_min(buf, xtype, (r + pt) * wp + pl + w,
                                 r + 1 < h ? pr + pl : pr + pb * wp);
                    }
                    plane = buf;
                }
                void *dst = (char *)y + i * oh * ow * es;
                if (xtype == ORTNPU_T_I8)
                    maxpool_plane_i8((const int8_t *)plane, wp, kh, kw, sh, sw, oh, ow, act_min,
                                     act_max, dst, (int8_t *)tmp);
                else if (xtype == ORTNPU_T_U8)
                    maxpool_plane_u8((const uint8_t *)plane, wp, kh, kw, sh, sw, oh, ow,
                                     act_min, act_max, dst, (uint8_t *)tmp);
                else
                    maxpool_plane_i16((const int16_t *)(const void *)plane, wp, kh, kw, sh, sw,
                                      oh, ow, act_min, act_max, dst, tmp);
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
