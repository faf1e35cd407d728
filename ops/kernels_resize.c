/* Resize kernels: TFLite's RESIZE_NEAREST_NEIGHBOR and integer RESIZE_BILINEAR on NCHW planes.
 *
 * The per-axis tables (lower index, upper index, upper weight in 1/1024) come from
 * ortnpu/domain/ops_resize.py::axis_table, the one definition of TFLite's coordinate
 * arithmetic; this file does the per-pixel work: a gather (nearest) or the four-tap 10-bit
 * interpolation summed in int64 and rounded half away from zero over 2^20 (bilinear), exactly
 * as the numpy reference of the op.
 */
#include <stdint.h>
#include <string.h>

#include "ortnpu_kernels.h"
#include "rescale.h"

#ifdef _OPENMP
#include <omp.h>
#endif

static int resize_threads(int nthreads) {
    return nthreads < 1 ? 1 : (nthreads > 1024 ? 1024 : nthreads);
}

/* Every index of a table inside [0, size): the kernel never reads outside the input. */
static int resize_table_ok(const int32_t *t, int64_t out, int64_t size) {
    for (int64_t i = 0; i < 2 * out; i++)
        if (t[i] < 0 || t[i] >= size) return 0;
    return 1;
}

/* round half away from zero of v / 2^20 (TFLite: (v +- 2^19) / 2^20, C division) */
static inline int64_t resize_round20(int64_t v) {
    const int64_t r = v > 0 ? ((int64_t)1 << 19) : -((int64_t)1 << 19);
    return (v + r) / ((int64_t)1 << 20);
}

#define ORTNPU_RESIZE_PLANE(NAME, T)                                                            \
    static void NAME(const T *x, int64_t w, int64_t oh, int64_t ow, const int32_t *yt,         \
                     const int32_t *xt, int bilinear, T *y) {                                  \
        const int32_t *x0 = xt, *x1 = xt + ow, *wx = xt + 2 * ow;                              \
        for (int64_t oy = 0; oy < oh; oy++) {                                                  \
            const T *r0 = x + (int64_t)yt[oy] * w;                                             \
            T *out = y + oy * ow;                                                              \
            if (!bilinear) {                                                                   \
                for (int64_t ox = 0; ox < ow; ox++) out[ox] = r0[x0[ox]];                      \
                continue;                                                                      \
            }                                                                                  \
            const T *r1 = x + (int64_t)yt[oh + oy] * w;                                        \
            const int64_t wy = yt[2 * oh + oy], vy = 1024 - wy;                                \
            for (int64_t ox = 0; ox < ow; ox++) {                                              \
                const int64_t a = x0[ox], b = x1[ox], wb = wx[ox], wa = 1024 - wb;             \
                const int64_t acc = (int64_t)r0[a] * vy * wa + (int64_t)r1[a] * wy * wa +      \
                                    (int64_t)r0[b] * vy * wb + (int64_t)r1[b] * wy * wb;       \
                out[ox] = (T)resize_round20(acc);                                              \
            }                                                                                  \
        }                                                                                      \
    }

ORTNPU_RESIZE_PLANE(resize_plane_i8, int8_t)
ORTNPU_RESIZE_PLANE(resize_plane_u8, uint8_t)
ORTNPU_RESIZE_PLANE(resize_plane_i16, int16_t)

int ortnpu_resize(int64_t planes, int64_t h, int64_t w, int64_t oh, int64_t ow,
                  int32_t bilinear, const int32_t *ytab, const int32_t *xtab, const void *x,
                  int32_t xtype, void *y, int nthreads) {
    if (!type_ok(xtype) || planes < 0 || h < 1 || w < 1 || oh < 1 || ow < 1)
        return ORTNPU_EBADARG;
    if (!resize_table_ok(ytab, oh, h) || !resize_table_ok(xtab, ow, w)) return ORTNPU_EBADARG;
    for (int64_t i = 0; i < oh; i++)   /* weights within the kernel's range (|w| <= 1024) */
        if (ytab[2 * oh + i] < -1024 || ytab[2 * oh + i] > 1024) return ORTNPU_EBADARG;
    for (int64_t i = 0; i < ow; i++)
        if (xtab[2 * ow + i] < -1024 || xtab[2 * ow + i] > 1024) return ORTNPU_EBADARG;
    const int nt = resize_threads(nthreads);
    const int64_t in_plane = h * w, out_plane = oh * ow;
    (void)nt;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && planes > 1)
    for (int64_t p = 0; p < planes; p++) {
        switch (xtype) {
        case ORTNPU_T_I8:
            resize_plane_i8((const int8_t *)x + p * in_plane, w, oh, ow, ytab, xtab, bilinear,
                            (int8_t *)y + p * out_plane);
            break;
        case ORTNPU_T_U8:
            resize_plane_u8((const uint8_t *)x + p * in_plane, w, oh, ow, ytab, xtab, bilinear,
                            (uint8_t *)y + p * out_plane);
            break;
        default:
            resize_plane_i16((const int16_t *)x + p * in_plane, w, oh, ow, ytab, xtab,
                             bilinear, (int16_t *)y + p * out_plane);
            break;
        }
    }
    return ORTNPU_OK;
}
