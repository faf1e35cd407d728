/* Add, Mul, Requantize and Lut kernels (ortnpu/domain/ops_elementwise.py). Sub, Maximum and
 * Minimum have no C kernel yet (numpy references). */
#include "kernels_common.h"

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
    const ortnpu_isa_t *I = ortnpu_pick_isa(isa);
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
    const ortnpu_isa_t *I = ortnpu_pick_isa(isa);
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
        if (!along && o->rule == ORTNPU_R_DOUBLE) {
            /* |x - zp| < 2^17: the int32 rows of the convolutions' vectorized output stage */
            int32_t v32[CHUNK];
            for (int64_t i = 0; i < len; i++) v32[i] = (int32_t)v[i];
            const int64_t c = pc ? row % ch : 0;
            I->finish32_double(v32, len, 0u, mult[c], shift[c], o->y_zp, o->act_min, o->act_max,
                               (char *)y + start * type_size(o->otype), o->otype);
            continue;
        }
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
    if (xtype != ORTNPU_T_I16 && ttype != ORTNPU_T_I16) {
        /* 8-bit in and out (GELU, sigmoid, rsqrt tables): one byte load per element, the
         * index the input byte with its sign bit flipped for int8 (x + 128) */
        const uint8_t *xb = x, *tb = table, flip = xtype == ORTNPU_T_I8 ? 0x80u : 0u;
        uint8_t *yb = y;
#pragma omp parallel for num_threads(nt) schedule(static) if (count > 65536)
        for (int64_t c0 = 0; c0 < count; c0 += 4096) {
            const int64_t end = c0 + 4096 < count ? c0 + 4096 : count;
            for (int64_t i = c0; i < end; i++) yb[i] = tb[(uint8_t)(xb[i] ^ flip)];
        }
        return ORTNPU_OK;
    }
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
