/* ortnpu C kernels of the ops issue 14 moved to the NPU that had only a numpy reference: Sub,
 * Maximum, Minimum, SquaredDifference (elementwise, numpy broadcasting) and Slice (a strided
 * copy). They serve the
 * per-op path (ortnpu/domain/native.py) and the compiled programs (program.c), whose layers
 * must not fall back to Python. Each gives the bits of its numpy reference
 * (ortnpu/domain/ops_elementwise.py, ops_layout.py); tests/test_native_kernels.py and
 * tests/test_native_program.py compare them.
 */
#include <string.h>

#include "ortnpu_kernels.h"
#include "rescale.h"

static inline int64_t ld_any(const void *p, int t, int64_t i) {
    switch (t) {
    case ORTNPU_T_I8: return ((const int8_t *)p)[i];
    case ORTNPU_T_U8: return ((const uint8_t *)p)[i];
    default: return ((const int16_t *)p)[i];
    }
}

static inline void st_any(void *p, int t, int64_t i, int64_t v) {
    switch (t) {
    case ORTNPU_T_I8: ((int8_t *)p)[i] = (int8_t)v; break;
    case ORTNPU_T_U8: ((uint8_t *)p)[i] = (uint8_t)v; break;
    default: ((int16_t *)p)[i] = (int16_t)v; break;
    }
}

/* rescale1 for a multiplier of either sign (TFLite's SUB negates input2's multiplier): the
 * tflite_int64 reduction (qm + 2^15) >> 16 must floor for a negative qm as numpy's >> does. */
static inline int64_t rescale_signed(int64_t x, int64_t m, int shift, int rule) {
    if (rule != ORTNPU_R_INT64 || m >= 0) return rescale1(x, m, shift, rule);
    const int64_t lim = INT64_C(1) << 47;
    if (x < -lim) x = -lim;
    if (x > lim - 1) x = lim - 1;
    const int64_t red = asr64(m + (INT64_C(1) << 15), 16);
    const int t = 15 - shift;
    return sat32(asr64(x * red + (INT64_C(1) << (t - 1)), t));
}

/* The output parameters the elementwise steps need (out_ok of kernels.c, without acc_bits). */
static int out_valid(const ortnpu_out_t *o) {
    if (!o || !type_ok(o->otype) || o->rule < 0 || o->rule > ORTNPU_R_TOSA_DOUBLE) return 0;
    if (o->act_min > o->act_max || o->act_min < type_min(o->otype) ||
        o->act_max > type_max(o->otype))
        return 0;
    return o->y_zp >= -(INT64_C(1) << 16) && o->y_zp <= (INT64_C(1) << 16);
}

int ortnpu_binary_ext(int32_t op, int32_t ndim, const int64_t *shape, const void *a,
                      int32_t atype, const int64_t *astride, int64_t a_len, const void *b,
                      int32_t btype, const int64_t *bstride, int64_t b_len, const int64_t *prm,
                      const ortnpu_out_t *o, void *y, int nthreads) {
    (void)nthreads; /* elementwise and memory bound: one thread */
    if (!o || !type_ok(atype) || !type_ok(btype) || ndim < 1 || ndim > 16 || op < 2 || op > 6)
        return ORTNPU_EBADARG;
    if (op == 2 || op == 5 || op == 6) {
        if (!out_valid(o)) return ORTNPU_EBADARG;
        if (prm[0] < type_min(atype) || prm[0] > type_max(atype) || prm[1] < type_min(btype) ||
            prm[1] > type_max(btype) || prm[2] < 0 || prm[2] > 31)
            return ORTNPU_EBADARG;
        for (int i = 3; i < 9; i += 2)
            if (!mult_ok(o->rule, prm[i]) || !shift_ok(o->rule, prm[i + 1])) return ORTNPU_EBADARG;
    } else if (atype != btype || o->otype != atype) {
        return ORTNPU_EBADARG; /* Maximum/Minimum compare stored integers of one type */
    }
    int64_t total = 1, amax = 0, bmax = 0;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0 || astride[d] < 0 || bstride[d] < 0) return ORTNPU_EBADARG;
        if (shape[d] == 0) return ORTNPU_OK;
        total *= shape[d];
        amax += (shape[d] - 1) * astride[d];
        bmax += (shape[d] - 1) * bstride[d];
    }
    if (amax >= a_len || bmax >= b_len) return ORTNPU_EBADARG;
    const int rule = o->rule, ls = (int)prm[2];
    int64_t idx[16] = {0}, ao = 0, bo = 0;
    for (int64_t i = 0; i < total; i++) {
        const int64_t va = ld_any(a, atype, ao), vb = ld_any(b, btype, bo);
        if (op == 2 || op == 6) {
            /* SUB: (x - zp) << left_shift wrapped to int32, rescaled per input (op 2, TFLite:
             * b's multiplier negated; op 6, TOSA: b rescaled, then negated), summed with int32
             * wrap-around, rescaled, offset, clamped */
            const int64_t xa = s32((uint32_t)(uint64_t)(va - prm[0]) << ls);
            const int64_t xb = s32((uint32_t)(uint64_t)(vb - prm[1]) << ls);
            const int64_t sa = rescale1(xa, prm[3], (int)prm[4], rule);
            const int64_t sb = op == 2 ? rescale_signed(xb, -prm[5], (int)prm[6], rule)
                                       : -rescale1(xb, prm[5], (int)prm[6], rule);
            int64_t t = rescale1(wrap32(sa + sb), prm[7], (int)prm[8], rule) + o->y_zp;
            t = t < o->act_min ? o->act_min : (t > o->act_max ? o->act_max : t);
            st_any(y, o->otype, i, t);
        } else if (op == 5) {
            /* SQUARED_DIFFERENCE: both inputs rescaled as in ADD, their int32 difference
             * squared (wrapping to int32), rescaled, offset, clamped */
            const int64_t xa = s32((uint32_t)(uint64_t)(va - prm[0]) << ls);
            const int64_t xb = s32((uint32_t)(uint64_t)(vb - prm[1]) << ls);
            const int64_t d = wrap32(rescale1(xa, prm[3], (int)prm[4], rule) -
                                     rescale1(xb, prm[5], (int)prm[6], rule));
            int64_t t = rescale1(wrap32(d * d), prm[7], (int)prm[8], rule) + o->y_zp;
            t = t < o->act_min ? o->act_min : (t > o->act_max ? o->act_max : t);
            st_any(y, o->otype, i, t);
        } else {
            st_any(y, o->otype, i, op == 3 ? (va > vb ? va : vb) : (va < vb ? va : vb));
        }
        for (int d = ndim - 1; d >= 0; d--) { /* next output index */
            ao += astride[d];
            bo += bstride[d];
            if (++idx[d] < shape[d]) break;
            ao -= astride[d] * shape[d];
            bo -= bstride[d] * shape[d];
            idx[d] = 0;
        }
    }
    return ORTNPU_OK;
}

int ortnpu_strided_copy(int32_t ndim, const int64_t *odims, const int64_t *istride,
                        int64_t start, int64_t x_len, const void *x, void *y,
                        int32_t elem_size) {
    if (ndim < 1 || ndim > 16 || (elem_size != 1 && elem_size != 2) || start < 0)
        return ORTNPU_EBADARG;
    /* bounds: the lowest and highest offsets reached lie inside x */
    int64_t total = 1, lo = start, hi = start;
    for (int d = 0; d < ndim; d++) {
        if (odims[d] < 0) return ORTNPU_EBADARG;
        if (odims[d] == 0) return ORTNPU_OK;
        total *= odims[d];
        const int64_t span = (odims[d] - 1) * istride[d];
        if (span < 0)
            lo += span;
        else
            hi += span;
    }
    if (lo < 0 || hi >= x_len) return ORTNPU_EBADARG;
    const int64_t inner = odims[ndim - 1], step = istride[ndim - 1];
    const int64_t rows = total / inner;
    int64_t idx[16] = {0}, off = start;
    for (int64_t r = 0; r < rows; r++) {
        if (step == 1) {
            memcpy((char *)y + r * inner * elem_size, (const char *)x + off * elem_size,
                   (size_t)(inner * elem_size));
        } else if (elem_size == 1) {
            const uint8_t *src = (const uint8_t *)x + off;
            uint8_t *dst = (uint8_t *)y + r * inner;
            for (int64_t i = 0; i < inner; i++) dst[i] = src[i * step];
        } else {
            const uint16_t *src = (const uint16_t *)x + off;
            uint16_t *dst = (uint16_t *)y + r * inner;
            for (int64_t i = 0; i < inner; i++) dst[i] = src[i * step];
        }
        for (int d = ndim - 2; d >= 0; d--) { /* next output row */
            off += istride[d];
            if (++idx[d] < odims[d]) break;
            off -= istride[d] * odims[d];
            idx[d] = 0;
        }
    }
    return ORTNPU_OK;
}
