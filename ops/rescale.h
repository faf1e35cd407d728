/* Exact scalar rescale rules, the C twin of ortnpu/domain/arith.py.
 *
 * The numpy reference works in int64 where an overflowing product or shift wraps modulo 2^64
 * (numpy's int64 arithmetic). Signed overflow is undefined behaviour in C, so every operation
 * that may wrap is done on uint64_t/uint32_t and converted back with the helpers below, which
 * are exact two's-complement conversions (compilers reduce them to plain moves).
 */
#ifndef ORTNPU_RESCALE_H
#define ORTNPU_RESCALE_H

#include <stdint.h>

enum { ORTNPU_T_I8 = 0, ORTNPU_T_U8 = 1, ORTNPU_T_I16 = 2 };
enum { ORTNPU_R_DOUBLE = 0, ORTNPU_R_SINGLE = 1, ORTNPU_R_INT64 = 2, ORTNPU_R_HALF_UP = 3,
       ORTNPU_R_TOSA_DOUBLE = 4 };
enum { ORTNPU_OK = 0, ORTNPU_EBADARG = -1, ORTNPU_ENOMEM = -2, ORTNPU_ENAN = -3 };

/* The element types (ORTNPU_T_*): validity, range and size. */
static inline int type_ok(int t) { return t == ORTNPU_T_I8 || t == ORTNPU_T_U8 || t == ORTNPU_T_I16; }
static inline int64_t type_min(int t) { return t == ORTNPU_T_I8 ? -128 : (t == ORTNPU_T_U8 ? 0 : -32768); }
static inline int64_t type_max(int t) { return t == ORTNPU_T_I8 ? 127 : (t == ORTNPU_T_U8 ? 255 : 32767); }
static inline int type_size(int t) { return t == ORTNPU_T_I16 ? 2 : 1; }

/* Two's-complement reinterpretation of an unsigned value (no implementation-defined casts). */
static inline int32_t s32(uint32_t u) {
    return u <= 0x7FFFFFFFu ? (int32_t)u : (int32_t)(u - 0x80000000u) - 0x7FFFFFFF - 1;
}
static inline int64_t s64(uint64_t u) {
    return u <= 0x7FFFFFFFFFFFFFFFull ? (int64_t)u
                                      : (int64_t)(u - 0x8000000000000000ull) - INT64_MAX - 1;
}

/* Arithmetic (flooring) right shift, 0 <= s <= 63, defined for negative x as well. */
static inline int64_t asr64(int64_t x, int s) { return x >= 0 ? x >> s : ~(~x >> s); }
static inline int32_t asr32(int32_t x, int s) { return x >= 0 ? x >> s : ~(~x >> s); }

/* arith.wrap_int32: keep the low 32 bits, as an int32 adder does. */
static inline int64_t wrap32(int64_t x) { return s32((uint32_t)(uint64_t)x); }

static inline int64_t sat32(int64_t x) {
    return x < INT32_MIN ? INT32_MIN : (x > INT32_MAX ? INT32_MAX : x);
}

/* gemmlowp RoundingDivideByPOT on an int32 value, 0 <= e <= 31: divide by 2^e rounding half
 * away from zero. */
static inline int64_t rdbpot(int64_t x, int e) {
    uint64_t mask = (1ull << e) - 1u;
    uint64_t rem = (uint64_t)x & mask;
    uint64_t thr = (mask >> 1) + (x < 0 ? 1u : 0u);
    return asr64(x, e) + (rem > thr ? 1 : 0);
}

/* tflite_double: MultiplyByQuantizedMultiplier. qm in [0, 2^31-1], shift in [-31, 31].
 * x << left wraps to int32 (ortnpu's definition of TFLite's undefined overflow); then
 * SaturatingRoundingDoublingHighMul (its INT32_MIN*INT32_MIN case cannot occur with qm >= 0)
 * whose truncating division (ab + nudge) / 2^31 equals floor((ab + 2^30) / 2^31) for every ab
 * (for ab < 0 the nudge 1-2^30 plus the truncation adjustment 2^31-1 sum to 2^30); then
 * RoundingDivideByPOT. */
static inline int64_t rs_double(int64_t x, int64_t qm, int shift) {
    int left = shift > 0 ? shift : 0;
    int right = shift > 0 ? 0 : -shift;
    int64_t a = s32((uint32_t)(uint64_t)sat32(x) << left); /* int32 input: saturate 64-bit acc */
    int64_t ab = a * qm; /* |ab| < 2^62 */
    int64_t nudge = ab >= 0 ? (INT64_C(1) << 30) : (1 - (INT64_C(1) << 30));
    int64_t high = (ab + nudge) / (INT64_C(1) << 31); /* C division truncates toward zero */
    return rdbpot(high, right);
}

/* tflite_single: (x * qm + 2^(t-1)) >> t with t = 31 - shift in [1, 62] on an int32 input (a
 * 64-bit accumulator is saturated to int32 first, so |x * qm| < 2^62), saturated to int32. */
static inline int64_t rs_single(int64_t x, int64_t qm, int shift) {
    int t = 31 - shift;
    return sat32(asr64(sat32(x) * qm + (INT64_C(1) << (t - 1)), t));
}

/* tflite_int64: x saturated to [-2^47, 2^47-1], multiplier reduced to 15 bits, one rounding
 * shift by t = 15 - shift in [8, 46] (no overflow possible), result saturated to int32. */
static inline int64_t rs_int64(int64_t x, int64_t qm, int shift) {
    const int64_t lim = INT64_C(1) << 47;
    if (x < -lim) x = -lim;
    if (x > lim - 1) x = lim - 1;
    int64_t red = qm < INT64_C(0x7FFF0000) ? (qm + (INT64_C(1) << 15)) >> 16 : INT64_C(0x7FFF);
    int t = 15 - shift;
    return sat32(asr64(x * red + (INT64_C(1) << (t - 1)), t));
}

/* half_up: (x*m + 2^(r-1)) >> r for a right shift r in [1, 62], x*m*2^left otherwise, exact
 * for x in [-2^62, 2^62] (saturated beyond) and 32-bit m: the product is formed in 128 bits.
 * The result saturates to int32. */
#ifndef __SIZEOF_INT128__
#error "ortnpu's half_up rescale needs a compiler with 128-bit integers (gcc, clang)"
#endif
static inline int64_t rs_half_up(int64_t x, int64_t m, int shift) {
    const int64_t lim = INT64_C(1) << 62;
    if (x < -lim) x = -lim;
    if (x > lim) x = lim;
    __int128 p = (__int128)x * m; /* |p| <= 2^93 */
    if (shift < 0) {
        int r = -shift;
        p += (__int128)1 << (r - 1);
        p = p >= 0 ? p >> r : ~(~p >> r); /* flooring shift, well defined for negatives */
    } else if (shift > 0) {
        p *= (__int128)1 << shift; /* |p| <= 2^124 */
    }
    return p < INT32_MIN ? INT32_MIN : (p > INT32_MAX ? INT32_MAX : (int64_t)p);
}

/* tosa_double: TOSA apply_scale_32 with double_round. x saturated to int32 (so |x*m| <= 2^62);
 * for a right shift r: (x*m + 2^(r-1) [+2^30 if r > 31 and x >= 0, -2^30 if r > 31 and x < 0])
 * >> r, saturated to int32; left shifts and shift 0 as half_up. */
static inline int64_t rs_tosa_double(int64_t x, int64_t m, int shift) {
    x = sat32(x);
    if (shift >= 0) return rs_half_up(x, m, shift);
    int r = -shift;
    int64_t round = INT64_C(1) << (r - 1);
    if (r > 31) round += x >= 0 ? (INT64_C(1) << 30) : -(INT64_C(1) << 30);
    return sat32(asr64(x * m + round, r));
}

static inline int64_t rescale1(int64_t x, int64_t m, int shift, int rule) {
    switch (rule) {
    case ORTNPU_R_DOUBLE: return rs_double(x, m, shift);
    case ORTNPU_R_SINGLE: return rs_single(x, m, shift);
    case ORTNPU_R_INT64: return rs_int64(x, m, shift);
    case ORTNPU_R_TOSA_DOUBLE: return rs_tosa_double(x, m, shift);
    default: return rs_half_up(x, m, shift);
    }
}

/* Shift range of each rule (arith.rescale_bounds); the kernels refuse anything else. */
static inline int shift_ok(int rule, int64_t s) {
    switch (rule) {
    case ORTNPU_R_DOUBLE: return s >= -31 && s <= 31;
    case ORTNPU_R_SINGLE: return s >= -31 && s <= 30;
    case ORTNPU_R_INT64: return s >= -31 && s <= 7;
    case ORTNPU_R_HALF_UP:
    case ORTNPU_R_TOSA_DOUBLE: return s >= -62 && s <= 31;
    default: return 0;
    }
}
static inline int mult_ok(int rule, int64_t m) {
    return rule == ORTNPU_R_HALF_UP || rule == ORTNPU_R_TOSA_DOUBLE
               ? (m >= INT32_MIN && m <= INT32_MAX)
                                    : (m >= 0 && m <= INT32_MAX);
}

/* Rescale of a run of values: v[i] = rescale(v[i], m[i*ms], shift[i*ss]) with the rule
 * chosen outside the loop (ms, ss: 0 for per-tensor parameters, 1 for per-element). */
static inline void rescale_chunk(int64_t *v, int64_t n, const int32_t *m, int64_t ms,
                                 const int32_t *sh, int64_t ss, int rule) {
#define ORTNPU_RESCALE_LOOP(F)                                                              \
    for (int64_t i = 0; i < n; i++) v[i] = F(v[i], m[i * ms], sh[i * ss]);
    switch (rule) {
    case ORTNPU_R_DOUBLE: ORTNPU_RESCALE_LOOP(rs_double) break;
    case ORTNPU_R_SINGLE: ORTNPU_RESCALE_LOOP(rs_single) break;
    case ORTNPU_R_INT64: ORTNPU_RESCALE_LOOP(rs_int64) break;
    case ORTNPU_R_TOSA_DOUBLE: ORTNPU_RESCALE_LOOP(rs_tosa_double) break;
    default: ORTNPU_RESCALE_LOOP(rs_half_up) break;
    }
#undef ORTNPU_RESCALE_LOOP
}

/* Every multiplier and shift of a parameter array in the rule's range. */
static inline int params_ok(const int32_t *m, const int32_t *s, int64_t n, int rule) {
    for (int64_t i = 0; i < n; i++)
        if (!mult_ok(rule, m[i]) || !shift_ok(rule, s[i])) return 0;
    return 1;
}

#endif
