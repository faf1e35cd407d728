/* Conv, FullyConnected and MatMul kernels (ortnpu/domain/ops_linear.py): drivers (validation,
 * packing, threading, output) around the per-ISA inner loops of kernels_isa.h. Exactness
 * contract: see ortnpu_kernels.h and rescale.h.
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
#include "kernels_common.h"

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
                        const conv_ctx_t *cx, int nt) {
    const int64_t planes = p->n * p->c, phase = cx->hph * cx->wph, plane = cx->nph * phase;
    const int64_t es = G == 4 ? 1 : 2, sh = p->sh, sw = p->sw;
    char *xp = ortnpu_scratch(S_OUT2, (size_t)((planes * plane + 64) * es));
    if (!xp) return NULL;
    memset(xp + planes * plane * es, 0, (size_t)(64 * es));
    const int64_t zp = p->x_zp + (G == 4 ? qoff : 0);
    const int padded = p->pt || p->pl || p->pb || p->pr || (p->h + p->pt + p->pb) % sh ||
                       (p->w + p->pl + p->pr) % sw;
    /* the copy is split over the layer's threads from 64 k elements (it ran on one thread
     * before the GEMM's parallel region: a 144-channel 56x56 input is 450 k values) */
    const int par = nt > 1 && planes * plane >= 65536;
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
        const int64_t total = planes * p->h * p->w, parts = par ? nt : 1;
#pragma omp parallel for num_threads(nt) schedule(static) if (par)
        for (int64_t part = 0; part < parts; part++) {
            const int64_t a = total * part / parts, n = total * (part + 1) / parts - a;
            if (G == 2)
                load_i16((int16_t *)(void *)xp + a, x, p->xtype, a, 1, n);
            else if (flip)
                flip_i8((uint8_t *)xp + a, (const int8_t *)x + a, n);
            else
                memcpy(xp + a, (const uint8_t *)x + a, (size_t)n);
        }
        return xp;
    }
#pragma omp parallel for num_threads(nt) schedule(static) if (par)
    for (int64_t pl = 0; pl < planes; pl++) {
        if (padded && G == 4)
            memset(xp + pl * plane, (int)(uint8_t)zp, (size_t)plane);
        else if (padded)
            fill_i16((int16_t *)(void *)xp + pl * plane, (int16_t)zp, plane);
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

/* Output channels in block blk of 4 (the last block of a group may hold fewer). */
static inline int block_rows(int64_t coutg, int64_t blk) {
    return (int)(coutg - blk * 4 < 4 ? coutg - blk * 4 : 4);
}

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

/* When the last thread finishes if the items of a GEMM convolution (image x pixel tile x
 * channel split, split fastest) go to whichever thread is free first, as schedule(dynamic, 1)
 * hands them out. An item costs its 16-rounded pixels times its blocks of 4 output channels
 * plus half a block for its im2col (which every split of a tile repeats). */
static int64_t tiling_makespan(int64_t images, int64_t Pq, int64_t tp, int64_t nblk,
                               int64_t nsplit, int nt) {
    int64_t fin[64] = {0};
    const int64_t ntiles = ceil_div(Pq, tp), nth = nt < 64 ? nt : 64;
    for (int64_t it = 0; it < images * ntiles * nsplit; it++) {
        const int64_t split = it % nsplit, t = (it / nsplit) % ntiles;
        const int64_t px = round16(Pq - t * tp < tp ? Pq - t * tp : tp);
        const int64_t blocks = (split + 1) * nblk / nsplit - split * nblk / nsplit;
        int64_t k = 0;
        for (int64_t j = 1; j < nth; j++)
            if (fin[j] < fin[k]) k = j;
        fin[k] += px * (2 * blocks + 1); /* in half blocks */
    }
    int64_t worst = 0;
    for (int64_t j = 0; j < nth; j++) worst = fin[j] > worst ? fin[j] : worst;
    return worst;
}

/* The pixel tile (at most *tp, at least 64 pixels or the whole grid) and the channel split
 * with the shortest makespan on nt (2 to 8) threads; ties go to fewer items. A tile of 196 pixels
 * (14 x 14) on 2 threads was cut into 64, 64, 64 and 4 pixels: one thread did twice the other's
 * work; a whole tile in two channel halves is even. */
static void tiling_plan(int64_t images, int64_t Pq, int64_t nblk, int nt, int64_t *tp,
                        int64_t *nsplit) {
    const int64_t tp0 = *tp, floor_tp = round16(Pq) < 64 ? round16(Pq) : 64;
    int64_t best = -1, best_items = 0;
    for (int64_t k = 0; k <= 2 * nt + 2; k++) {
        /* k == 0: the tile as chosen for the cache; k >= 1: the grid in k even tiles */
        const int64_t cand = k == 0 ? tp0 : round16(ceil_div(Pq, k));
        if (cand > tp0 || (cand < floor_tp && cand != tp0)) continue;
        for (int64_t ns = 1; ns <= 2 * nt && ns <= nblk; ns++) {
            const int64_t span = tiling_makespan(images, Pq, cand, nblk, ns, nt);
            const int64_t items = images * ceil_div(Pq, cand) * ns;
            if (best < 0 || span < best || (span == best && items < best_items)) {
                best = span;
                best_items = items;
                *tp = cand;
                *nsplit = ns;
            }
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
    /* the phase maps, then the tap table (8-byte aligned after them) */
    const int64_t nmaps = (p->sh + p->sw + 1) & ~INT64_C(1);
    int32_t *maps = ortnpu_scratch(S_OUT3, (size_t)nmaps * sizeof(int32_t) +
                                               (size_t)cx.K * sizeof(int64_t));
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
    cx.xp = pad_phases(p, x, G, qoff, &cx, nt);
    if (!cx.xp) {
        *err = ORTNPU_ENOMEM;
        return;
    }
    /* where tap k (weight order: channel of the group, ky, kx) starts in the phase planes of
     * the group's first channel: computed once, not per pixel tile (the divisions and modulos
     * by the strides were ~5 % of a 3x3 convolution) */
    int64_t *tapoff = (int64_t *)(void *)(maps + nmaps);
    {
        int64_t ci = 0, ky = 0, kx = 0;
        for (int64_t k = 0; k < cx.K; k++) {
            const int64_t ry = ky * p->dh, rx = kx * p->dw;
            const int64_t ph = cx.rmap[ry % p->sh] * cx.npx + cx.cmap[rx % p->sw];
            tapoff[k] = ((ci * cx.nph + ph) * cx.hph + ry / p->sh) * cx.wph + rx / p->sw;
            next_tap(p, &ci, &ky, &kx);
        }
    }
    const int64_t Pq = (p->oh - 1) * cx.wph + p->ow; /* grid pixels the tiles cover */
    /* pixel tile: the packed im2col tile (Kp x TP x 4 bytes) stays within ~128 KiB */
    int64_t tp = (INT64_C(128) * 1024 / (cx.Kp * 4)) & ~INT64_C(15);
    if (tp < 16) tp = 16;
    if (tp > 256) tp = 256;
    if (tp > round16(Pq)) tp = round16(Pq);
    /* several threads and few tiles: the pixel tile and the split of the output channels
     * whose items (image x tile x split) keep the threads evenly busy (tiling_plan) */
    const int64_t images = p->n * p->group;
    const int64_t coutg = p->cout / p->group, nblk = ceil_div(coutg, 4);
    int64_t nsplit = 1;
    if (nt > 1 && nt <= 8 && images * ceil_div(Pq, tp) < 4 * nt) {
        tiling_plan(images, Pq, nblk, nt, &tp, &nsplit);
    } else if (nt > 8 && images * ceil_div(Pq, tp) < 2 * nt) {
        /* many threads (a search would cost more than it saves): tiles down to 64 pixels,
         * then channel splits, until there are two items per thread */
        int64_t want = round16(ceil_div(Pq, ceil_div(2 * nt, images)));
        if (want < 64) want = 64;
        if (want < tp) tp = want;
        const int64_t base = images * ceil_div(Pq, tp);
        nsplit = base < 2 * nt ? ceil_div(2 * nt, base) : 1;
        if (nsplit > nblk) nsplit = nblk;
    }
    cx.TP = tp;
    const int64_t ntiles = ceil_div(Pq, cx.TP);
    const int64_t base_items = p->n * p->group * ntiles;
    const int64_t items = base_items * nsplit;
    /* tap groups per exact int32 block (acc_bits 64): each group sums G products of at most
     * max|value| * 128 */
    const int64_t vabs = G == 4 ? 255 : type_abs(p->xtype);
    const int64_t kb = o->acc_bits == 32 ? 0 : INT32_MAX / (G * vabs * 128);
    const int blocked = kb > 0 && kb < cx.Kp;
    const int64_t TP = cx.TP, Kp = cx.Kp, K2 = cx.K2;
    /* int16 tiles (G == 2) run output-channel blocks in chunks of CB: each 16-pixel slice of the
     * im2col tile (Kp x 64 bytes) serves every block of the chunk while it is hot, instead of
     * being read again from L2 for each block; the chunk's accumulators (CB x 4 x TP) stay
     * within ~64 KiB. (Splitting the taps into runs that fit L1, summed modulo 2^32, was
     * slower: 2.58 against 2.30 ms on 512 channels at 7 x 7.) */
    const int chunked = G == 2 && !blocked;
    /* few taps (1x1 convolutions of up to ~32 channels): the im2col tile (Kp x TP x 4 bytes)
     * stays in L1, so the slice-by-slice order buys nothing and its calls cost */
    const int v_in_l1 = Kp * TP * 4 <= 16 * 1024;
    int64_t CB = 1;
    if (chunked) {
        CB = INT64_C(4096) / TP;
        CB = CB < 1 ? 1 : (CB > nblk ? nblk : CB);
    }
    const int64_t xbytes = G == 4 ? 1 : 2; /* an element of the phase planes */

#pragma omp parallel num_threads(nt)
    {
        uint8_t *V = ortnpu_scratch(S_IN0, (size_t)(Kp * TP * 4));
        int32_t *acc = ortnpu_scratch(S_IN2, (size_t)(CB * 4 * TP) * sizeof(int32_t));
        int64_t *acc64 = blocked ? ortnpu_scratch(S_IN3, (size_t)(4 * TP) * sizeof(int64_t)) : NULL;
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
            const char *base = (const char *)cx.xp +
                               ((n * p->c + g * p->cg) * cx.nph * cx.hph * cx.wph + p0) * xbytes;
            for (int64_t k = 0; k < cx.K; k += G) {
                const void *src[4];
                for (int h = 0; h < G; h++)
                    src[h] = k + h < cx.K ? base + tapoff[k + h] * xbytes
                                          : conv_zeros; /* the weights are 0 there */
                if (G == 2)
                    I->interleave(src[0], src[1], (int16_t *)(void *)V + k * TP, tpc);
                else
                    I->quad_gather(src[0], src[1], src[2], src[3], V + k * TP, tpc);
            }
            int64_t b0 = split * nblk / nsplit, b1 = (split + 1) * nblk / nsplit;
            for (int64_t bc = b0; bc < b1; bc += CB) {
                const int64_t be = bc + CB < b1 ? bc + CB : b1;
                /* a last slice that keeps at most 8 columns (7x7 maps: 49 = 3 x 16 + 1) takes
                 * the 8-column tile where there is one */
                const int64_t narrow = I->bcast_tile8 && tpx % 16 && tpx % 16 <= 8 ? tpc - 16 : -1;
                for (int64_t col = 0; chunked && !v_in_l1 && col < tpc; col += 16)
                    for (int64_t blk = bc; blk < be; blk++) {
                        const int16_t *Ub = (const int16_t *)U + (g * coutg + blk * 4) * K2;
                        const int16_t *Vc = (const int16_t *)(const void *)V + 2 * col;
                        int32_t *Cb = acc + (blk - bc) * 4 * TP + col;
                        if (col == narrow)
                            I->bcast_tile8(Ub, K2, block_rows(coutg, blk), Vc, TP, 0, Kp, Cb, TP);
                        else
                            I->bcast_tile(Ub, K2, block_rows(coutg, blk), Vc, TP, 0, Kp, Cb, TP,
                                          1);
                    }
                /* the whole im2col tile fits L1: each block takes every column in one call */
                for (int64_t blk = bc; chunked && v_in_l1 && blk < be; blk++) {
                    const int16_t *Ub = (const int16_t *)U + (g * coutg + blk * 4) * K2;
                    const int16_t *V16 = (const int16_t *)(const void *)V;
                    int32_t *Cb = acc + (blk - bc) * 4 * TP;
                    const int R = block_rows(coutg, blk);
                    I->bcast_tile(Ub, K2, R, V16, TP, 0, Kp, Cb, TP,
                                  narrow >= 0 ? tpc / 16 - 1 : tpc / 16);
                    if (narrow >= 0)
                        I->bcast_tile8(Ub, K2, R, V16 + 2 * narrow, TP, 0, Kp, Cb + narrow, TP);
                }
                for (int64_t blk = bc; blk < be; blk++) {
                    int64_t c0 = g * coutg + blk * 4;
                    int R = block_rows(coutg, blk);
                    int32_t *accb = acc + (blk - bc) * 4 * TP;
                    const int wide = G == 4 && !blocked && I->wide_tile_u8;
                    for (int64_t col = 0; wide && col < tpc; col += 64) {
                        int nc = (int)((tpc - col) / 16 < 4 ? (tpc - col) / 16 : 4);
                        I->wide_tile_u8((const int8_t *)U + c0 * K2, K2, R, V + 4 * col, TP, Kp,
                                        accb + col, TP, nc);
                    }
                    for (int64_t col = 0; !wide && !chunked && col < tpc; col += 16) {
                        int64_t jstep = blocked ? kb : Kp;
                        if (blocked)
                            for (int r = 0; r < R; r++)
                                for (int c = 0; c < 16; c++) acc64[r * TP + col + c] = 0;
                        for (int64_t j0 = 0; j0 < Kp; j0 += jstep) {
                            int64_t j1 = j0 + jstep < Kp ? j0 + jstep : Kp;
                            int32_t tmp[4 * 16];
                            int32_t *dst = blocked ? tmp : accb + col;
                            int64_t ldc = blocked ? 16 : TP;
                            if (G == 2)
                                I->bcast_tile((const int16_t *)U + c0 * K2, K2, R,
                                              (const int16_t *)(const void *)V + 2 * col, TP,
                                              j0, j1, dst, ldc, 1);
                            else
                                I->bcast_tile_u8((const int8_t *)U + c0 * K2, K2, R,
                                                 V + 4 * col, TP, j0, j1, dst, ldc);
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
                                accb + r * TP, p0, tpx, cx.wph, p->ow, (uint32_t)corr[c], mult[pi],
                                shift[pi], o->y_zp, o->act_min, o->act_max,
                                (char *)y + (n * p->cout + c) * cx.P * es, o->otype);
                            continue;
                        }
                        if (cx.wph != p->ow)
                            cnt = blocked
                                      ? compact64(acc64 + r * TP, p0, tpx, cx.wph, p->ow, &first)
                                      : compact32(accb + r * TP, p0, tpx, cx.wph, p->ow, &first);
                        if (cnt > 0)
                            finish_row(I, blocked ? NULL : accb + r * TP,
                                       blocked ? acc64 + r * TP : NULL, cnt, corr[c], mult + pi,
                                       shift + pi, o, y, (n * p->cout + c) * cx.P + first);
                    }
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
        int16_t *plane = ortnpu_scratch(S_IN0, (size_t)(hp * wp + 2 * p->ow + 64) * sizeof(int16_t));
        uint32_t *acc = ortnpu_scratch(S_IN1, (size_t)(P + 16) * sizeof(uint32_t));
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

#if ORTNPU_HAVE_SSE2
/* d[k * ldd + j] = s[j * lds + k] for an 8x8 block of int16 (unaligned rows). */
static inline void transpose8x8_i16(const int16_t *s, int64_t lds, int16_t *d, int64_t ldd) {
    __m128i a[8], t[8], u[8];
    for (int j = 0; j < 8; j++) a[j] = _mm_loadu_si128((const __m128i *)(s + j * lds));
    for (int j = 0; j < 4; j++) {
        t[2 * j] = _mm_unpacklo_epi16(a[2 * j], a[2 * j + 1]);
        t[2 * j + 1] = _mm_unpackhi_epi16(a[2 * j], a[2 * j + 1]);
    }
    /* t[0]: rows 0,1 of columns 0-3; t[1]: rows 0,1 of columns 4-7; t[2], t[3]: rows 2,3 ... */
    u[0] = _mm_unpacklo_epi32(t[0], t[2]); /* rows 0-3, columns 0, 1 */
    u[1] = _mm_unpackhi_epi32(t[0], t[2]); /* columns 2, 3 */
    u[2] = _mm_unpacklo_epi32(t[1], t[3]); /* columns 4, 5 */
    u[3] = _mm_unpackhi_epi32(t[1], t[3]); /* columns 6, 7 */
    u[4] = _mm_unpacklo_epi32(t[4], t[6]); /* rows 4-7 */
    u[5] = _mm_unpackhi_epi32(t[4], t[6]);
    u[6] = _mm_unpacklo_epi32(t[5], t[7]);
    u[7] = _mm_unpackhi_epi32(t[5], t[7]);
    for (int j = 0; j < 4; j++) {
        _mm_storeu_si128((__m128i *)(d + (2 * j) * ldd), _mm_unpacklo_epi64(u[j], u[j + 4]));
        _mm_storeu_si128((__m128i *)(d + (2 * j + 1) * ldd), _mm_unpackhi_epi64(u[j], u[j + 4]));
    }
}

/* d[k * ldd + j] = s[j * lds + k] for a 4x4 block of int32 (unaligned rows). */
static inline void transpose4x4_i32(const int32_t *s, int64_t lds, int32_t *d, int64_t ldd) {
    __m128i r0 = _mm_loadu_si128((const __m128i *)s);
    __m128i r1 = _mm_loadu_si128((const __m128i *)(s + lds));
    __m128i r2 = _mm_loadu_si128((const __m128i *)(s + 2 * lds));
    __m128i r3 = _mm_loadu_si128((const __m128i *)(s + 3 * lds));
    __m128i t0 = _mm_unpacklo_epi32(r0, r1), t1 = _mm_unpacklo_epi32(r2, r3);
    __m128i t2 = _mm_unpackhi_epi32(r0, r1), t3 = _mm_unpackhi_epi32(r2, r3);
    _mm_storeu_si128((__m128i *)d, _mm_unpacklo_epi64(t0, t1));
    _mm_storeu_si128((__m128i *)(d + ldd), _mm_unpackhi_epi64(t0, t1));
    _mm_storeu_si128((__m128i *)(d + 2 * ldd), _mm_unpacklo_epi64(t2, t3));
    _mm_storeu_si128((__m128i *)(d + 3 * ldd), _mm_unpackhi_epi64(t2, t3));
}
#endif

/* Depthwise convolution, depth multiplier 1, 8-bit input, 32-bit accumulator, channels last:
 * the inner loop runs across channels (contiguous after a transpose), which keeps the vector
 * lanes full on small maps where the per-channel rows of conv_depthwise are a few pixels wide.
 * The padding holds the zero point as on the other paths (corr = bias - x_zp * sum w), and the
 * wrapped int32 sum is the same modulo 2^32 whatever the order, hence the same bits. Three
 * phases, each split over the threads: the channels-last int16 copy (by 16-channel blocks),
 * the sums (by pairs of output pixels), the epilogue (by 16-channel blocks). */
static void conv_depthwise_cl(const ortnpu_isa_t *I, const ortnpu_conv_t *p,
                              const ortnpu_out_t *o, const void *x, const int8_t *w,
                              const uint64_t *corr, const int32_t *mult, const int32_t *shift,
                              void *y, int nt, int *err) {
    const int64_t C = p->c, P = p->oh * p->ow, taps = p->kh * p->kw;
    const int64_t hp = p->h + p->pt + p->pb, wp = p->w + p->pl + p->pr;
    int16_t *xt = ortnpu_scratch(S_OUT2, (size_t)(hp * wp * C) * sizeof(int16_t));
    int16_t *wt = ortnpu_scratch(S_OUT3, (size_t)(taps * C) * sizeof(int16_t));
    uint32_t *acc = ortnpu_scratch(S_OUT4, (size_t)(P * C) * sizeof(uint32_t));
    int64_t *off = ortnpu_scratch(S_OUT5, (size_t)taps * sizeof(int64_t));
    if (!xt || !wt || !acc || !off) {
        *err = ORTNPU_ENOMEM;
        return;
    }
    for (int64_t c = 0; c < C; c++)
        for (int64_t t = 0; t < taps; t++) wt[t * C + c] = w[c * taps + t];
    for (int64_t ky = 0; ky < p->kh; ky++)
        for (int64_t kx = 0; kx < p->kw; kx++)
            off[ky * p->kw + kx] = (ky * p->dh * wp + kx * p->dw) * C;
    const int16_t zp = (int16_t)p->x_zp;
    const int64_t HW = p->h * p->w;
    /* the padding of the channels-last copy holds the zero point (every tap is read, and corr
     * = bias - x_zp * sum w accounts for it); the interior is overwritten for every sample */
    fill_i16(xt, zp, (p->pt * wp + p->pl) * C);
    for (int64_t iy = 0; iy + 1 < p->h; iy++)
        fill_i16(xt + ((iy + p->pt) * wp + p->pl + p->w) * C, zp, (p->pr + p->pl) * C);
    fill_i16(xt + ((p->h - 1 + p->pt) * wp + p->pl + p->w) * C, zp,
             (p->pr + p->pb * wp) * C);
    /* one parallel region per call, three phases split over the threads (the implicit barrier
     * of each omp for separates them) */
#pragma omp parallel num_threads(nt)
    {
        int16_t *plane = ortnpu_scratch(S_IN0, (size_t)(16 * HW) * sizeof(int16_t));
        int32_t *rows = ortnpu_scratch(S_IN1, (size_t)(16 * P) * sizeof(int32_t));
        const int ok = plane && rows;
        if (!ok) {
#pragma omp atomic write
            *err = ORTNPU_ENOMEM;
        }
        const int64_t half_w = (p->ow + 1) / 2, pairs = p->oh * half_w;
        for (int64_t n = 0; n < p->n; n++) {
            /* the copy, by blocks of 16 channels: 16 input planes widened to int16, then
             * written 16 contiguous values per pixel */
#pragma omp for schedule(static)
            for (int64_t c0 = 0; c0 < C; c0 += 16) {
                if (!ok) continue;
                const int64_t cb = C - c0 < 16 ? C - c0 : 16;
                for (int64_t c = 0; c < cb; c++)
                    load_i16(plane + c * HW, x, p->xtype, (n * C + c0 + c) * HW, 1, HW);
                for (int64_t iy = 0; iy < p->h; iy++) {
                    int64_t ix = 0;
#if ORTNPU_HAVE_SSE2
                    /* 8 pixels x 8 channels at a time: an 8x8 int16 transpose */
                    for (; cb == 16 && ix + 8 <= p->w; ix += 8)
                        for (int half = 0; half < 2; half++)
                            transpose8x8_i16(plane + half * 8 * HW + iy * p->w + ix, HW,
                                             xt + ((iy + p->pt) * wp + p->pl + ix) * C + c0 +
                                                 8 * half,
                                             C);
#endif
                    for (; ix < p->w; ix++) {
                        int16_t *d = xt + ((iy + p->pt) * wp + p->pl + ix) * C + c0;
                        const int16_t *sr = plane + iy * p->w + ix;
                        for (int64_t c = 0; c < cb; c++) d[c] = sr[c * HW];
                    }
                }
            }
            /* the sums, output pixels two at a time along each row (they share the weight
             * loads) */
#pragma omp for schedule(static)
            for (int64_t k = 0; k < pairs; k++) {
                if (!ok) continue;
                const int64_t oy = k / half_w, ox = 2 * (k % half_w);
                I->dw_cl_pixels(acc + (oy * p->ow + ox) * C,
                                xt + (oy * p->sh * wp + ox * p->sw) * C, p->sw * C,
                                ox + 1 < p->ow ? 2 : 1, off, wt, taps, C);
            }
            /* the epilogue, back to channel rows by blocks of 16 channels (64 contiguous bytes
             * per pixel) */
#pragma omp for schedule(static)
            for (int64_t c0 = 0; c0 < C; c0 += 16) {
                if (!ok) continue;
                const int64_t cb = C - c0 < 16 ? C - c0 : 16;
                int64_t q4 = 0, c4 = 0;
#if ORTNPU_HAVE_SSE2
                /* 4 pixels x 4 channels at a time: a 4x4 int32 transpose */
                q4 = P & ~INT64_C(3);
                c4 = cb & ~INT64_C(3);
                for (int64_t q = 0; q < q4; q += 4)
                    for (int64_t c = 0; c < c4; c += 4)
                        transpose4x4_i32((const int32_t *)acc + q * C + c0 + c, C,
                                         rows + c * P + q, P);
#endif
                for (int64_t q = 0; q < P; q++)
                    for (int64_t c = q < q4 ? c4 : 0; c < cb; c++)
                        rows[c * P + q] = (int32_t)acc[q * C + c0 + c];
                for (int64_t c = 0; c < cb; c++) {
                    const int64_t pi = p->n_params == 1 ? 0 : c0 + c;
                    finish_row(I, rows + c * P, NULL, P, corr[c0 + c], mult + pi, shift + pi, o,
                               y, (n * C + c0 + c) * P);
                }
            }
        }
    }
}

/* The byte-permute depthwise path (AVX-512 VBMI + VNNI): each channel's input plane is copied
 * once, zero-point padded, as bytes (int8 values plus 128, so that VPDPBUSD's unsigned operand
 * holds them; the correction takes 128 * sum w back out). A vector holds up to 16 outputs
 * whose windows lie within 64 bytes of the plane: up to 16 of one row, or m whole rows of a
 * narrow map (7x7: two rows). Per plane row it reads, one 64-byte load and one VPERMB per
 * quad of taps gather every lane's four window bytes, and one VPDPBUSD adds them times the
 * four weights; vectors of neighbouring rows share those loads (dw_quads). Same wrapped int32
 * sums as the other paths, in another order. */
static int dw_quads_ok(const ortnpu_isa_t *I, const ortnpu_conv_t *p, const ortnpu_out_t *o) {
    const int64_t taps = p->kh * p->kw, hp = p->h + p->pt + p->pb, wp = p->w + p->pl + p->pr;
    return I->dw_quads && p->cg == 1 && p->group > 1 && p->xtype != ORTNPU_T_I16 &&
           (o->acc_bits == 32 || taps * 255 * 128 <= INT32_MAX) && p->kw <= 16 &&
           p->dh == 1 && (p->kw - 1) * p->dw + 1 <= 64 && hp * wp <= INT32_MAX;
}

/* Everything of a dw_quads call but the channel (x, wq): the geometry, the vector shape (m
 * rows, or l outputs of a row) and its index patterns. */
static void dw_quads_shape(const ortnpu_conv_t *p, ortnpu_dwq_t *c, uint8_t *patterns) {
    const int64_t wp = p->w + p->pl + p->pr, reach = (p->kw - 1) * p->dw;
    c->h = p->h, c->w = p->w, c->wp = wp, c->pt = p->pt, c->pl = p->pl;
    c->sh = p->sh, c->sw = p->sw, c->oh = p->oh, c->ow = p->ow, c->kh = (int)p->kh;
    c->flip = p->xtype == ORTNPU_T_I8 ? 128 : 0;   /* as the GEMM pack's qoff */
    c->patterns = patterns;
    c->nq = (int)ceil_div(p->kw, 4);
    c->m = 1;
    for (int64_t m = 16 / p->ow; m >= 2; m--)   /* narrow maps: whole rows per vector */
        if ((m - 1) * p->sh * wp + (p->ow - 1) * p->sw + reach + 1 <= 64) {
            c->m = (int)m;
            break;
        }
    const int64_t fit = (64 - reach - 1) / p->sw + 1;
    c->l = (int)(c->m > 1 ? c->m * p->ow : (p->ow < 16 ? (p->ow < fit ? p->ow : fit)
                                                          : (16 < fit ? 16 : fit)));
    for (int j = 0; j < 16; j++) {
        int64_t base = 0;   /* lanes past the vector read the window's first byte (masked) */
        if (c->m == 1 && j < c->l)
            base = j * p->sw;
        else if (c->m > 1 && j < c->l)
            base = (j / p->ow) * p->sh * wp + (j % p->ow) * p->sw;
        for (int k = 0; k < 4 * c->nq; k++)   /* taps past kw meet zero weights */
            patterns[(k / 4) * 64 + 4 * j + k % 4] =
                (uint8_t)(k < p->kw ? base + k * p->dw : base);
    }
}

static void conv_depthwise_quads(const ortnpu_isa_t *I, const ortnpu_conv_t *p,
                                 const ortnpu_out_t *o, const void *x, const int8_t *w,
                                 const uint64_t *corr, const int32_t *mult,
                                 const int32_t *shift, void *y, int nt, int *err) {
    const int64_t hp = p->h + p->pt + p->pb, wp = p->w + p->pl + p->pr;
    const int64_t mdw = p->cout / p->group, P = p->oh * p->ow, taps = p->kh * p->kw;
    const int64_t items = p->n * p->cout, chunk = P >= 2048 ? 1 : 2048 / P;
    uint8_t patterns[4 * 64];
    ortnpu_dwq_t shape = {0};
    dw_quads_shape(p, &shape, patterns);
    const int qoff = shape.flip;   /* int8 input: the copy XORs 128, i.e. adds 128 */
    const uint8_t pad = (uint8_t)(p->x_zp + qoff);
#pragma omp parallel num_threads(nt)
    {
        /* slack: a vector's window load reaches 64 bytes past the last row's start */
        uint8_t *plane = ortnpu_scratch(S_IN0, (size_t)(hp * wp + 128));
        uint32_t *acc = ortnpu_scratch(S_IN1, (size_t)(P + 16) * sizeof(uint32_t));
        int32_t *wq = ortnpu_scratch(S_IN2, (size_t)(p->kh * shape.nq) * sizeof(int32_t));
        const int ok = plane && acc && wq;
        if (!ok) {
#pragma omp atomic write
            *err = ORTNPU_ENOMEM;
        } else {
            /* the padding is the same for every channel: filled once, the interior rewritten */
            memset(plane, pad, (size_t)(hp * wp + 128));
        }
        int64_t last_src = -1;
        /* small maps: channels in chunks of about 2 k outputs (one schedule step each) */
#pragma omp for schedule(dynamic, 1)
        for (int64_t ch0 = 0; ch0 < items; ch0 += chunk) {
            for (int64_t it = ch0; it < items && it < ch0 + chunk; it++) {
                if (!ok) continue;
                const int64_t n = it / p->cout, co = it % p->cout, ci = co / mdw;
                const int64_t src = (n * p->c + ci) * p->h * p->w;
                const int8_t *wk = w + co * taps;
                int64_t sum = 0;
                for (int64_t ky = 0; ky < p->kh; ky++)
                    for (int q = 0; q < shape.nq; q++) {
                        uint32_t v = 0;
                        for (int t = 0; t < 4; t++) {
                            const int64_t kx = 4 * q + t;
                            const int8_t wv = kx < p->kw ? wk[ky * p->kw + kx] : 0;
                            v |= (uint32_t)(uint8_t)wv << (8 * t);
                            sum += wv;
                        }
                        wq[ky * shape.nq + q] = (int32_t)v;
                    }
                ortnpu_dwq_t ch = shape;
                /* a depth multiplier > 1 reads one plane several times: copied once */
                ch.x = src != last_src ? (const uint8_t *)x + src : NULL;
                ch.wq = wq;
                last_src = src;
                I->dw_quads(&ch, plane, acc);
                const int64_t pi = p->n_params == 1 ? 0 : co;
                finish_row(I, (const int32_t *)acc, NULL, P, corr[co] - (uint64_t)(qoff * sum),
                           mult + pi, shift + pi, o, y, (n * p->cout + co) * P);
            }
        }
    }
}

/* Depthwise convolution whose window is the whole unpadded input plane (a global average pool
 * lowered to a convolution: MobileNetV2's last pool, 1280 channels of 7x7): one output per
 * channel, the dot product of its plane with its weights, then one epilogue call over all the
 * channels of a sample. The other depthwise paths paid a plane copy (or a transpose) and a
 * one-value epilogue per channel: 0.10 ms for 63 k products. Same wrapped int32 sums. */
static int dw_is_global(const ortnpu_conv_t *p, const ortnpu_out_t *o) {
    return o->acc_bits == 32 && p->cout == p->c && p->oh == 1 && p->ow == 1 &&
           p->kh == p->h && p->kw == p->w && !p->pt && !p->pl && !p->pb && !p->pr;
}

static void conv_depthwise_global(const ortnpu_isa_t *I, const ortnpu_conv_t *p,
                                  const ortnpu_out_t *o, const void *x, const int8_t *w,
                                  const uint64_t *corr, const int32_t *mult,
                                  const int32_t *shift, void *y, int nt, int *err) {
    const int64_t C = p->c, HW = p->h * p->w;
    /* acc, then (per-channel parameters with the lanes epilogue) the int32 corrections */
    int32_t *acc = ortnpu_scratch(S_OUT4, (size_t)(2 * C) * sizeof(int32_t));
    int16_t *row = ortnpu_scratch(S_OUT5, (size_t)HW * sizeof(int16_t));
    if (!acc || !row) {
        *err = ORTNPU_ENOMEM;
        return;
    }
    const int lanes = p->n_params != 1 && I->finish32_double_lanes && o->rule == ORTNPU_R_DOUBLE;
    int32_t *corr32 = acc + C;
    for (int64_t c = 0; lanes && c < C; c++) corr32[c] = (int32_t)(uint32_t)corr[c];
    const int es = o->otype == ORTNPU_T_I16 ? 2 : 1;
    for (int64_t n = 0; n < p->n; n++) {
        for (int64_t c = 0; c < C; c++) {
            load_i16(row, x, p->xtype, (n * C + c) * HW, 1, HW);
            const int8_t *wc = w + c * HW;
            uint32_t s = 0;
            for (int64_t j = 0; j < HW; j++) s += (uint32_t)((int32_t)row[j] * (int32_t)wc[j]);
            acc[c] = (int32_t)(lanes ? s : s + (uint32_t)corr[c]);
        }
        char *yn = (char *)y + n * C * es;
        if (lanes)
            I->finish32_double_lanes(acc, C, corr32, 0, mult, shift, o->y_zp, o->act_min,
                                     o->act_max, yn, o->otype);
        else if (p->n_params == 1)
            finish_row(I, acc, NULL, C, 0, mult, shift, o, y, n * C);
        else
            for (int64_t c = 0; c < C; c++)
                finish_row(I, acc + c, NULL, 1, 0, mult + c, shift + c, o, y, n * C + c);
    }
    (void)nt; /* 63 k products: a parallel region would cost more than it saves */
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
    pk->U = pk->depthwise ? NULL : (owned ? malloc(ubytes) : ortnpu_scratch(S_OUT0, ubytes));
    pk->corr = owned ? malloc(cbytes) : ortnpu_scratch(S_OUT1, cbytes);
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
    /* a window over the whole plane (a global pool) is one dot product per channel; maps of
     * fewer than 64 outputs run channels-last (where the per-channel work of the byte-permute
     * path weighs most: MobileNetV2's 7x7 layers 44 against 62 us), larger ones by byte
     * permutes where the CPU has them, else channels-last below ~20x20 outputs and by rows
     * above; ORTNPU_DW_ROWS=1 forces the row kernel (the tests compare the paths with the
     * reference) */
    const int cl = p->cout == p->c && p->xtype != ORTNPU_T_I16 && o->acc_bits == 32 &&
                   !force_dw_rows();
    const int quads = dw_quads_ok(I, p, o) && !force_dw_rows();
    if (pk->depthwise && dw_is_global(p, o) && !force_dw_rows())
        conv_depthwise_global(I, p, o, x, w, pk->corr, mult, shift, y, nt, &err);
    else if (pk->depthwise && cl && (p->oh * p->ow < 64 || (!quads && p->oh * p->ow < 400)))
        conv_depthwise_cl(I, p, o, x, w, pk->corr, mult, shift, y, nt, &err);
    else if (pk->depthwise && quads)
        conv_depthwise_quads(I, p, o, x, w, pk->corr, mult, shift, y, nt, &err);
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
    const ortnpu_isa_t *I = ortnpu_pick_isa(isa);
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
    if (conv_pack_fill(ortnpu_pick_isa(isa), p, o, w, bias, pk, 1) != ORTNPU_OK) {
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
    return conv_run(ortnpu_pick_isa(pk->isa), pk, p, o, x, w, mult, shift, y, threads_of(nthreads));
}

/* ============================================ FullyConnected as a rows GEMM (VNNI) */

/* FullyConnected on 8-bit input with the output channels in the vector lanes: the
 * convolutions' wide u8 x s8 tile with the roles swapped, U = the activation rows as signed
 * bytes (broadcast, four at a time), V = the weights as unsigned bytes w + 128 in quads
 * [K/4][n16][4]. Every lane holds a useful output channel however few the rows (a 17-token
 * transformer row block filled a third of the 64-pixel conv tile), no transposes, and the
 * epilogue writes [rows, n] directly. The sums are integer identities modulo 2^32 (the int32
 * accumulator, acc_bits 32), with xs the activation as a signed byte (x, or x - 128 for
 * uint8: off = 0 or 128):
 *     sum (x - zp) * w = sum xs * (w + 128) - 128 * sum xs + (off - zp) * sum w,
 * so corr[o] = bias[o] + (off - zp) * sum w[o] per channel, rowadd[r] = -128 * sum xs[r] per
 * row.
 * Without VNNI the same roles run on the int16 tile (bcast_tile, vpmaddwd on AVX2): U = the
 * rows as int16 x - zp in pairs, V = the weights as int16 pairs, each block of 16 channels
 * contiguous ([n16/16][K/2][16][2]; with a [K/2][n16][2] layout each step of a tile jumps a
 * whole weight row), so corr[o] = bias[o] and rowadd = 0 (the 17-row ViT block ran as the
 * 1x1-convolution tile, 16 pixels wide: 17 rows filled two tiles, 15-17 GMAC/s on AVX2).
 * Built only for acc_bits 32, tflite_double and 8-bit input; ortnpu_fc_pack_new returns NULL
 * otherwise and the caller keeps its other path. */
struct ortnpu_fc_pack {
    int64_t k, n, kq, n16;
    int32_t xtype;
    int64_t x_zp;
    ortnpu_out_t o;
    uint8_t *V;       /* VNNI: [ceil(n / 64)][kq][64][4]: each block of 64 channels whole */
    int16_t *W16;     /* otherwise: [n16 / 16][kp][16][2] with kp = ceil(k / 2) */
    int32_t *corr;    /* [n16] each: correction, multiplier, shift per channel */
    int32_t *mult;
    int32_t *shift;
    int isa;
};

ortnpu_fc_pack_t *ortnpu_fc_pack_new(int64_t k, int64_t n, int32_t xtype, int64_t x_zp,
                                     const int8_t *w, const int64_t *bias, const int32_t *mult,
                                     const int32_t *shift, int32_t n_params,
                                     const ortnpu_out_t *o, int isa) {
    const ortnpu_isa_t *I = ortnpu_pick_isa(isa);
    if (!I->finish32_double_lanes || !out_ok(o) || o->acc_bits != 32 ||
        o->rule != ORTNPU_R_DOUBLE || (xtype != ORTNPU_T_I8 && xtype != ORTNPU_T_U8) ||
        k < 1 || n < 1 || k > (INT64_C(1) << 24) || n > (INT64_C(1) << 24) ||
        (n_params != 1 && n_params != n) || x_zp < type_min(xtype) || x_zp > type_max(xtype) ||
        !params_ok(mult, shift, n_params, o->rule))
        return NULL;
    ortnpu_fc_pack_t *pk = calloc(1, sizeof(*pk));
    if (!pk) return NULL;
    pk->k = k;
    pk->n = n;
    pk->kq = ceil_div(k, 4);
    pk->n16 = round16(n);
    pk->xtype = xtype;
    pk->x_zp = x_zp;
    pk->o = *o;
    pk->isa = isa;
    pk->corr = calloc((size_t)(3 * pk->n16), sizeof(int32_t));
    if (!pk->corr) {
        ortnpu_fc_pack_free(pk);
        return NULL;
    }
    pk->mult = pk->corr + pk->n16;
    pk->shift = pk->mult + pk->n16;
    if (!I->wide_tile_u8) { /* the int16 tile: x - zp in the rows, the bias alone corrects */
        const int64_t kp = ceil_div(k, 2);
        pk->W16 = calloc((size_t)(kp * pk->n16 * 2), sizeof(int16_t)); /* padding: 0 */
        if (!pk->W16) {
            ortnpu_fc_pack_free(pk);
            return NULL;
        }
        for (int64_t c = 0; c < n; c++) {
            for (int64_t j = 0; j < k; j++)
                pk->W16[(((c / 16) * kp + j / 2) * 16 + c % 16) * 2 + j % 2] = w[c * k + j];
            pk->corr[c] = s32((uint32_t)(uint64_t)bias[c]);
            pk->mult[c] = mult[n_params == 1 ? 0 : c];
            pk->shift[c] = shift[n_params == 1 ? 0 : c];
        }
        return pk;
    }
    /* a block of 64 channels is one contiguous run over K: the tile walks it in order. Laid
     * out [kq][n16][4], consecutive K quads of a block were n16 * 4 bytes apart (6 KB for a
     * ViT-S MLP), which mapped them to a few L1 sets: the tile ran from L2 at 40 % of peak */
    const int64_t nblk = ceil_div(n, 64);
    pk->V = calloc((size_t)(nblk * pk->kq * 64 * 4), 1);
    if (!pk->V) {
        ortnpu_fc_pack_free(pk);
        return NULL;
    }
    const int64_t off = xtype == ORTNPU_T_U8 ? 128 : 0;
    for (int64_t c = 0; c < n; c++) {
        int64_t s = 0;
        for (int64_t j = 0; j < k; j++) {
            s += w[c * k + j];
            pk->V[(((c / 64) * pk->kq + j / 4) * 64 + c % 64) * 4 + j % 4] =
                (uint8_t)(w[c * k + j] + 128);
        }
        /* K padding: xs is 0 there, so its weight byte does not matter (left 0) */
        pk->corr[c] = s32((uint32_t)((uint64_t)bias[c] + (uint64_t)((off - x_zp) * s)));
        pk->mult[c] = mult[n_params == 1 ? 0 : c];
        pk->shift[c] = shift[n_params == 1 ? 0 : c];
    }
    return pk;
}

void ortnpu_fc_pack_free(ortnpu_fc_pack_t *pk) {
    if (!pk) return;
    free(pk->V);
    free(pk->W16);
    free(pk->corr);
    free(pk);
}

/* The int16 rows GEMM (no VNNI): blocks of RB rows (their int16 copy stays in L1/L2) times
 * blocks of 16 channels, parallel over both; each tile is R <= 4 rows x 16 channels. */
static int fc_packed_i16(const ortnpu_isa_t *I, const ortnpu_fc_pack_t *pk, int64_t rows,
                         const void *x, void *y, int nthreads) {
    const int64_t k = pk->k, n = pk->n, n16 = pk->n16, kp = ceil_div(k, 2), k2 = 2 * kp;
    int16_t *X = ortnpu_scratch(S_OUT4, (size_t)(rows * k2) * sizeof(int16_t));
    if (!X) return ORTNPU_ENOMEM;
    for (int64_t r = 0; r < rows; r++) { /* x - zp fits int16 for 8-bit x */
        int16_t *d = X + r * k2;
        load_i16(d, x, pk->xtype, r * k, 1, k);
        for (int64_t j = 0; j < k; j++) d[j] = (int16_t)(d[j] - pk->x_zp);
        if (k2 != k) d[k] = 0;
    }
    const int64_t RB = 32, nrb = ceil_div(rows, RB), ncb = n16 / 16, items = nrb * ncb;
    const int nt = threads_of(nthreads) < items ? threads_of(nthreads) : (int)items;
    const int es = pk->o.otype == ORTNPU_T_I16 ? 2 : 1;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t it = 0; it < items; it++) {
        const int64_t rb = it / ncb, c0 = 16 * (it % ncb);
        const int64_t cn = n - c0 < 16 ? n - c0 : 16;
        const int64_t rend = (rb + 1) * RB < rows ? (rb + 1) * RB : rows;
        int32_t acc[4 * 16];
        for (int64_t r0 = rb * RB; r0 < rend; r0 += 4) {
            const int R = (int)(rend - r0 < 4 ? rend - r0 : 4);
            I->bcast_tile(X + r0 * k2, k2, R, pk->W16 + c0 * k2, 16, 0, kp, acc, 16, 1);
            for (int r = 0; r < R; r++)
                I->finish32_double_lanes(acc + 16 * r, cn, pk->corr + c0, 0, pk->mult + c0,
                                         pk->shift + c0, pk->o.y_zp, pk->o.act_min,
                                         pk->o.act_max, (char *)y + ((r0 + r) * n + c0) * es,
                                         pk->o.otype);
        }
    }
    return ORTNPU_OK;
}

int ortnpu_fc_packed(const ortnpu_fc_pack_t *pk, int64_t rows, const void *x, void *y,
                     int nthreads) {
    if (!pk || rows < 0) return ORTNPU_EBADARG;
    if (rows == 0) return ORTNPU_OK;
    const ortnpu_isa_t *I = ortnpu_pick_isa(pk->isa);
    if (!I->finish32_double_lanes || (pk->W16 ? I->wide_tile_u8 != NULL : !I->wide_tile_u8))
        return ORTNPU_EBADARG;   /* packed for another instruction set */
    if (pk->W16) return fc_packed_i16(I, pk, rows, x, y, nthreads);
    const int64_t k = pk->k, n = pk->n, k4 = 4 * pk->kq, n16 = pk->n16;
    /* the rows as signed bytes, K padded to quads with 0 (int8 input with K a multiple of
     * four is read in place) */
    const int8_t *U = x;
    if (pk->xtype == ORTNPU_T_U8 || k4 != k) {
        int8_t *xs = ortnpu_scratch(S_OUT4, (size_t)(rows * k4));
        if (!xs) return ORTNPU_ENOMEM;
        const uint8_t flip = pk->xtype == ORTNPU_T_U8 ? 0x80u : 0u;
        for (int64_t r = 0; r < rows; r++) {
            const uint8_t *src = (const uint8_t *)x + r * k;
            uint8_t *dst = (uint8_t *)xs + r * k4;
            for (int64_t j = 0; j < k; j++) dst[j] = src[j] ^ flip;
            for (int64_t j = k; j < k4; j++) dst[j] = 0;
        }
        U = xs;
    }
    int32_t *rowadd = ortnpu_scratch(S_OUT5, (size_t)rows * sizeof(int32_t));
    if (!rowadd) return ORTNPU_ENOMEM;
    for (int64_t r = 0; r < rows; r++) {
        int64_t s = 0;
        for (int64_t j = 0; j < k4; j++) s += U[r * k4 + j];
        rowadd[r] = s32((uint32_t)(uint64_t)(-128 * s));
    }
    const int64_t nblk = ceil_div(n16, 64);
    const int nt = threads_of(nthreads) < nblk ? threads_of(nthreads) : (int)nblk;
    const int es = pk->o.otype == ORTNPU_T_I16 ? 2 : 1;
    int err = ORTNPU_OK;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int32_t *acc = ortnpu_scratch(S_IN2, (size_t)(4 * 64) * sizeof(int32_t));
        if (!acc) {
#pragma omp atomic write
            err = ORTNPU_ENOMEM;
        }
#pragma omp for schedule(static)
        for (int64_t b = 0; b < nblk; b++) {
            if (!acc) continue;
            const int64_t c0 = 64 * b, cn = n - c0 < 64 ? n - c0 : 64;
            const int nc = (int)ceil_div(cn, 16);
            for (int64_t r0 = 0; r0 < rows; r0 += 4) {
                const int R = (int)(rows - r0 < 4 ? rows - r0 : 4);
                I->wide_tile_u8(U + r0 * k4, k4, R, pk->V + b * pk->kq * 256, 64, pk->kq, acc,
                                64, nc);
                for (int r = 0; r < R; r++)
                    I->finish32_double_lanes(acc + 64 * r, cn, pk->corr + c0, rowadd[r0 + r],
                                             pk->mult + c0, pk->shift + c0, pk->o.y_zp,
                                             pk->o.act_min, pk->o.act_max,
                                             (char *)y + ((r0 + r) * n + c0) * es, pk->o.otype);
            }
        }
    }
    return err;
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
    const ortnpu_isa_t *I = ortnpu_pick_isa(isa);
    const int nt = threads_of(nthreads);
    const int64_t k16 = round16(k);
    int16_t *X = ortnpu_scratch(S_OUT0, (size_t)(rows * k16 + 1) * sizeof(int16_t));
    uint64_t *corr = ortnpu_scratch(S_OUT1, (size_t)n * sizeof(uint64_t));
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
    const ortnpu_isa_t *I = ortnpu_pick_isa(isa);
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
            /* rows widened by type outside the loops (a type switch per element took most of
             * an attention MatMul: 17 x 64 by 64 x 17 per head), then the zero point off */
            for (int64_t i = 0; i < m; i++) {
                int16_t *ui = u + i * K2;
                load_i16(ui, a, atype, a_off[bi] + i * k, 1, k);
                for (int64_t kk = 0; kk < k; kk++) ui[kk] = (int16_t)(ui[kk] - a_zp);
                if (K2 > k) ui[k] = 0;
            }
            for (int64_t j = 0; j < Kp; j++) {
                for (int h = 0; h < 2; h++) {
                    int16_t *row = h ? r1 : r0;
                    int64_t kk = 2 * j + h;
                    if (kk >= k) {
                        fill_i16(row, 0, np16);
                        continue;
                    }
                    load_i16(row, b, btype, b_off[bi] + kk * n, 1, n);
                    for (int64_t c = 0; c < n; c++) row[c] = (int16_t)(row[c] - b_zp);
                    fill_i16(row + n, 0, np16 - n);
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
                    I->bcast_tile(u, K2, R, v + 2 * col, np16, 0, Kp, acc + col, np16, 1);
                } else {
                    for (int r = 0; r < R; r++)
                        for (int c = 0; c < 16; c++) acc64[r * np16 + col + c] = 0;
                    for (int64_t j0 = 0; j0 < Kp; j0 += kb) {
                        int64_t j1 = j0 + kb < Kp ? j0 + kb : Kp;
                        int32_t tmp[64];
                        I->bcast_tile(u, K2, R, v + 2 * col, np16, j0, j1, tmp, 16, 1);
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
