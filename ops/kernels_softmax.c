/* Softmax over the last axis: TFLite's integer reference algorithms, the C twin of
 * ortnpu/domain/ops_softmax.py and fixed_point.py (gemmlowp's fixed-point exp and reciprocal
 * for 8-bit inputs, two interpolated int16 tables for int16 inputs).
 *
 * FixedPoint additions wrap (done on uint32_t), products are SaturatingRoundingDoublingHighMul.
 */
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "ortnpu_kernels.h"
#include "rescale.h"

/* gemmlowp SaturatingRoundingDoublingHighMul on int32 values. */
static inline int32_t srdhm(int32_t a, int32_t b) {
    if (a == b && a == INT32_MIN) return INT32_MAX;
    int64_t ab = (int64_t)a * (int64_t)b;
    int64_t nudge = ab >= 0 ? (INT64_C(1) << 30) : (1 - (INT64_C(1) << 30));
    return (int32_t)((ab + nudge) / (INT64_C(1) << 31));
}

static inline int32_t add32(int32_t a, int32_t b) { return s32((uint32_t)a + (uint32_t)b); }
static inline int32_t sub32(int32_t a, int32_t b) { return s32((uint32_t)a - (uint32_t)b); }
static inline int32_t rdbpot32(int32_t x, int e) { return (int32_t)rdbpot(x, e); }

/* SaturatingRoundingMultiplyByPOT with a positive exponent: a saturating left shift. */
static inline int32_t sat_shl(int32_t x, int e) { return (int32_t)sat32((int64_t)x * (INT64_C(1) << e)); }

static inline int clz32(uint32_t x) { return x ? __builtin_clz(x) : 32; }

/* exp(a) for a in [-1/4, 0), Q0.31. */
static int32_t exp_quarter(int32_t a) {
    const int32_t c = 1895147668, third = 715827883;
    int32_t x = add32(a, 1 << 28);
    int32_t x2 = srdhm(x, x), x3 = srdhm(x2, x), x4 = srdhm(x2, x2);
    int32_t x4_4 = rdbpot32(x4, 2);
    int32_t poly = rdbpot32(add32(srdhm(add32(x4_4, x3), third), x2), 1);
    return add32(c, srdhm(c, add32(x, poly)));
}

/* gemmlowp exp_on_negative_values of a Q5.26 value, Q0.31 out. */
static int32_t exp_neg_q5(int32_t a) {
    static const int32_t mult[7] = {1672461947, 1302514674, 790015084, 290630308, 39332535,
                                    720401, 242};
    const int frac = 26;
    const int32_t quarter = 1 << (frac - 2);
    int32_t a_mod = sub32(a & (quarter - 1), quarter);
    int32_t result = exp_quarter(sat_shl(a_mod, 5));
    int32_t rem = sub32(a_mod, a);
    for (int k = -2; k <= 4; k++)
        if (((uint32_t)rem >> (frac + k)) & 1u) result = srdhm(result, mult[k + 2]);
    return a == 0 ? INT32_MAX : result;
}

/* gemmlowp one_over_one_plus_x_for_x_in_0_1, Q0.31 in and out. */
static int32_t one_over_one_plus_x(int32_t a) {
    int64_t sum = (int64_t)a + INT32_MAX;
    int32_t half = (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2);
    int32_t x = add32(1515870810, srdhm(half, -1010580540));
    for (int i = 0; i < 3; i++) {
        int32_t one_minus = sub32(1 << 29, srdhm(half, x));
        x = add32(x, sat_shl(srdhm(x, one_minus), 2));
    }
    return sat_shl(x, 1);
}

/* The exponential of one 8-bit difference d = x - max (d >= diff_min), as the reference. */
static inline int32_t exp_of_diff(int32_t d, int32_t mult, int shift) {
    return exp_neg_q5(srdhm(s32((uint32_t)d << shift), mult));
}

void ortnpu_softmax8_table(int32_t mult, int32_t shift, int32_t diff_min, int32_t *tab) {
    for (int32_t d = 0; d > -256; d--) tab[-d] = d >= diff_min ? exp_of_diff(d, mult, shift) : 0;
}

/* 8-bit rows: reference_ops::Softmax, each exponential evaluated (a call of few rows); e holds
 * the row's exponentials (scratch). */
static void softmax_row_8(const void *x, int xtype, int64_t depth, int32_t mult, int shift,
                          int32_t diff_min, void *y, int32_t *e) {
    const int8_t *xs = (const int8_t *)x;
    const uint8_t *xu = (const uint8_t *)x;
    int32_t mx = xtype == ORTNPU_T_I8 ? -128 : 0;
    for (int64_t c = 0; c < depth; c++) {
        int32_t v = xtype == ORTNPU_T_I8 ? xs[c] : xu[c];
        if (v > mx) mx = v;
    }
    int32_t total = 0;
    for (int64_t c = 0; c < depth; c++) {
        int32_t d = (xtype == ORTNPU_T_I8 ? xs[c] : xu[c]) - mx;
        if (d >= diff_min) {
            e[c] = exp_of_diff(d, mult, shift);
            total = add32(total, rdbpot32(e[c], 12));
        }
    }
    int h = clz32((uint32_t)total);
    int over = 12 - h;
    int32_t recip = one_over_one_plus_x(s32(((uint32_t)total << h) - 0x80000000u));
    int64_t lo = type_min(xtype), hi = type_max(xtype);
    int exponent = over + 31 - 8;
    for (int64_t c = 0; c < depth; c++) {
        int32_t d = (xtype == ORTNPU_T_I8 ? xs[c] : xu[c]) - mx;
        int64_t v = lo;
        if (d >= diff_min) {
            v = rdbpot(srdhm(recip, e[c]), exponent) + lo;
            v = v < lo ? lo : (v > hi ? hi : v);
        }
        if (xtype == ORTNPU_T_I8) ((int8_t *)y)[c] = (int8_t)v;
        else ((uint8_t *)y)[c] = (uint8_t)v;
    }
}

/* 8-bit rows with the exponential table: the same numbers as softmax_row_8, without its
 * branches. The table holds 0 below diff_min, so the reference's d >= diff_min tests fall out
 * (a zero exponential adds 0 to the sum and gives the type's minimum); every exponential,
 * the reciprocal and their product are non-negative, so RoundingDivideByPOT is a shift plus
 * the bit below it and SaturatingRoundingDoublingHighMul an unsigned 64-bit product: loops
 * the compiler vectorizes (a ViT-S's 72 rows of 197 per head: 23 % of its time before). */
static void softmax_row_8_table(const void *x, int xtype, int64_t depth, const int32_t *tab,
                                void *y, int32_t *e) {
    int32_t total = 0;
    if (xtype == ORTNPU_T_I8) {
        const int8_t *xs = (const int8_t *)x;
        int8_t mx = -128;
        for (int64_t c = 0; c < depth; c++) mx = xs[c] > mx ? xs[c] : mx;
        for (int64_t c = 0; c < depth; c++) e[c] = tab[mx - xs[c]];
    } else {
        const uint8_t *xu = (const uint8_t *)x;
        uint8_t mx = 0;
        for (int64_t c = 0; c < depth; c++) mx = xu[c] > mx ? xu[c] : mx;
        for (int64_t c = 0; c < depth; c++) e[c] = tab[mx - xu[c]];
    }
    for (int64_t c = 0; c < depth; c++) total += (e[c] >> 12) + ((e[c] >> 11) & 1);
    int h = clz32((uint32_t)total);   /* total >= exp(0) / 2^12 = 2^19: h <= 12 */
    int32_t recip = one_over_one_plus_x(s32(((uint32_t)total << h) - 0x80000000u));
    int exponent = 12 - h + 31 - 8;   /* 23 to 31 */
    const uint64_t r = (uint32_t)recip;
    if (xtype == ORTNPU_T_I8) {
        int8_t *ys = (int8_t *)y;
        for (int64_t c = 0; c < depth; c++) {
            uint32_t q = (uint32_t)((r * (uint32_t)e[c] + (UINT64_C(1) << 30)) >> 31);
            int32_t v = (int32_t)((q >> exponent) + ((q >> (exponent - 1)) & 1u)) - 128;
            ys[c] = (int8_t)(v > 127 ? 127 : v);
        }
    } else {
        uint8_t *yu = (uint8_t *)y;
        for (int64_t c = 0; c < depth; c++) {
            uint32_t q = (uint32_t)((r * (uint32_t)e[c] + (UINT64_C(1) << 30)) >> 31);
            uint32_t v = (q >> exponent) + ((q >> (exponent - 1)) & 1u);
            yu[c] = (uint8_t)(v > 255 ? 255 : v);
        }
    }
}

/* TFLite's int16 LUTLookup: interpolation in a 513-entry table. */
static inline int32_t lut16(int32_t v, const int16_t *lut) {
    int32_t index = 256 + asr32(v, 7);
    int32_t offset = v & 0x7f;
    int32_t base = lut[index];
    int32_t slope = (int16_t)(lut[index + 1] - base);
    return (int16_t)(base + asr32(slope * offset + 64, 7));
}

/* int16 rows: reference_ops::SoftmaxInt16. e holds the row's exponentials (scratch). */
static void softmax_row_16(const int16_t *x, int64_t depth, int32_t mult, int shift,
                           const int16_t *exp_lut, const int16_t *recip_lut, int16_t *y,
                           int32_t *e) {
    int32_t mx = -32768;
    for (int64_t c = 0; c < depth; c++)
        if (x[c] > mx) mx = x[c];
    int64_t total = 0;
    for (int64_t c = 0; c < depth; c++) {
        int64_t s = rs_double(x[c] - mx, mult, shift) + 32767;
        s = s < -32768 ? -32768 : (s > 32767 ? 32767 : s);
        e[c] = lut16((int32_t)s, exp_lut);
        total += e[c];
    }
    int h = clz32((uint32_t)total);
    int64_t shifted = asr64((total << (h - 1)) + (1 << 13), 14) - ((1 << 15) + (1 << 16));
    shifted = shifted < -32768 ? -32768 : (shifted > 32767 ? 32767 : shifted);
    int64_t recip = lut16((int32_t)shifted, recip_lut);
    int right = 31 - h;
    for (int64_t c = 0; c < depth; c++) {
        int64_t v = asr64((int64_t)e[c] * recip + (INT64_C(1) << (right - 1)), right);
        y[c] = (int16_t)(v < 0 ? 0 : (v > 32767 ? 32767 : v));
    }
}

int ortnpu_softmax(int64_t rows, int64_t depth, const void *x, int32_t xtype, int32_t mult,
                   int32_t shift, int32_t diff_min, const int16_t *exp_lut,
                   const int16_t *recip_lut, void *y, int nthreads) {
    return ortnpu_softmax_tab(rows, depth, x, xtype, mult, shift, diff_min, exp_lut, recip_lut,
                              NULL, y, nthreads);
}

int ortnpu_softmax_tab(int64_t rows, int64_t depth, const void *x, int32_t xtype, int32_t mult,
                       int32_t shift, int32_t diff_min, const int16_t *exp_lut,
                       const int16_t *recip_lut, const int32_t *exp8, void *y, int nthreads) {
    if (rows < 0 || depth < 1 || !type_ok(xtype) || mult < 0) return ORTNPU_EBADARG;
    if (xtype == ORTNPU_T_I16) {
        if (depth > 65536 || shift < -31 || shift > 31 || !exp_lut || !recip_lut)
            return ORTNPU_EBADARG;
    } else if (depth > 511 || shift < 0 || shift > 31 || diff_min > 0 ||
               -(int64_t)diff_min * (INT64_C(1) << shift) >= (INT64_C(1) << 31)) {
        return ORTNPU_EBADARG;
    }
    int32_t local[256]; /* a call of many rows makes its own table (compiled programs keep one) */
    if (!exp8 && xtype != ORTNPU_T_I16 && rows * depth >= 1024) {
        ortnpu_softmax8_table(mult, shift, diff_min, local);
        exp8 = local;
    }
    int32_t *scratch = (int32_t *)malloc((size_t)depth * sizeof(int32_t) *
                                         (size_t)(nthreads > 0 ? nthreads : 1));
    if (!scratch) return ORTNPU_ENOMEM;
    const int size = type_size(xtype);
#pragma omp parallel for num_threads(nthreads > 0 ? nthreads : 1) schedule(static) if (nthreads > 1)
    for (int64_t r = 0; r < rows; r++) {
#ifdef _OPENMP
        int32_t *e = scratch + (size_t)omp_get_thread_num() * (size_t)depth;
#else
        int32_t *e = scratch;
#endif
        const char *xr = (const char *)x + r * depth * size;
        char *yr = (char *)y + r * depth * size;
        if (xtype == ORTNPU_T_I16)
            softmax_row_16((const int16_t *)xr, depth, mult, shift, exp_lut, recip_lut,
                           (int16_t *)yr, e);
        else if (exp8)
            softmax_row_8_table(xr, xtype, depth, exp8, yr, e);
        else
            softmax_row_8(xr, xtype, depth, mult, shift, diff_min, yr, e);
    }
    free(scratch);
    return ORTNPU_OK;
}
