/* ortnpu compiled programs: a fused NPU subgraph run entirely in C.
 *
 * A program is the list of layers of one fused subgraph (ortnpu/runtime/native_program.py
 * builds it), with private copies of every constant and the sizes of its intermediate tensors
 * for one sample. Running it walks the layers for each sample of the batch, calling the same
 * kernels as the per-op path (kernels_*.c), so the numbers are those of the layers one by one.
 *
 * Memory: intermediates live in an arena (offsets planned in Python so that tensors that are
 * never alive together share bytes). Arenas are allocated on the first run and then reused: a
 * small free list serves concurrent runs of the same program from several threads, and the
 * samples of a batch that run in parallel (one per thread, each layer on one thread).
 *
 * Inputs and outputs: a program has one or more of each (an NPU island between CPU nodes
 * reads several tensors, e.g. a residual, and several of its tensors leave it); all share the
 * batch axis. Boundary: a program may take float inputs and quantize them itself, and
 * dequantize its outputs, exactly as onnxruntime's QuantizeLinear/DequantizeLinear
 * (ortnpu_program_set_io_float).
 *
 * Lifetime: programs are reference counted. Python holds one reference; every onnxruntime
 * kernel built from the program (ort_op.c) holds another, so the program outlives whichever
 * of the two goes first. Published programs are found by a 64-bit handle: a per-process random
 * part plus a generation count that is never reused, so a handle copied from another process,
 * or kept after its program is gone, is refused, never used for another program.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <math.h>
#include <unistd.h>

#include "adaptive.h"
#include "kernels_common.h"
#include "ortnpu_kernels.h"
#include "rescale.h"

enum { L_CONV, L_FC, L_BINARY, L_REQUANT, L_LUT, L_POOL, L_GAP, L_COPY, L_TRANSPOSE, L_PAD,
       L_CONCAT, L_STRIDED, L_MATMUL, L_SOFTMAX, L_RESIZE };

typedef struct {
    int32_t kind, op;
    int32_t in0, in1, out;  /* slots; -1: constant operand (binary only) */
    int nthreads;           /* threads when they pay (adapt decides, run by run) */
    ortnpu_adapt_t adapt;
    ortnpu_conv_t conv;
    ortnpu_out_t o;
    int64_t i[16];          /* kind-specific integers */
    void *c[6];             /* owned copies of constants */
    ortnpu_conv_pack_t *pack; /* Conv: weights packed for the kernel */
    ortnpu_fc_pack_t *fcp;    /* FullyConnected: weights packed for the rows GEMM */
    int64_t *tables;          /* 8-bit Add: per-value tables (NULL: computed per run) */
    uint8_t *pairs;           /* 8-bit binary op with 8-bit output: y for every (a, b) pair */
    int simd;                 /* 8-bit Add/Mul under tflite_double: computed in 16 lanes */
    char name[96];
} layer_t;

typedef struct arena {
    struct arena *next;
} arena_t;

/* One input or output of a program at its boundary (per sample; the batch axis excluded). */
typedef struct {
    int32_t type, rank;
    int64_t dims[8];
    int64_t count;                  /* elements per sample */
    int64_t bytes;                  /* bytes per sample of the external tensor */
    /* float boundary (ortnpu_program_set_io_float): an input quantized from float into the
     * arena at off, or an output dequantized from off into the float tensor */
    int q;
    float scale;
    int64_t zp, off;
} io_t;

struct ortnpu_program {
    int64_t refs;
    int64_t handle;
    /* slots 0 .. n_in-1 are the inputs, n_in .. n_in+n_out-1 the outputs */
    int32_t n_in, n_out;
    io_t *ins, *outs;
    int nan_mode;                   /* NaN in a float input: 0 as MLAS, 1 as 0.0, 2 an error */
    int64_t n_slots;
    int64_t *slot_off;              /* byte offset in the arena, slots >= n_in + n_out */
    int64_t arena_bytes;
    int64_t n_layers, cap_layers;
    layer_t *layers;
    int isa;
    int nthreads;                   /* the session's threads: batches run samples in parallel */
    ortnpu_adapt_t batch_adapt;     /* ... when that pays (else sample after sample) */
    /* the whole run: each layer's own choice, or every layer on one thread (adaptive.h) */
    ortnpu_adapt_t run_adapt;
    int any_parallel;               /* some layer was built for several threads */
    int64_t ticks;                  /* samples run so far: when the layers retry (adaptive.h) */
    int64_t fixed_batch;            /* > 0: the only batch size the program accepts */
    pthread_mutex_t lock;
    arena_t *free_arenas;
    char name[128];
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

static void *dup_bytes(const void *src, int64_t n) {
    if (n < 0) return NULL;
    void *d = malloc(n > 0 ? (size_t)n : 1);
    if (d && n > 0) memcpy(d, src, (size_t)n);
    return d;
}


static int set_io(io_t *io, int32_t type, int32_t rank, const int64_t *dims) {
    if (rank < 0 || rank > 8 || type < 0 || type > 2) return -1;
    io->type = type;
    io->rank = rank;
    io->count = 1;
    for (int k = 0; k < rank; k++) {
        if (dims[k] < 0) return -1;
        io->dims[k] = dims[k];
        io->count *= dims[k];
    }
    io->bytes = io->count * type_size(type);
    return 0;
}

ortnpu_program_t *ortnpu_program_new_io(const char *name, int32_t n_in, const int32_t *in_types,
                                        const int32_t *in_ranks, const int64_t *in_dims,
                                        int32_t n_out, const int32_t *out_types,
                                        const int32_t *out_ranks, const int64_t *out_dims,
                                        int64_t n_slots, const int64_t *slot_off,
                                        int64_t arena_bytes, int isa, int nthreads) {
    if (n_in < 1 || n_in > ORTNPU_PROGRAM_MAX_IO || n_out < 1 || n_out > ORTNPU_PROGRAM_MAX_IO ||
        n_slots < n_in + n_out || arena_bytes < 0)
        return NULL;
    ortnpu_program_t *p = calloc(1, sizeof(*p));
    if (!p) return NULL;
    p->ins = calloc((size_t)n_in, sizeof(io_t));
    p->outs = calloc((size_t)n_out, sizeof(io_t));
    p->slot_off = dup_bytes(slot_off, n_slots * (int64_t)sizeof(int64_t));
    int bad = !p->ins || !p->outs || !p->slot_off;
    for (int32_t k = 0; !bad && k < n_in; k++)
        bad = set_io(&p->ins[k], in_types[k], in_ranks[k], in_dims + 8 * k);
    for (int32_t k = 0; !bad && k < n_out; k++)
        bad = set_io(&p->outs[k], out_types[k], out_ranks[k], out_dims + 8 * k);
    if (bad) {
        free(p->ins);
        free(p->outs);
        free(p->slot_off);
        free(p);
        return NULL;
    }
    p->refs = 1;
    p->n_in = n_in;
    p->n_out = n_out;
    p->n_slots = n_slots;
    p->arena_bytes = arena_bytes;
    p->isa = isa;
    p->nthreads = nthreads < 1 ? 1 : nthreads;
    p->batch_adapt.fixed = ortnpu_adapt_disabled();
    p->run_adapt.fixed = p->batch_adapt.fixed;
    /* the whole run's warm-up is the layers' (run_sample): it starts with their choice */
    p->run_adapt.runs = ORTNPU_ADAPT_WARMUP;
    p->run_adapt.mode = 1;
    pthread_mutex_init(&p->lock, NULL);
    snprintf(p->name, sizeof(p->name), "%s", name ? name : "subgraph");
    return p;
}

ortnpu_program_t *ortnpu_program_new(const char *name, int32_t in_type, int32_t in_rank,
                                     const int64_t *in_dims, int32_t out_type, int32_t out_rank,
                                     const int64_t *out_dims, int64_t n_slots,
                                     const int64_t *slot_off, int64_t arena_bytes, int isa,
                                     int nthreads) {
    int64_t din[8] = {0}, dout[8] = {0};
    if (in_rank < 0 || in_rank > 8 || out_rank < 0 || out_rank > 8) return NULL;
    memcpy(din, in_dims, (size_t)in_rank * 8);
    memcpy(dout, out_dims, (size_t)out_rank * 8);
    return ortnpu_program_new_io(name, 1, &in_type, &in_rank, din, 1, &out_type, &out_rank,
                                 dout, n_slots, slot_off, arena_bytes, isa, nthreads);
}

int ortnpu_program_set_io_float(ortnpu_program_t *p, int32_t is_out, int32_t k, float scale,
                                int64_t zp, int64_t off, int nan_mode) {
    if (!p || nan_mode < 0 || nan_mode > 2 || k < 0 || k >= (is_out ? p->n_out : p->n_in))
        return ORTNPU_EBADARG;
    io_t *io = is_out ? &p->outs[k] : &p->ins[k];
    const int64_t unit = p->fixed_batch > 0 ? p->fixed_batch : 1; /* samples per run_sample */
    if (io->q || off < 0 || off + unit * io->count * type_size(io->type) > p->arena_bytes ||
        (!is_out && (!(scale > 0.0f) || zp < type_min(io->type) || zp > type_max(io->type))))
        return ORTNPU_EBADARG;
    p->nan_mode = nan_mode;
    io->q = 1;
    io->scale = scale;
    io->zp = zp;
    io->off = off;
    io->bytes = io->count * (int64_t)sizeof(float);
    return ORTNPU_OK;
}

int ortnpu_program_set_float_io(ortnpu_program_t *p, int q_in, float q_scale, int64_t q_zp,
                                int64_t q_off, int dq_out, float dq_scale, int64_t dq_zp,
                                int64_t dq_off, int nan_mode) {
    if (!p || nan_mode < 0 || nan_mode > 2) return ORTNPU_EBADARG;
    p->nan_mode = nan_mode;
    int rc = ORTNPU_OK;
    if (q_in) rc = ortnpu_program_set_io_float(p, 0, 0, q_scale, q_zp, q_off, nan_mode);
    if (rc == ORTNPU_OK && dq_out)
        rc = ortnpu_program_set_io_float(p, 1, 0, dq_scale, dq_zp, dq_off, nan_mode);
    return rc;
}

/* onnxruntime's QuantizeLinear (MLAS): x / scale, max with the lower bound, min with the upper
 * one (a NaN becomes the lower bound, as MAXPS returns its second operand), round half to even,
 * add the zero point. Bounds are integers, so clamping before rounding equals clamping after. */
static int64_t quantize_f32(const float *x, int64_t n, float scale, int64_t zp, int32_t otype,
                            void *y, int nan_mode) {
    const float lo = (float)(type_min(otype) - zp), hi = (float)(type_max(otype) - zp);
    int64_t nans = 0, i = 0;
#if ORTNPU_HAVE_SSE2
    /* 8 at a time: the same division, MAXPS/MINPS with the bound second (a NaN becomes the
     * bound) and CVTPS2DQ, which rounds as nearbyintf does (the current mode, half to even);
     * the scalar loop's NaN count by movemask (the image input of a CNN: 150 k values, a
     * call of nearbyintf each cost 4x onnxruntime's QuantizeLinear) */
    const __m128 vs = _mm_set1_ps(scale), vlo = _mm_set1_ps(lo), vhi = _mm_set1_ps(hi);
    const __m128i vzp = _mm_set1_epi32((int32_t)zp);
    for (; i + 8 <= n; i += 8) {
        __m128i r[2];
        for (int h = 0; h < 2; h++) {
            __m128 v = _mm_loadu_ps(x + i + 4 * h);
            const __m128 ok = _mm_cmpord_ps(v, v);
            const int bad = _mm_movemask_ps(ok) ^ 0xF;
            if (bad) {
                nans += __builtin_popcount((unsigned)bad);
                if (nan_mode == 1) v = _mm_and_ps(v, ok); /* NaN -> 0 */
            }
            v = _mm_min_ps(_mm_max_ps(_mm_div_ps(v, vs), vlo), vhi);
            r[h] = _mm_add_epi32(_mm_cvtps_epi32(v), vzp);
        }
        const __m128i p16 = _mm_packs_epi32(r[0], r[1]); /* exact: within the output type */
        if (otype == ORTNPU_T_I8)
            _mm_storel_epi64((__m128i *)(void *)((int8_t *)y + i), _mm_packs_epi16(p16, p16));
        else if (otype == ORTNPU_T_U8)
            _mm_storel_epi64((__m128i *)(void *)((uint8_t *)y + i), _mm_packus_epi16(p16, p16));
        else
            _mm_storeu_si128((__m128i *)(void *)((int16_t *)y + i), p16);
    }
#endif
    for (; i < n; i++) {
        float xi = x[i];
        if (xi != xi) { /* NaN */
            nans++;
            if (nan_mode == 1) xi = 0.0f;
        }
        float v = xi / scale;
        v = v > lo ? v : lo;
        v = v < hi ? v : hi;
        const int64_t r = (int64_t)nearbyintf(v) + zp;
        if (otype == ORTNPU_T_I8)
            ((int8_t *)y)[i] = (int8_t)r;
        else if (otype == ORTNPU_T_U8)
            ((uint8_t *)y)[i] = (uint8_t)r;
        else
            ((int16_t *)y)[i] = (int16_t)r;
    }
    return nans;
}

/* onnxruntime's DequantizeLinear: (x - zp) * scale in float */
static void dequantize_f32(const void *x, int64_t n, int32_t itype, float scale, int64_t zp,
                           float *y) {
    for (int64_t i = 0; i < n; i++) {
        const int32_t v = itype == ORTNPU_T_I8   ? ((const int8_t *)x)[i]
                          : itype == ORTNPU_T_U8 ? ((const uint8_t *)x)[i]
                                                 : ((const int16_t *)x)[i];
        y[i] = (float)(v - (int32_t)zp) * scale;
    }
}

static layer_t *new_layer(ortnpu_program_t *p, int32_t kind, const char *name, int32_t in0,
                          int32_t in1, int32_t out, int nthreads) {
    if (in0 < -1 || in0 >= p->n_slots || in1 < -1 || in1 >= p->n_slots || out < p->n_in ||
        out >= p->n_slots)
        return NULL;
    if (p->n_layers == p->cap_layers) {
        int64_t cap = p->cap_layers ? 2 * p->cap_layers : 16;
        layer_t *l = realloc(p->layers, (size_t)cap * sizeof(layer_t));
        if (!l) return NULL;
        p->layers = l;
        p->cap_layers = cap;
    }
    layer_t *L = &p->layers[p->n_layers];
    memset(L, 0, sizeof(*L));
    L->kind = kind;
    L->in0 = in0;
    L->in1 = in1;
    L->out = out;
    L->nthreads = nthreads < 1 ? 1 : nthreads;
    if (L->nthreads > 1) p->any_parallel = 1;
    L->adapt.fixed = p->batch_adapt.fixed;
    snprintf(L->name, sizeof(L->name), "%s", name ? name : "?");
    return L;
}

static void set_ints(layer_t *L, const int64_t *v, int n) {
    for (int k = 0; k < n; k++) L->i[k] = v[k];
}

/* The constants are copied; a failed copy leaves the layer uncounted (freed here). */
static int commit(ortnpu_program_t *p, layer_t *L, int ncopies) {
    for (int k = 0; k < ncopies; k++) {
        if (!L->c[k]) {
            for (int j = 0; j < ncopies; j++) free(L->c[j]);
            return ORTNPU_ENOMEM;
        }
    }
    p->n_layers++;
    return ORTNPU_OK;
}

int ortnpu_program_add_conv(ortnpu_program_t *p, const char *name, int32_t in, int32_t out,
                            const ortnpu_conv_t *conv, const ortnpu_out_t *o, const int8_t *w,
                            const int64_t *bias, const int32_t *mult, const int32_t *shift,
                            int nthreads) {
    layer_t *L = new_layer(p, L_CONV, name, in, -1, out, nthreads);
    if (!L || in < 0) return ORTNPU_EBADARG;
    L->conv = *conv;
    L->o = *o;
    int64_t wn = conv->cout * conv->cg * conv->kh * conv->kw;
    L->c[0] = dup_bytes(w, wn);
    L->c[1] = dup_bytes(bias, conv->cout * 8);
    L->c[2] = dup_bytes(mult, conv->n_params * 4);
    L->c[3] = dup_bytes(shift, conv->n_params * 4);
    L->pack = ortnpu_conv_pack_new(conv, o, w, bias, p->isa); /* packed once, not per run */
    if (!L->pack) {
        for (int j = 0; j < 4; j++) free(L->c[j]);
        return ORTNPU_EBADARG;
    }
    int rc = commit(p, L, 4);
    if (rc != ORTNPU_OK) ortnpu_conv_pack_free(L->pack);
    return rc;
}

/* FullyConnected layers of at most this many rows run on the dot-product kernel (unless
 * their int16 weights fit FC_CACHED_BYTES, about half of a core's L2) */
#define FC_DOT_ROWS 8
#define FC_CACHED_BYTES (256 * 1024)

int ortnpu_program_add_fc(ortnpu_program_t *p, const char *name, int32_t in, int32_t out,
                          int64_t rows, int64_t k, int64_t n, int32_t xtype, int64_t x_zp,
                          const int8_t *w, const int64_t *bias, const int32_t *mult,
                          const int32_t *shift, int32_t n_params, const ortnpu_out_t *o,
                          int nthreads) {
    layer_t *L = new_layer(p, L_FC, name, in, -1, out, nthreads);
    if (!L || in < 0) return ORTNPU_EBADARG;
    L->o = *o;
    set_ints(L, (const int64_t[]){rows, k, n, xtype, x_zp, n_params}, 6);
    L->c[0] = dup_bytes(w, n * k);
    L->c[1] = dup_bytes(bias, n * 8);
    L->c[2] = dup_bytes(mult, n_params * 4);
    L->c[3] = dup_bytes(shift, n_params * 4);
    /* at least 16 output channels: the rows GEMM with the channels in the vector lanes
     * (kernels_linear.c), whatever the number of rows on a VNNI CPU. Without VNNI its weights
     * are int16 pairs, twice the bytes of the dot-product kernel's: above FC_DOT_ROWS rows, or
     * when they stay in a core's cache (ViT-tiny's 192x768: 0.34-0.73x the dot kernel's time
     * at 4-8 rows), it wins; a classifier at batch 1 reads its weights from memory on every
     * run of a whole program, where the int8 bytes count (MobileNetV2's 1280 -> 1000 head,
     * profiled in the program, interleaved: 0.19-0.22 ms on the dot kernel, 0.21-0.23 on the
     * rows GEMM; alone, its weights cached, the rows GEMM 0.07 vs 0.11) */
    const int vnni = ortnpu_pick_isa(p->isa)->wide_tile_u8 != NULL;
    if (n >= 16 && (vnni || rows > FC_DOT_ROWS || 2 * k * n <= FC_CACHED_BYTES))
        L->fcp = ortnpu_fc_pack_new(k, n, xtype, x_zp, w, bias, mult, shift, n_params, o,
                                    p->isa);
    /* otherwise, 8-bit input: run it as the 1x1 convolution it is (acc[o, r] = sum_k (x[r, k]
     * - x_zp) * w[o, k] + bias[o], the same rescale and clamp), on the convolutions' packed
     * tiles, with x transposed to [k, rows] and the [n, rows] result transposed back. Those
     * tiles are 16 pixels wide: a few rows (a classifier at batch 1, one row per sample) would
     * fill one of them, and the dot-product kernel is 2 to 6 times faster there (measured at
     * k 192-1280, n 192-1000 on AVX2). Those tiles also take output channels in blocks of
     * four: fewer outputs (a LayerNorm's mean and variance, one output over the features) stay
     * on the dot-product kernel at any number of rows (a ViT's 17 x 192 -> 1 mean: 5.5 to 1.9
     * us, the program's profile, minimum of 500 runs) */
    if (!L->fcp && xtype != ORTNPU_T_I16 && rows > FC_DOT_ROWS && n >= 4 && k > 0) {
        ortnpu_conv_t c = {0};
        c.n = 1;
        c.c = c.cg = k;
        c.h = c.kh = c.kw = c.oh = 1;
        c.w = c.ow = rows;
        c.cout = n;
        c.group = c.sh = c.sw = c.dh = c.dw = 1;
        c.x_zp = x_zp;
        c.xtype = xtype;
        c.n_params = n_params;
        L->conv = c;
        L->pack = ortnpu_conv_pack_new(&c, o, w, bias, p->isa); /* NULL: the FC kernel */
    }
    int rc = commit(p, L, 4);
    if (rc != ORTNPU_OK) {
        ortnpu_conv_pack_free(L->pack);
        ortnpu_fc_pack_free(L->fcp);
    }
    return rc;
}

/* y[c, r] = x[r, c] for a rows x cols matrix of es-byte elements */
static void transpose2(const void *x, void *y, int64_t rows, int64_t cols, int es) {
    if (es == 1) {
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++)
                ((uint8_t *)y)[c * rows + r] = ((const uint8_t *)x)[r * cols + c];
    } else {
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++)
                ((uint16_t *)y)[c * rows + r] = ((const uint16_t *)x)[r * cols + c];
    }
}

/* FullyConnected as a packed 1x1 convolution (ortnpu_program_add_fc) */
static int fc_as_conv(const layer_t *L, const void *x, void *y, int nt) {
    const int64_t rows = L->i[0], k = L->i[1], n = L->i[2];
    const int oes = L->o.otype == ORTNPU_T_I16 ? 2 : 1;
    void *xt = ortnpu_scratch(S_PROG0, (size_t)(rows * k));
    void *yt = ortnpu_scratch(S_PROG1, (size_t)(rows * n * oes));
    if (!xt || !yt) return ORTNPU_ENOMEM;
    transpose2(x, xt, rows, k, 1);
    int rc = ortnpu_conv2d_packed(L->pack, &L->conv, &L->o, xt, L->c[0], L->c[2], L->c[3], yt,
                                  nt);
    if (rc == ORTNPU_OK) transpose2(yt, y, n, rows, oes);
    return rc;
}

/* The element op of a binary layer on two whole arrays a, b of n elements (flat, no
 * broadcast): the kernel the layer runs, with its parameters. */
static int binary_flat(const layer_t *L, const void *a, const void *b, int64_t n, void *y,
                       int isa) {
    const int64_t one = 1;
    if (L->op >= 2) /* Sub, Maximum, Minimum, SquaredDifference (kernels_steps.c) */
        return ortnpu_binary_ext(L->op, 1, &n, a, (int32_t)L->i[1], &one, n, b,
                                 (int32_t)L->i[3], &one, n, L->c[3], &L->o, y, 1);
    return ortnpu_binary_tabled(L->op, 1, &n, a, (int32_t)L->i[1], &one, n, b,
                                (int32_t)L->i[3], &one, n, L->c[3], L->tables, &L->o, y, 1,
                                isa);
}

/* The offsets of a binary layer's inputs at the start of output row `row` (all axes but the
 * last), from its broadcast shape and element strides. */
static void row_offsets(const layer_t *L, int64_t row, int64_t *ao, int64_t *bo) {
    const int64_t *shape = L->c[0], *as = L->c[1], *bs = L->c[2];
    *ao = *bo = 0;
    for (int d = (int)L->i[0] - 2; d >= 0; d--) {
        const int64_t idx = row % shape[d];
        row /= shape[d];
        *ao += idx * as[d];
        *bo += idx * bs[d];
    }
}

/* The offsets a run reaches lie inside both inputs (else the kernel would refuse them). */
static int binary_in_bounds(const layer_t *L) {
    const int64_t *shape = L->c[0], *as = L->c[1], *bs = L->c[2];
    int64_t amax = 0, bmax = 0;
    for (int d = 0; d < (int)L->i[0]; d++) {
        if (shape[d] < 1 || as[d] < 0 || bs[d] < 0) return 0;
        amax += (shape[d] - 1) * as[d];
        bmax += (shape[d] - 1) * bs[d];
    }
    return amax < L->i[2] && bmax < L->i[4];
}

/* 8-bit a and b, 8-bit y: y depends on the pair of input bytes alone, so the layer's own
 * kernel is run once on all 65536 pairs and a run looks its outputs up (the same numbers; a
 * load per element instead of a rescale). NULL when the types do not fit or on failure. */
static uint8_t *binary_pairs(const layer_t *L, int isa) {
    if (L->i[1] == ORTNPU_T_I16 || L->i[3] == ORTNPU_T_I16 || L->o.otype == ORTNPU_T_I16)
        return NULL;
    if (!binary_in_bounds(L)) return NULL;
    uint8_t *a = malloc(65536), *b = malloc(65536), *y = malloc(65536);
    if (!a || !b || !y) {
        free(a);
        free(b);
        free(y);
        return NULL;
    }
    for (int64_t i = 0; i < 65536; i++) {
        a[i] = (uint8_t)(i & 255);
        b[i] = (uint8_t)(i >> 8);
    }
    const int rc = binary_flat(L, a, b, 65536, y, isa);
    free(a);
    free(b);
    if (rc != ORTNPU_OK) {
        free(y);
        return NULL;
    }
    return y;
}

/* y = pairs[a | b << 8] over the layer's broadcast (shape, strides of a and b) */
static void binary_lookup(const layer_t *L, const uint8_t *a, const uint8_t *b, uint8_t *y) {
    const int nd = (int)L->i[0];
    const int64_t *shape = L->c[0], *as = L->c[1], *bs = L->c[2];
    const uint8_t *T = L->pairs;
    int64_t outer = 1;
    for (int d = 0; d < nd - 1; d++) outer *= shape[d];
    const int64_t inner = shape[nd - 1], sa = as[nd - 1], sb = bs[nd - 1];
    for (int64_t row = 0; row < outer; row++) {
        int64_t ao, bo;
        row_offsets(L, row, &ao, &bo);
        const uint8_t *pa = a + ao, *pb = b + bo;
        uint8_t *py = y + row * inner;
        if (sa == 1 && sb == 1)
            for (int64_t i = 0; i < inner; i++) py[i] = T[pa[i] | (uint32_t)pb[i] << 8];
        else if (sa == 1 && sb == 0) {
            const uint8_t *Tb = T + ((uint32_t)pb[0] << 8);
            for (int64_t i = 0; i < inner; i++) py[i] = Tb[pa[i]];
        } else
            for (int64_t i = 0; i < inner; i++)
                py[i] = T[pa[i * sa] | (uint32_t)pb[i * sb] << 8];
    }
}

/* An 8-bit Add or Mul under tflite_double whose last axis runs over contiguous or broadcast
 * values, with parameters the kernel accepts: computed in SIMD lanes (16 on AVX-512, 8 on
 * AVX2), a few instructions per element and no table (a program of a transformer has about
 * 80 binary layers, whose 64 KiB pair tables did not fit the caches). */
static int binary_simd_ok(const ortnpu_program_t *p, const layer_t *L) {
    const ortnpu_isa_t *I = ortnpu_pick_isa(p->isa);
    const int32_t at = (int32_t)L->i[1], bt = (int32_t)L->i[3];
    const int64_t *as = L->c[1], *bs = L->c[2], *prm = L->c[3];
    const int nd = (int)L->i[0];
    if (!I->binary8_double || (L->op != 0 && L->op != 1) || L->o.rule != ORTNPU_R_DOUBLE ||
        at == ORTNPU_T_I16 || bt == ORTNPU_T_I16 || !type_ok(at) || !type_ok(bt) || !out_ok(&L->o))
        return 0;
    if (as[nd - 1] > 1 || bs[nd - 1] > 1 || !binary_in_bounds(L)) return 0;
    if (prm[0] < type_min(at) || prm[0] > type_max(at) || prm[1] < type_min(bt) ||
        prm[1] > type_max(bt))
        return 0;
    if (L->op == 1) return mult_ok(ORTNPU_R_DOUBLE, prm[2]) && shift_ok(ORTNPU_R_DOUBLE, prm[3]);
    if (prm[2] < 0 || prm[2] > 31) return 0;
    for (int k = 3; k < 9; k += 2)
        if (!mult_ok(ORTNPU_R_DOUBLE, prm[k]) || !shift_ok(ORTNPU_R_DOUBLE, prm[k + 1])) return 0;
    return 1;
}

/* binary8_double over the layer's broadcast, one call per output row */
static void binary_simd(const ortnpu_program_t *p, const layer_t *L, const uint8_t *a,
                        const uint8_t *b, void *y) {
    const ortnpu_isa_t *I = ortnpu_pick_isa(p->isa);
    const int nd = (int)L->i[0];
    const int64_t *shape = L->c[0], *as = L->c[1], *bs = L->c[2];
    const int es = L->o.otype == ORTNPU_T_I16 ? 2 : 1;
    int64_t outer = 1;
    for (int d = 0; d < nd - 1; d++) outer *= shape[d];
    const int64_t inner = shape[nd - 1];
    for (int64_t row = 0; row < outer; row++) {
        int64_t ao, bo;
        row_offsets(L, row, &ao, &bo);
        I->binary8_double(L->op, a + ao, as[nd - 1], L->i[1] == ORTNPU_T_I8, b + bo, bs[nd - 1],
                          L->i[3] == ORTNPU_T_I8, inner, L->c[3], L->o.y_zp, L->o.act_min,
                          L->o.act_max, (char *)y + row * inner * es, L->o.otype);
    }
}

int ortnpu_program_add_binary(ortnpu_program_t *p, const char *name, int32_t op, int32_t in0,
                              int32_t in1, int32_t out, int32_t ndim, const int64_t *shape,
                              int32_t atype, const int64_t *astride, int64_t a_len,
                              const void *a_const, int32_t btype, const int64_t *bstride,
                              int64_t b_len, const void *b_const, const int64_t *params,
                              const ortnpu_out_t *o, int nthreads) {
    layer_t *L = new_layer(p, L_BINARY, name, in0, in1, out, nthreads);
    if (!L || ndim < 1 || ndim > 8 || (in0 < 0 && !a_const) || (in1 < 0 && !b_const))
        return ORTNPU_EBADARG;
    L->op = op;
    L->o = *o;
    set_ints(L, (const int64_t[]){ndim, atype, a_len, btype, b_len}, 5);
    L->c[0] = dup_bytes(shape, ndim * 8);
    L->c[1] = dup_bytes(astride, ndim * 8);
    L->c[2] = dup_bytes(bstride, ndim * 8);
    L->c[3] = dup_bytes(params, 9 * 8);
    L->c[4] = in0 < 0 ? dup_bytes(a_const, a_len * type_size(atype)) : malloc(1);
    L->c[5] = in1 < 0 ? dup_bytes(b_const, b_len * type_size(btype)) : malloc(1);
    int64_t tables[512];
    if (ortnpu_binary_tables(op, atype, btype, params, o->rule, tables, tables + 256))
        L->tables = dup_bytes(tables, sizeof tables); /* made once, not per run */
    int rc = commit(p, L, 6);
    if (rc == ORTNPU_OK && binary_simd_ok(p, L))
        L->simd = 1;
    else if (rc == ORTNPU_OK)
        L->pairs = binary_pairs(L, p->isa);
    return rc;
}

int ortnpu_program_add_requantize(ortnpu_program_t *p, const char *name, int32_t in,
                                  int32_t out, int64_t outer, int64_t ch, int64_t inner,
                                  int32_t xtype, int64_t x_zp, const int32_t *mult,
                                  const int32_t *shift, int32_t n_params, const ortnpu_out_t *o,
                                  int nthreads) {
    layer_t *L = new_layer(p, L_REQUANT, name, in, -1, out, nthreads);
    if (!L || in < 0) return ORTNPU_EBADARG;
    L->o = *o;
    set_ints(L, (const int64_t[]){outer, ch, inner, xtype, x_zp, n_params}, 6);
    L->c[0] = dup_bytes(mult, n_params * 4);
    L->c[1] = dup_bytes(shift, n_params * 4);
    return commit(p, L, 2);
}

int ortnpu_program_add_lut(ortnpu_program_t *p, const char *name, int32_t in, int32_t out,
                           int64_t count, int32_t xtype, const void *table, int32_t ttype,
                           int64_t table_len, int nthreads) {
    layer_t *L = new_layer(p, L_LUT, name, in, -1, out, nthreads);
    if (!L || in < 0) return ORTNPU_EBADARG;
    set_ints(L, (const int64_t[]){count, xtype, ttype, table_len}, 4);
    L->c[0] = dup_bytes(table, table_len * type_size(ttype));
    return commit(p, L, 1);
}

int ortnpu_program_add_softmax(ortnpu_program_t *p, const char *name, int32_t in, int32_t out,
                               int64_t rows, int64_t depth, int32_t xtype, int32_t mult,
                               int32_t shift, int32_t diff_min, const int16_t *exp_lut,
                               const int16_t *recip_lut, int nthreads) {
    layer_t *L = new_layer(p, L_SOFTMAX, name, in, -1, out, nthreads);
    if (!L || in < 0) return ORTNPU_EBADARG;
    set_ints(L, (const int64_t[]){rows, depth, xtype, mult, shift, diff_min}, 6);
    L->c[0] = dup_bytes(exp_lut, 513 * 2);
    L->c[1] = dup_bytes(recip_lut, 513 * 2);
    /* 8-bit input: the exponential of each of the 256 differences, made once (the kernel
     * checks the parameters before it reads the table; a failed malloc keeps NULL) */
    if (xtype != ORTNPU_T_I16 && shift >= 0 && shift <= 31 && diff_min <= 0 &&
        -(int64_t)diff_min * (INT64_C(1) << shift) < (INT64_C(1) << 31)) {
        L->c[2] = malloc(256 * sizeof(int32_t));
        if (L->c[2]) ortnpu_softmax8_table(mult, shift, diff_min, L->c[2]);
    }
    return commit(p, L, 2);
}

int ortnpu_program_add_pool(ortnpu_program_t *p, const char *name, int32_t op, int32_t in,
                            int32_t out, int64_t n, int64_t c, int64_t h, int64_t w,
                            const int64_t *win, int32_t xtype, int64_t act_min, int64_t act_max,
                            int nthreads) {
    layer_t *L = new_layer(p, L_POOL, name, in, -1, out, nthreads);
    if (!L || in < 0) return ORTNPU_EBADARG;
    L->op = op;
    set_ints(L, (const int64_t[]){n, c, h, w, xtype, act_min, act_max}, 7);
    L->c[0] = dup_bytes(win, 12 * 8);
    return commit(p, L, 1);
}

int ortnpu_program_add_gap(ortnpu_program_t *p, const char *name, int32_t in, int32_t out,
                           int64_t n, int64_t c, int64_t hw, int32_t xtype, int64_t act_min,
                           int64_t act_max, int nthreads) {
    layer_t *L = new_layer(p, L_GAP, name, in, -1, out, nthreads);
    if (!L || in < 0) return ORTNPU_EBADARG;
    set_ints(L, (const int64_t[]){n, c, hw, xtype, act_min, act_max}, 6);
    return commit(p, L, 0);
}

int ortnpu_program_add_transpose(ortnpu_program_t *p, const char *name, int32_t in,
                                 int32_t out, int32_t ndim, const int64_t *dims,
                                 const int64_t *perm, int32_t elem_size) {
    layer_t *L = new_layer(p, L_TRANSPOSE, name, in, -1, out, 1);
    if (!L || in < 0 || ndim < 1 || ndim > 8 || (elem_size != 1 && elem_size != 2))
        return ORTNPU_EBADARG;
    int seen[8] = {0};
    for (int k = 0; k < ndim; k++) {
        if (dims[k] < 1 || perm[k] < 0 || perm[k] >= ndim || seen[perm[k]]) return ORTNPU_EBADARG;
        seen[perm[k]] = 1;
    }
    set_ints(L, (const int64_t[]){ndim, elem_size}, 2);
    L->c[0] = dup_bytes(dims, ndim * 8);
    L->c[1] = dup_bytes(perm, ndim * 8);
    return commit(p, L, 2);
}

int ortnpu_program_add_pad(ortnpu_program_t *p, const char *name, int32_t in, int32_t out,
                           int32_t ndim, const int64_t *dims, const int64_t *pads, int64_t value,
                           int32_t elem_size) {
    layer_t *L = new_layer(p, L_PAD, name, in, -1, out, 1);
    if (!L || in < 0 || ndim < 1 || ndim > 8 || (elem_size != 1 && elem_size != 2))
        return ORTNPU_EBADARG;
    for (int k = 0; k < ndim; k++)
        if (dims[k] < 1 || pads[k] < 0 || pads[k + ndim] < 0) return ORTNPU_EBADARG;
    set_ints(L, (const int64_t[]){ndim, elem_size, value}, 3);
    L->c[0] = dup_bytes(dims, ndim * 8);
    L->c[1] = dup_bytes(pads, 2 * ndim * 8);
    return commit(p, L, 2);
}

/* y = x with constant padding, one sample: fill, then copy each innermost row into place */
static void pad_copy(const void *x, void *y, int ndim, const int64_t *dims, const int64_t *pads,
                     int64_t value, int es) {
    int64_t odims[8], ostride[8], total = 1, rows = 1, idx[8] = {0};
    for (int k = ndim - 1; k >= 0; k--) {
        odims[k] = dims[k] + pads[k] + pads[k + ndim];
        ostride[k] = total;
        total *= odims[k];
    }
    if (es == 1)
        memset(y, (int)(uint8_t)value, (size_t)total);
    else
        for (int64_t i = 0; i < total; i++) ((uint16_t *)y)[i] = (uint16_t)value;
    for (int k = 0; k < ndim - 1; k++) rows *= dims[k];
    const int64_t row = dims[ndim - 1];
    for (int64_t r = 0; r < rows; r++) {
        int64_t off = pads[ndim - 1];
        for (int k = 0; k < ndim - 1; k++) off += (idx[k] + pads[k]) * ostride[k];
        memcpy((char *)y + off * es, (const char *)x + r * row * es, (size_t)(row * es));
        for (int k = ndim - 2; k >= 0; k--) { /* next input row */
            if (++idx[k] < dims[k]) break;
            idx[k] = 0;
        }
    }
}

int ortnpu_program_add_concat(ortnpu_program_t *p, const char *name, int32_t n_in,
                              const int32_t *ins, int32_t out, int64_t outer,
                              const int64_t *inner_bytes, const void *consts) {
    layer_t *L = new_layer(p, L_CONCAT, name, -1, -1, out, 1);
    if (!L || n_in < 1 || n_in > 64 || outer < 1) return ORTNPU_EBADARG;
    int64_t const_bytes = 0;
    for (int k = 0; k < n_in; k++) {
        if (ins[k] < -1 || ins[k] >= p->n_slots || inner_bytes[k] < 0) return ORTNPU_EBADARG;
        if (ins[k] < 0) const_bytes += outer * inner_bytes[k];
    }
    if (const_bytes > 0 && !consts) return ORTNPU_EBADARG;
    set_ints(L, (const int64_t[]){n_in, outer}, 2);
    L->c[0] = dup_bytes(ins, n_in * 4);
    L->c[1] = dup_bytes(inner_bytes, n_in * 8);
    L->c[2] = const_bytes > 0 ? dup_bytes(consts, const_bytes) : NULL;
    return commit(p, L, const_bytes > 0 ? 3 : 2);
}

/* y = transpose(x, perm) of one sample: an odometer over the output rows (all axes but the
 * last), each row one memcpy when the last output axis is the last input axis (attention's
 * head splits and merges) or a strided gather otherwise. */
static void transpose_copy(const void *x, void *y, int ndim, const int64_t *dims,
                           const int64_t *perm, int es) {
    int64_t in_stride[8], ostride[8], odims[8], idx[8] = {0};
    int64_t acc = 1, rows = 1;
    for (int k = ndim - 1; k >= 0; k--) {
        in_stride[k] = acc;
        acc *= dims[k];
    }
    for (int k = 0; k < ndim; k++) {
        odims[k] = dims[perm[k]];
        ostride[k] = in_stride[perm[k]];
        if (k < ndim - 1) rows *= odims[k];
    }
    if (ndim < 1 || acc == 0) return;
    const int64_t len = odims[ndim - 1], step = ostride[ndim - 1];
    /* rows are walked in runs along the second-last output axis (one odometer step per run:
     * a patch embedding's space-to-depth has thousands of rows of 4 bytes) */
    const int64_t run = ndim > 1 ? odims[ndim - 2] : 1, rstep = ndim > 1 ? ostride[ndim - 2] : 0;
    const size_t bytes = (size_t)(len * es);
    int64_t off = 0;
    char *dst = y;
    for (int64_t r = 0; r < rows; r += run) {
        const char *src = (const char *)x + off * es;
        for (int64_t q = 0; q < run; q++, src += rstep * es, dst += bytes) {
            if (step == 1 && bytes == 4)
                memcpy(dst, src, 4);
            else if (step == 1)
                memcpy(dst, src, bytes);
            else if (es == 1)
                for (int64_t i = 0; i < len; i++)
                    ((uint8_t *)dst)[i] = ((const uint8_t *)src)[i * step];
            else
                for (int64_t i = 0; i < len; i++)
                    ((uint16_t *)dst)[i] = ((const uint16_t *)src)[i * step];
        }
        for (int k = ndim - 3; k >= 0; k--) { /* next run of output rows */
            off += ostride[k];
            if (++idx[k] < odims[k]) break;
            off -= ostride[k] * odims[k];
            idx[k] = 0;
        }
    }
}

int ortnpu_program_add_strided(ortnpu_program_t *p, const char *name, int32_t in, int32_t out,
                               int32_t ndim, const int64_t *odims, const int64_t *istride,
                               int64_t start, int64_t x_len, int32_t elem_size) {
    layer_t *L = new_layer(p, L_STRIDED, name, in, -1, out, 1);
    if (!L || in < 0 || ndim < 1 || ndim > 16 || (elem_size != 1 && elem_size != 2))
        return ORTNPU_EBADARG;
    set_ints(L, (const int64_t[]){ndim, start, x_len, elem_size}, 4);
    L->c[0] = dup_bytes(odims, ndim * 8);
    L->c[1] = dup_bytes(istride, ndim * 8);
    return commit(p, L, 2);
}

int ortnpu_program_add_matmul(ortnpu_program_t *p, const char *name, int32_t in0, int32_t in1,
                              int32_t out, int64_t batch, int64_t m, int64_t k, int64_t n,
                              int32_t atype, int64_t a_zp, const int64_t *a_off, int64_t a_len,
                              const void *a_const, int32_t btype, int64_t b_zp,
                              const int64_t *b_off, int64_t b_len, const void *b_const,
                              int32_t mult, int32_t shift, const ortnpu_out_t *o, int nthreads) {
    layer_t *L = new_layer(p, L_MATMUL, name, in0, in1, out, nthreads);
    if (!L || batch < 1 || (in0 < 0 && !a_const) || (in1 < 0 && !b_const) || !type_ok(atype) ||
        !type_ok(btype) || a_len < 0 || b_len < 0)
        return ORTNPU_EBADARG;
    L->o = *o;
    set_ints(L, (const int64_t[]){batch, m, k, n, atype, a_zp, a_len, btype, b_zp, b_len, mult,
                                  shift}, 12);
    L->c[0] = dup_bytes(a_off, batch * 8);
    L->c[1] = dup_bytes(b_off, batch * 8);
    L->c[2] = in0 < 0 ? dup_bytes(a_const, a_len * type_size(atype)) : malloc(1);
    L->c[3] = in1 < 0 ? dup_bytes(b_const, b_len * type_size(btype)) : malloc(1);
    return commit(p, L, 4);
}

int ortnpu_program_add_copy(ortnpu_program_t *p, const char *name, int32_t in, int32_t out,
                            int64_t nbytes) {
    layer_t *L = new_layer(p, L_COPY, name, in, -1, out, 1);
    if (!L || in < 0 || nbytes < 0) return ORTNPU_EBADARG;
    L->i[0] = nbytes;
    return commit(p, L, 0);
}

/* Resize of one sample: `planes` planes of h x w to oh x ow with the per-axis tables of
 * ortnpu_resize (copied; the kernel checks them on every run) */
int ortnpu_program_add_resize(ortnpu_program_t *p, const char *name, int32_t in, int32_t out,
                              int64_t planes, int64_t h, int64_t w, int64_t oh, int64_t ow,
                              int32_t bilinear, const int32_t *ytab, const int32_t *xtab,
                              int32_t xtype, int nthreads) {
    layer_t *L = new_layer(p, L_RESIZE, name, in, -1, out, nthreads);
    if (!L || in < 0 || planes < 1 || h < 1 || w < 1 || oh < 1 || ow < 1 || !type_ok(xtype) ||
        (bilinear != 0 && bilinear != 1))
        return ORTNPU_EBADARG;
    set_ints(L, (const int64_t[]){planes, h, w, oh, ow, bilinear, xtype}, 7);
    L->c[0] = dup_bytes(ytab, 3 * oh * 4);
    L->c[1] = dup_bytes(xtab, 3 * ow * 4);
    return commit(p, L, 2);
}

/* ----------------------------------------------------------------------------- running */

static arena_t *arena_get(ortnpu_program_t *p) {
    pthread_mutex_lock(&p->lock);
    arena_t *a = p->free_arenas;
    if (a) p->free_arenas = a->next;
    pthread_mutex_unlock(&p->lock);
    if (a) return a;
    size_t bytes = 64 + (size_t)((p->arena_bytes + 63) & ~INT64_C(63));
    void *mem = NULL;
    if (posix_memalign(&mem, 64, bytes)) return NULL;
    return mem;
}

static void arena_put(ortnpu_program_t *p, arena_t *a) {
    pthread_mutex_lock(&p->lock);
    a->next = p->free_arenas;
    p->free_arenas = a;
    pthread_mutex_unlock(&p->lock);
}

/* The tensors of one sample (or of the fixed batch): the external inputs and outputs. */
typedef struct {
    const void *x[ORTNPU_PROGRAM_MAX_IO];
    void *y[ORTNPU_PROGRAM_MAX_IO];
} io_ptrs_t;

static inline void *slot(const ortnpu_program_t *p, char *base, int32_t s, const io_ptrs_t *io) {
    if (s < p->n_in) return p->ins[s].q ? base + p->ins[s].off : (void *)io->x[s];
    if (s < p->n_in + p->n_out) {
        const int32_t k = s - p->n_in;
        return p->outs[k].q ? base + p->outs[k].off : io->y[k];
    }
    return base + p->slot_off[s];
}

static int run_layer(const ortnpu_program_t *p, const layer_t *L, char *base,
                     const io_ptrs_t *io, int nt) {
    void *out = slot(p, base, L->out, io);
    const void *a = L->in0 >= 0 ? slot(p, base, L->in0, io) : NULL;
    switch (L->kind) {
    case L_CONV:
        return ortnpu_conv2d_packed(L->pack, &L->conv, &L->o, a, L->c[0], L->c[2], L->c[3],
                                    out, nt);
    case L_FC:
        if (L->fcp) return ortnpu_fc_packed(L->fcp, L->i[0], a, out, nt);
        if (L->pack) return fc_as_conv(L, a, out, nt);
        return ortnpu_fully_connected(L->i[0], L->i[1], L->i[2], a, (int32_t)L->i[3], L->i[4],
                                      L->c[0], L->c[1], L->c[2], L->c[3], (int32_t)L->i[5],
                                      &L->o, out, nt, p->isa);
    case L_BINARY: {
        const void *b = L->in1 >= 0 ? slot(p, base, L->in1, io) : L->c[5];
        if (!a) a = L->c[4];
        if (L->simd) {
            binary_simd(p, L, a, b, out);
            return ORTNPU_OK;
        }
        if (L->pairs) {
            binary_lookup(L, a, b, out);
            return ORTNPU_OK;
        }
        if (L->op >= 2) /* Sub, Maximum, Minimum, SquaredDifference (kernels_steps.c) */
            return ortnpu_binary_ext(L->op, (int32_t)L->i[0], L->c[0], a, (int32_t)L->i[1],
                                     L->c[1], L->i[2], b, (int32_t)L->i[3], L->c[2], L->i[4],
                                     L->c[3], &L->o, out, nt);
        return ortnpu_binary_tabled(L->op, (int32_t)L->i[0], L->c[0], a, (int32_t)L->i[1],
                                    L->c[1], L->i[2], b, (int32_t)L->i[3], L->c[2], L->i[4],
                                    L->c[3], L->tables, &L->o, out, nt, p->isa);
    }
    case L_REQUANT:
        return ortnpu_requantize(L->i[0], L->i[1], L->i[2], a, (int32_t)L->i[3], L->i[4],
                                 L->c[0], L->c[1], (int32_t)L->i[5], &L->o, out, nt,
                                 p->isa);
    case L_LUT:
        return ortnpu_lut(L->i[0], a, (int32_t)L->i[1], L->c[0], (int32_t)L->i[2], L->i[3], out,
                          nt);
    case L_SOFTMAX:
        return ortnpu_softmax_tab(L->i[0], L->i[1], a, (int32_t)L->i[2], (int32_t)L->i[3],
                                  (int32_t)L->i[4], (int32_t)L->i[5], L->c[0], L->c[1], L->c[2],
                                  out, nt);
    case L_POOL:
        return ortnpu_pool2d(L->op, L->i[0], L->i[1], L->i[2], L->i[3], L->c[0], a,
                             (int32_t)L->i[4], L->i[5], L->i[6], out, nt);
    case L_GAP:
        return ortnpu_global_avgpool(L->i[0], L->i[1], L->i[2], a, (int32_t)L->i[3], L->i[4],
                                     L->i[5], out, nt);
    case L_COPY:
        if (out != a) memmove(out, a, (size_t)L->i[0]);
        return ORTNPU_OK;
    case L_TRANSPOSE:
        transpose_copy(a, out, (int)L->i[0], L->c[0], L->c[1], (int)L->i[1]);
        return ORTNPU_OK;
    case L_PAD:
        pad_copy(a, out, (int)L->i[0], L->c[0], L->c[1], L->i[2], (int)L->i[1]);
        return ORTNPU_OK;
    case L_STRIDED:
        return ortnpu_strided_copy((int32_t)L->i[0], L->c[0], L->c[1], L->i[1], L->i[2], a, out,
                                   (int32_t)L->i[3]);
    case L_MATMUL: {
        const void *b = L->in1 >= 0 ? slot(p, base, L->in1, io) : L->c[3];
        if (!a) a = L->c[2];
        return ortnpu_matmul(L->i[0], L->i[1], L->i[2], L->i[3], a, (int32_t)L->i[4], L->i[5],
                             L->c[0], L->i[6], b, (int32_t)L->i[7], L->i[8], L->c[1], L->i[9],
                             (int32_t)L->i[10], (int32_t)L->i[11], &L->o, out, nt, p->isa);
    }
    case L_CONCAT: {
        /* per outer index, each input's inner block in turn */
        const int32_t *ins = L->c[0];
        const int64_t *inner = L->c[1];
        int64_t total = 0;
        for (int64_t k = 0; k < L->i[0]; k++) total += inner[k];
        int64_t at = 0;
        const char *consts = L->c[2];
        for (int64_t k = 0; k < L->i[0]; k++) {
            const char *src = ins[k] >= 0 ? slot(p, base, ins[k], io) : consts;
            if (ins[k] < 0) consts += L->i[1] * inner[k];
            for (int64_t o = 0; o < L->i[1]; o++)
                memcpy((char *)out + o * total + at, src + o * inner[k], (size_t)inner[k]);
            at += inner[k];
        }
        return ORTNPU_OK;
    }
    case L_RESIZE:
        return ortnpu_resize(L->i[0], L->i[1], L->i[2], L->i[3], L->i[4], (int32_t)L->i[5],
                             L->c[0], L->c[1], a, (int32_t)L->i[6], out, nt);
    default:
        return ORTNPU_EBADARG;
    }
}

/* One sample through the program (quantize, layers, dequantize) with arena base. */
static int run_sample(ortnpu_program_t *p, char *base, const io_ptrs_t *io, int64_t b,
                      int one_thread, char *err, int64_t err_len, double *ns) {
    /* a fixed-batch program's unit is the whole batch (its layers were built for it) */
    const int64_t unit = p->fixed_batch > 0 ? p->fixed_batch : 1;
    for (int32_t k = 0; k < p->n_in; k++) {
        const io_t *in = &p->ins[k];
        if (in->q &&
            quantize_f32((const float *)io->x[k], unit * in->count, in->scale, in->zp, in->type,
                         base + in->off, p->nan_mode) > 0 && p->nan_mode == 2) {
            if (err && err_len > 0)
                snprintf(err, (size_t)err_len, "%s: NaN in the input (sample %lld)", p->name,
                         (long long)b);
            return ORTNPU_ENAN;
        }
    }
    const int64_t tick = one_thread ? 0 : __atomic_fetch_add(&p->ticks, 1, __ATOMIC_RELAXED);
    /* Each layer's choice sees only its own time; the worker threads it wakes, and their spin
     * after it, slow the layers around it too (a ViT at batch 1, whose layers are all small,
     * ran 1.5 to 3 times slower at 2 threads on the shared VM). So the whole run also compares
     * the layers' own choices with every layer on one thread, per run, and keeps the faster.
     * Its tries of the other mode fall 8 runs after the layers' (their ticks are multiples of
     * 16 or more), so neither hides the other's. The layers learn first: in their warm-up
     * every layer runs on n threads, then on one, in turn, so the one-thread runs among them
     * are also the whole run's one-thread samples, and the whole run then starts with the
     * layers' choice (its own warm-up is skipped, ortnpu_program_new_io). When the whole run
     * alternated its modes from the first run too, layers learnt only in the runs it gave
     * them: 8 fresh MobileNetV2 sessions at batch 1 reached their steady 2-thread time two
     * runs later (docs/kernels.md). */
    const int guarded = !one_thread && !ns && p->any_parallel;
    const int learning = guarded && tick < ORTNPU_ADAPT_WARMUP;
    const int whole = guarded && !learning;
    const int layered = whole ? ortnpu_adapt_pick(&p->run_adapt, tick + 8) : !one_thread;
    const int64_t run_t0 = whole || learning ? ortnpu_now_ns() : 0;
    /* A try of the layers' choice while the whole run keeps every layer on one thread runs
     * every layer on n threads: the layers' own tries (ticks that are multiples of 16) never
     * fall on the whole run's (8 after), so layers that had all gone to one thread under load
     * would never try n threads again once the load ended. Each layer records its time. */
    const int try_all = whole && layered && __atomic_load_n(&p->run_adapt.mode,
                                                              __ATOMIC_RELAXED) == 0;
    for (int64_t k = 0; k < p->n_layers; k++) {
        layer_t *L = &p->layers[k];
        /* several threads only while they pay (adaptive.h) */
        const int adapt = layered && L->nthreads > 1;
        const int many = adapt && (try_all || ortnpu_adapt_pick(&L->adapt, tick));
        const int64_t t0 = ns || adapt ? ortnpu_now_ns() : 0;
        int rc = run_layer(p, L, base, io, many ? L->nthreads : 1);
        if (ns || adapt) {
            const int64_t dt = ortnpu_now_ns() - t0;
            if (ns) ns[k] += (double)dt;
            if (adapt && rc == ORTNPU_OK) ortnpu_adapt_record(&L->adapt, many, dt);
        }
        if (rc != ORTNPU_OK) {
            if (err && err_len > 0)
                snprintf(err, (size_t)err_len, "%s: layer %s failed (%s)", p->name,
                         p->layers[k].name,
                         rc == ORTNPU_ENOMEM ? "out of memory"
                                             : "the kernel refused its arguments; this is a "
                                               "bug in ortnpu, please report it");
            return rc;
        }
    }
    if (whole) ortnpu_adapt_record(&p->run_adapt, layered, ortnpu_now_ns() - run_t0);
    if (learning && (tick & 1)) /* every layer ran on one thread */
        ortnpu_adapt_record(&p->run_adapt, 0, ortnpu_now_ns() - run_t0);
    for (int32_t k = 0; k < p->n_out; k++) {
        const io_t *o = &p->outs[k];
        if (o->q)
            dequantize_f32(base + o->off, unit * o->count, o->type, o->scale, o->zp,
                           (float *)io->y[k]);
    }
    return ORTNPU_OK;
}

/* The tensors of sample b. */
static void sample_ptrs(const ortnpu_program_t *p, const void *const *x, void *const *y,
                        int64_t b, io_ptrs_t *io) {
    for (int32_t k = 0; k < p->n_in; k++)
        io->x[k] = (const char *)x[k] + b * p->ins[k].bytes;
    for (int32_t k = 0; k < p->n_out; k++) io->y[k] = (char *)y[k] + b * p->outs[k].bytes;
}

int ortnpu_program_set_fixed_batch(ortnpu_program_t *p, int64_t batch) {
    if (!p || batch < 1) return ORTNPU_EBADARG;
    for (int32_t k = 0; k < p->n_in; k++)
        if (p->ins[k].q) return ORTNPU_EBADARG;
    for (int32_t k = 0; k < p->n_out; k++)
        if (p->outs[k].q) return ORTNPU_EBADARG;
    p->fixed_batch = batch;
    return ORTNPU_OK;
}

int ortnpu_program_run_timed(ortnpu_program_t *p, int64_t batch, const void *x, void *y,
                             char *err, int64_t err_len, double *ns) {
    if (!p || p->n_in != 1 || p->n_out != 1) return ORTNPU_EBADARG;
    return ortnpu_program_run_io(p, batch, &x, &y, err, err_len, ns);
}

int ortnpu_program_run_io(ortnpu_program_t *p, int64_t batch, const void *const *x,
                          void *const *y, char *err, int64_t err_len, double *ns) {
    if (!p || batch < 0 || (batch > 0 && (!x || !y))) return ORTNPU_EBADARG;
    for (int32_t k = 0; batch > 0 && k < p->n_in; k++)
        if (!x[k]) return ORTNPU_EBADARG;
    for (int32_t k = 0; batch > 0 && k < p->n_out; k++)
        if (!y[k]) return ORTNPU_EBADARG;
    if (p->fixed_batch && batch != p->fixed_batch) {
        if (err && err_len > 0)
            snprintf(err, (size_t)err_len, "%s: compiled for batch %lld (the model fixes it), "
                     "got %lld", p->name, (long long)p->fixed_batch, (long long)batch);
        return ORTNPU_EBADARG;
    }
    if (batch == 0 || p->n_layers == 0) return ORTNPU_OK;
    int rc = ORTNPU_OK;
    if (p->fixed_batch) { /* the layers were built for the whole batch: one unit */
        arena_t *a = arena_get(p);
        if (!a) {
            if (err && err_len > 0)
                snprintf(err, (size_t)err_len, "%s: out of memory for %lld bytes of "
                         "intermediates", p->name, (long long)p->arena_bytes);
            return ORTNPU_ENOMEM;
        }
        io_ptrs_t io;
        sample_ptrs(p, x, y, 0, &io);
        rc = run_sample(p, (char *)a + 64, &io, 0, 0, err, err_len, ns);
        arena_put(p, a);
        return rc;
    }
    /* A batch of several samples on several threads: one sample per thread at a time, each
     * layer on one thread (the samples are independent; splitting one small sample's layers
     * over threads costs more than it gains), while that pays (adaptive.h; else the samples
     * run one after the other, each layer choosing its threads). A profile runs sequentially. */
    const int nt = (int)(batch < p->nthreads ? batch : p->nthreads);
    const int64_t tick = __atomic_load_n(&p->batch_adapt.runs, __ATOMIC_RELAXED);
    const int parallel = nt > 1 && !ns && ortnpu_adapt_pick(&p->batch_adapt, tick);
    const int64_t t0 = nt > 1 && !ns ? ortnpu_now_ns() : 0;
    if (parallel) {
#pragma omp parallel num_threads(nt)
        {
            arena_t *a = arena_get(p);
            char local[400] = "";
            int my = a ? ORTNPU_OK : ORTNPU_ENOMEM;
            if (!a) snprintf(local, sizeof local, "%s: out of memory for %lld bytes of "
                             "intermediates", p->name, (long long)p->arena_bytes);
#pragma omp for schedule(dynamic, 1)
            for (int64_t b = 0; b < batch; b++) {
                if (my != ORTNPU_OK) continue;
                io_ptrs_t io;
                sample_ptrs(p, x, y, b, &io);
                my = run_sample(p, (char *)a + 64, &io, b, 1, local, sizeof local, NULL);
            }
            if (a) arena_put(p, a);
#pragma omp critical(ortnpu_program_error)
            if (my != ORTNPU_OK && rc == ORTNPU_OK) {
                rc = my;
                if (err && err_len > 0) snprintf(err, (size_t)err_len, "%s", local);
            }
        }
        if (rc == ORTNPU_OK)
            ortnpu_adapt_record(&p->batch_adapt, 1, (ortnpu_now_ns() - t0) / batch);
        return rc;
    }
    arena_t *a = arena_get(p);
    if (!a) {
        if (err && err_len > 0)
            snprintf(err, (size_t)err_len, "%s: out of memory for %lld bytes of intermediates",
                     p->name, (long long)p->arena_bytes);
        return ORTNPU_ENOMEM;
    }
    for (int64_t b = 0; b < batch && rc == ORTNPU_OK; b++) {
        io_ptrs_t io;
        sample_ptrs(p, x, y, b, &io);
        rc = run_sample(p, (char *)a + 64, &io, b, 0, err, err_len, ns);
    }
    arena_put(p, a);
    if (nt > 1 && !ns && rc == ORTNPU_OK)
        ortnpu_adapt_record(&p->batch_adapt, 0, (ortnpu_now_ns() - t0) / batch);
    return rc;
}

int ortnpu_program_run(ortnpu_program_t *p, int64_t batch, const void *x, void *y, char *err,
                       int64_t err_len) {
    return ortnpu_program_run_timed(p, batch, x, y, err, err_len, NULL);
}

int64_t ortnpu_program_layers(const ortnpu_program_t *p, int64_t k, char *name,
                              int64_t name_len) {
    if (!p) return 0;
    if (k >= 0 && k < p->n_layers && name && name_len > 0)
        snprintf(name, (size_t)name_len, "%s", p->layers[k].name);
    return p->n_layers;
}

/* ------------------------------------------------------------------------ life and lookup */

#define MAX_PUBLISHED 4096
static ortnpu_program_t *g_table[MAX_PUBLISHED];
static uint64_t g_nonce;
static uint64_t g_generation; /* programs published so far in this process */

static uint64_t nonce(void) {
    if (!g_nonce) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t v = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ull ^ (uint64_t)ts.tv_sec ^
                     ((uint64_t)getpid() << 32);
        g_nonce = (v & 0x3FFFFFFFFFF00000ull) | 0x100000ull;  /* never 0, low bits free */
    }
    return g_nonce;
}

/* Handles are the per-process random nonce plus a generation count that only grows, so a
 * handle is never issued twice in a process: once its program is gone, the handle is stale
 * and finds nothing, even when another program takes the table slot (a runtime graph saved by
 * onnxruntime's optimized_model_filepath keeps handles that must never run another program).
 * Lookups compare the whole handle over the table (kernel creation only, not per run). */
int64_t ortnpu_program_publish(ortnpu_program_t *p) {
    if (!p) return 0;
    int64_t handle = 0;
    pthread_mutex_lock(&g_lock);
    for (int k = 0; k < MAX_PUBLISHED && !p->handle; k++) {
        if (!g_table[k]) {
            g_table[k] = p;
            p->refs++;
            handle = (int64_t)(nonce() + ++g_generation);
            p->handle = handle;
        }
    }
    pthread_mutex_unlock(&g_lock);
    return handle;
}

ortnpu_program_t *ortnpu_program_acquire(int64_t handle) {
    ortnpu_program_t *p = NULL;
    if (handle == 0) return NULL;
    pthread_mutex_lock(&g_lock);
    for (int k = 0; k < MAX_PUBLISHED; k++) {
        if (g_table[k] && g_table[k]->handle == handle) {
            p = g_table[k];
            p->refs++;
            break;
        }
    }
    pthread_mutex_unlock(&g_lock);
    return p;
}

static void destroy(ortnpu_program_t *p) {
    for (int64_t k = 0; k < p->n_layers; k++) {
        for (int j = 0; j < 6; j++) free(p->layers[k].c[j]);
        ortnpu_conv_pack_free(p->layers[k].pack);
        ortnpu_fc_pack_free(p->layers[k].fcp);
        free(p->layers[k].tables);
        free(p->layers[k].pairs);
    }
    free(p->layers);
    free(p->slot_off);
    free(p->ins);
    free(p->outs);
    while (p->free_arenas) {
        arena_t *a = p->free_arenas;
        p->free_arenas = a->next;
        free(a);
    }
    pthread_mutex_destroy(&p->lock);
    free(p);
}

void ortnpu_program_release(ortnpu_program_t *p) {
    if (!p) return;
    pthread_mutex_lock(&g_lock);
    int64_t left = --p->refs;
    /* only the table's reference left: unpublish (no kernel and no Python object use it) */
    if (left == 1 && p->handle) {
        for (int k = 0; k < MAX_PUBLISHED; k++)
            if (g_table[k] == p) g_table[k] = NULL;
        p->handle = 0;
        left = --p->refs;
    }
    pthread_mutex_unlock(&g_lock);
    if (left == 0) destroy(p);
}

int32_t ortnpu_program_io(const ortnpu_program_t *p, int32_t is_out, int32_t k, int32_t *type,
                          int32_t *rank, int64_t *dims) {
    const int32_t n = is_out ? p->n_out : p->n_in;
    if (k < 0 || k >= n) return n;
    const io_t *io = is_out ? &p->outs[k] : &p->ins[k];
    *type = io->q ? 3 : io->type; /* 3: float32 at the boundary */
    *rank = io->rank;
    for (int d = 0; d < io->rank; d++) dims[d] = io->dims[d];
    return n;
}

const char *ortnpu_program_name(const ortnpu_program_t *p) { return p->name; }
