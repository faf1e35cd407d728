/* ortnpu C kernels: public interface (also parsed by cffi's cdef, so keep it plain C, no
 * preprocessor directives between the markers below).
 *
 * Every kernel must give the same bits as the numpy reference of its op
 * (ortnpu/domain/ops_*.py, arithmetic in ortnpu/domain/arith.py). Inputs are validated in Python
 * before the call; the kernels still refuse impossible sizes (return ORTNPU_EBADARG) instead of
 * reading or writing out of bounds. Return codes: 0 ok, -1 bad argument, -2 out of memory.
 *
 * Element types (ORTNPU_T_*): 0 int8, 1 uint8, 2 int16.
 * Rounding rules (ORTNPU_R_*): 0 tflite_double, 1 tflite_single, 2 tflite_int64, 3 half_up.
 * isa: 0 portable C, 1 AVX2, 2 AVX-512 VNNI for the GEMM tile (each falls back to the next
 *      narrower path the CPU supports). Every path gives the same bits.
 */
#ifndef ORTNPU_KERNELS_H
#define ORTNPU_KERNELS_H

#include <stdint.h>

/* --- cdef begin --- */
typedef struct {
    int32_t rule;      /* rounding rule */
    int32_t acc_bits;  /* 32 (wrapping accumulator) or 64 */
    int64_t y_zp;      /* output zero point, added after the rescale */
    int64_t act_min;   /* output clamp */
    int64_t act_max;
    int32_t otype;     /* output element type */
} ortnpu_out_t;

typedef struct {
    int64_t n, c, h, w;            /* input NCHW */
    int64_t cout, cg, kh, kw;      /* weights [cout, cg, kh, kw] */
    int64_t group;
    int64_t sh, sw, dh, dw;        /* strides, dilations */
    int64_t pt, pl, pb, pr;        /* pads top, left, bottom, right */
    int64_t oh, ow;                /* output size (checked against the geometry) */
    int64_t x_zp;
    int32_t xtype;
    int32_t n_params;              /* length of multiplier/shift: 1 or cout */
} ortnpu_conv_t;

int ortnpu_cpu_has_avx2(void);
int ortnpu_cpu_has_vnni(void);
/* n dependent one-cycle integer adds (x86-64): timed, they give the core's running clock */
uint64_t ortnpu_clock_probe(uint64_t n);
/* n steps of 12 independent int8 multiply-add instructions of the best path (VPDPBUSD with
 * AVX-512 VNNI, else VPMADDWD): returns the multiply-adds done (0 without either) */
uint64_t ortnpu_mac_probe(uint64_t n);
int ortnpu_has_openmp(void);
int ortnpu_max_threads(void);
/* force (1) or release (0) the depthwise row kernel on small maps (tests compare both) */
void ortnpu_force_dw_rows(int on);

int ortnpu_conv2d(const ortnpu_conv_t *p, const ortnpu_out_t *o, const void *x, const int8_t *w,
                  const int64_t *bias, const int32_t *mult, const int32_t *shift, void *y,
                  int nthreads, int isa);

/* x [rows, k] (contiguous), w [n, k] int8, y [rows, n]. */
int ortnpu_fully_connected(int64_t rows, int64_t k, int64_t n, const void *x, int32_t xtype,
                           int64_t x_zp, const int8_t *w, const int64_t *bias,
                           const int32_t *mult, const int32_t *shift, int32_t n_params,
                           const ortnpu_out_t *o, void *y, int nthreads, int isa);

/* a [.., m, k], b [.., k, n] contiguous; batch i uses the matrices at element offsets
 * a_off[i] and b_off[i]; y [batch, m, n]. Per-tensor multiplier/shift. */
int ortnpu_matmul(int64_t batch, int64_t m, int64_t k, int64_t n, const void *a, int32_t atype,
                  int64_t a_zp, const int64_t *a_off, int64_t a_len, const void *b,
                  int32_t btype, int64_t b_zp, const int64_t *b_off, int64_t b_len,
                  int32_t mult, int32_t shift, const ortnpu_out_t *o, void *y, int nthreads,
                  int isa);

/* Elementwise Add (op 0) and Mul (op 1) with numpy broadcasting: `ndim` dims of the output
 * shape, element strides of a and b per dim (0 where broadcast). params: Add: a_zp, b_zp,
 * left_shift, a_mult, a_shift, b_mult, b_shift, y_mult, y_shift; Mul: a_zp, b_zp, mult, shift. */
int ortnpu_binary(int32_t op, int32_t ndim, const int64_t *shape, const void *a, int32_t atype,
                  const int64_t *astride, int64_t a_len, const void *b, int32_t btype,
                  const int64_t *bstride, int64_t b_len, const int64_t *params,
                  const ortnpu_out_t *o, void *y, int nthreads, int isa);

/* x viewed as [outer, ch, inner]; multiplier/shift of length 1 or ch. */
int ortnpu_requantize(int64_t outer, int64_t ch, int64_t inner, const void *x, int32_t xtype,
                      int64_t x_zp, const int32_t *mult, const int32_t *shift, int32_t n_params,
                      const ortnpu_out_t *o, void *y, int nthreads, int isa);

int ortnpu_lut(int64_t count, const void *x, int32_t xtype, const void *table, int32_t ttype,
               int64_t table_len, void *y, int nthreads);

/* Resize (kernels_resize.c): `planes` NCHW planes of h x w to oh x ow. ytab [3, oh] and
 * xtab [3, ow]: lower index, upper index, upper weight in 1/1024 (ops_resize.axis_table);
 * nearest (bilinear 0) reads the lower index only. */
int ortnpu_resize(int64_t planes, int64_t h, int64_t w, int64_t oh, int64_t ow,
                  int32_t bilinear, const int32_t *ytab, const int32_t *xtab, const void *x,
                  int32_t xtype, void *y, int nthreads);

/* op 0 max, 1 average. win: kh, kw, sh, sw, dh, dw, pt, pl, pb, pr, oh, ow. */
int ortnpu_pool2d(int32_t op, int64_t n, int64_t c, int64_t h, int64_t w, const int64_t *win,
                  const void *x, int32_t xtype, int64_t act_min, int64_t act_max, void *y,
                  int nthreads);

int ortnpu_global_avgpool(int64_t n, int64_t c, int64_t hw, const void *x, int32_t xtype,
                          int64_t act_min, int64_t act_max, void *y, int nthreads);

/* kernels_steps.c. Elementwise ops with the broadcasting of ortnpu_binary: op 2 Sub (TFLite's
 * SUB: the Add scheme and params of op 0 with b's multiplier negated, prm[5] its magnitude),
 * 3 Maximum, 4 Minimum (a, b and y of one type; prm and the clamp unused), 5 SquaredDifference
 * (TFLite's SQUARED_DIFFERENCE: Add's params, the rescaled operands' difference squared),
 * 6 Sub with TOSA's order (op 2's params; b rescaled with prm[5], then negated). */
int ortnpu_binary_ext(int32_t op, int32_t ndim, const int64_t *shape, const void *a,
                      int32_t atype, const int64_t *astride, int64_t a_len, const void *b,
                      int32_t btype, const int64_t *bstride, int64_t b_len, const int64_t *prm,
                      const ortnpu_out_t *o, void *y, int nthreads);
/* Slice: y (dims odims, contiguous) = x[start + sum_d idx_d * istride[d]] (element strides,
 * negative for a negative step); every offset reached must lie in [0, x_len). */
int ortnpu_strided_copy(int32_t ndim, const int64_t *odims, const int64_t *istride,
                        int64_t start, int64_t x_len, const void *x, void *y,
                        int32_t elem_size);
/* Compiled programs (program.c): a fused subgraph run in C, layer by layer, sample by sample.
 * Slots: 0 .. n_in-1 the program's inputs, n_in .. n_in+n_out-1 its outputs, the others
 * intermediates at slot_off[k] bytes into the arena. Shapes are per sample (the batch axis,
 * axis 0, is looped over; every input and output has it). A program is reference counted:
 * _new returns one reference, _release drops one. */
#define ORTNPU_PROGRAM_MAX_IO 64
typedef struct ortnpu_program ortnpu_program_t;

/* in_dims/out_dims: 8 entries per input/output (the first rank of them used) */
ortnpu_program_t *ortnpu_program_new_io(const char *name, int32_t n_in, const int32_t *in_types,
                                        const int32_t *in_ranks, const int64_t *in_dims,
                                        int32_t n_out, const int32_t *out_types,
                                        const int32_t *out_ranks, const int64_t *out_dims,
                                        int64_t n_slots, const int64_t *slot_off,
                                        int64_t arena_bytes, int isa, int nthreads);
/* one input and one output */
ortnpu_program_t *ortnpu_program_new(const char *name, int32_t in_type, int32_t in_rank,
                                     const int64_t *in_dims, int32_t out_type, int32_t out_rank,
                                     const int64_t *out_dims, int64_t n_slots,
                                     const int64_t *slot_off, int64_t arena_bytes, int isa,
                                     int nthreads);
int ortnpu_program_add_conv(ortnpu_program_t *p, const char *name, int32_t in, int32_t out,
                            const ortnpu_conv_t *conv, const ortnpu_out_t *o, const int8_t *w,
                            const int64_t *bias, const int32_t *mult, const int32_t *shift,
                            int nthreads);
int ortnpu_program_add_fc(ortnpu_program_t *p, const char *name, int32_t in, int32_t out,
                          int64_t rows, int64_t k, int64_t n, int32_t xtype, int64_t x_zp,
                          const int8_t *w, const int64_t *bias, const int32_t *mult,
                          const int32_t *shift, int32_t n_params, const ortnpu_out_t *o,
                          int nthreads);
/* op: 0 Add, 1 Mul (ortnpu_binary), 2 Sub, 3 Maximum, 4 Minimum, 5 SquaredDifference,
 * 6 Sub negating after the rescale (ortnpu_binary_ext); params
 * has 9 entries. in0/in1 = -1: that operand is the constant a_const/b_const (copied) */
int ortnpu_program_add_binary(ortnpu_program_t *p, const char *name, int32_t op, int32_t in0,
                              int32_t in1, int32_t out, int32_t ndim, const int64_t *shape,
                              int32_t atype, const int64_t *astride, int64_t a_len,
                              const void *a_const, int32_t btype, const int64_t *bstride,
                              int64_t b_len, const void *b_const, const int64_t *params,
                              const ortnpu_out_t *o, int nthreads);
int ortnpu_program_add_requantize(ortnpu_program_t *p, const char *name, int32_t in,
                                  int32_t out, int64_t outer, int64_t ch, int64_t inner,
                                  int32_t xtype, int64_t x_zp, const int32_t *mult,
                                  const int32_t *shift, int32_t n_params, const ortnpu_out_t *o,
                                  int nthreads);
int ortnpu_program_add_lut(ortnpu_program_t *p, const char *name, int32_t in, int32_t out,
                           int64_t count, int32_t xtype, const void *table, int32_t ttype,
                           int64_t table_len, int nthreads);
int ortnpu_program_add_softmax(ortnpu_program_t *p, const char *name, int32_t in, int32_t out,
                               int64_t rows, int64_t depth, int32_t xtype, int32_t mult,
                               int32_t shift, int32_t diff_min, const int16_t *exp_lut,
                               const int16_t *recip_lut, int nthreads);
int ortnpu_program_add_pool(ortnpu_program_t *p, const char *name, int32_t op, int32_t in,
                            int32_t out, int64_t n, int64_t c, int64_t h, int64_t w,
                            const int64_t *win, int32_t xtype, int64_t act_min, int64_t act_max,
                            int nthreads);
int ortnpu_program_add_gap(ortnpu_program_t *p, const char *name, int32_t in, int32_t out,
                           int64_t n, int64_t c, int64_t hw, int32_t xtype, int64_t act_min,
                           int64_t act_max, int nthreads);
int ortnpu_program_add_copy(ortnpu_program_t *p, const char *name, int32_t in, int32_t out,
                            int64_t nbytes);
/* pads in ONNX order (begins then ends) over the sample's dims; value already in the type */
int ortnpu_program_add_pad(ortnpu_program_t *p, const char *name, int32_t in, int32_t out,
                           int32_t ndim, const int64_t *dims, const int64_t *pads, int64_t value,
                           int32_t elem_size);
/* out = for each of `outer` blocks, the inner_bytes[k] bytes of each input k in turn; an
 * input slot of -1 is a constant, read from `consts` (the constants' outer x inner_bytes[k]
 * bytes one after the other; copied) */
int ortnpu_program_add_concat(ortnpu_program_t *p, const char *name, int32_t n_in,
                              const int32_t *ins, int32_t out, int64_t outer,
                              const int64_t *inner_bytes, const void *consts);
/* Slice as a strided copy (ortnpu_strided_copy's arguments, for one sample) */
int ortnpu_program_add_strided(ortnpu_program_t *p, const char *name, int32_t in, int32_t out,
                               int32_t ndim, const int64_t *odims, const int64_t *istride,
                               int64_t start, int64_t x_len, int32_t elem_size);
/* MatMul of two operands (ortnpu_matmul's arguments, for one sample); in0/in1 = -1: that
 * operand is the constant a_const/b_const (copied) */
int ortnpu_program_add_matmul(ortnpu_program_t *p, const char *name, int32_t in0, int32_t in1,
                              int32_t out, int64_t batch, int64_t m, int64_t k, int64_t n,
                              int32_t atype, int64_t a_zp, const int64_t *a_off, int64_t a_len,
                              const void *a_const, int32_t btype, int64_t b_zp,
                              const int64_t *b_off, int64_t b_len, const void *b_const,
                              int32_t mult, int32_t shift, const ortnpu_out_t *o, int nthreads);
/* dims: the input's dimensions for one sample (batch axis included, = 1); elem_size 1 or 2 */
int ortnpu_program_add_transpose(ortnpu_program_t *p, const char *name, int32_t in,
                                 int32_t out, int32_t ndim, const int64_t *dims,
                                 const int64_t *perm, int32_t elem_size);
/* Resize layer (ortnpu_resize on one sample's planes, tables copied) */
int ortnpu_program_add_resize(ortnpu_program_t *p, const char *name, int32_t in, int32_t out,
                              int64_t planes, int64_t h, int64_t w, int64_t oh, int64_t ow,
                              int32_t bilinear, const int32_t *ytab, const int32_t *xtab,
                              int32_t xtype, int nthreads);
/* Float boundary: with q_in the program takes float input and quantizes it as onnxruntime's
 * QuantizeLinear (scale, zero point) into q_off of the arena; with dq_out it dequantizes its
 * output from dq_off as DequantizeLinear into a float output. Offsets must be inside the
 * arena and apart from every intermediate. nan_mode, for NaN in the float input: 0 quantize it
 * as MLAS does (to the lowest integer), 1 as 0.0, 2 fail the run (code -3, message says so).
 * _set_float_io: input 0 and output 0; _set_io_float: input (is_out 0) or output k. */
int ortnpu_program_set_float_io(ortnpu_program_t *p, int q_in, float q_scale, int64_t q_zp,
                                int64_t q_off, int dq_out, float dq_scale, int64_t dq_zp,
                                int64_t dq_off, int nan_mode);
int ortnpu_program_set_io_float(ortnpu_program_t *p, int32_t is_out, int32_t k, float scale,
                                int64_t zp, int64_t off, int nan_mode);
/* A program compiled for the whole batch of a model that fixes it: its layers were built for
 * all `batch` samples at once, so it accepts only that batch and runs it as one unit (no
 * per-sample loop, so no need for the layers to treat samples independently). Call before
 * ortnpu_program_set_float_io. Returns ORTNPU_EBADARG on a bad batch. */
int ortnpu_program_set_fixed_batch(ortnpu_program_t *p, int64_t batch);
/* x [batch, in_dims...], y [batch, out_dims...]; on failure err gets a message */
int ortnpu_program_run(ortnpu_program_t *p, int64_t batch, const void *x, void *y, char *err,
                       int64_t err_len);
/* the same, adding each layer's time in nanoseconds to ns[layer] (the layers' profile) */
int ortnpu_program_run_timed(ortnpu_program_t *p, int64_t batch, const void *x, void *y,
                             char *err, int64_t err_len, double *ns);
/* every input x[k] [batch, in_dims[k]...] and output y[k]; ns as above (or NULL) */
int ortnpu_program_run_io(ortnpu_program_t *p, int64_t batch, const void *const *x,
                          void *const *y, char *err, int64_t err_len, double *ns);
/* the number of layers; the name of layer k goes to name when 0 <= k < that number */
int64_t ortnpu_program_layers(const ortnpu_program_t *p, int64_t k, char *name,
                              int64_t name_len);
/* a nonzero handle by which onnxruntime kernels find the program (0: table full) */
int64_t ortnpu_program_publish(ortnpu_program_t *p);
ortnpu_program_t *ortnpu_program_acquire(int64_t handle);
void ortnpu_program_release(ortnpu_program_t *p);
/* Softmax over rows of `depth` contiguous values (TFLite's reference SOFTMAX): 8-bit x
 * (int8/uint8, depth <= 511) with gemmlowp's fixed point (mult, left shift, diff_min); int16 x
 * (depth <= 65536) with the two 513-entry tables (mult, signed shift). kernels_softmax.c */
int ortnpu_softmax(int64_t rows, int64_t depth, const void *x, int32_t xtype, int32_t mult,
                   int32_t shift, int32_t diff_min, const int16_t *exp_lut,
                   const int16_t *recip_lut, void *y, int nthreads);

/* --- cdef end --- */

/* The per-value tables of an 8-bit Add (512 values: a's then b's), made once for repeated
 * runs; 0 when the op does not use tables. ortnpu_binary_tabled takes them (or NULL). */
int ortnpu_binary_tables(int32_t op, int32_t atype, int32_t btype, const int64_t *prm,
                         int32_t rule, int64_t *ta, int64_t *tb);
int ortnpu_binary_tabled(int32_t op, int32_t ndim, const int64_t *shape, const void *a,
                         int32_t atype, const int64_t *astride, int64_t a_len, const void *b,
                         int32_t btype, const int64_t *bstride, int64_t b_len,
                         const int64_t *prm, const int64_t *given, const ortnpu_out_t *o,
                         void *y, int nthreads, int isa);

/* A compiled program's input (is_out 0) or output k at its boundary: type code (3: float32
 * at a quantize/dequantize boundary), per-sample rank and dims; returns the number of inputs
 * (or outputs), and leaves the outputs alone when k is out of range. For ort_op.c. */
int32_t ortnpu_program_io(const ortnpu_program_t *p, int32_t is_out, int32_t k, int32_t *type,
                          int32_t *rank, int64_t *dims);
const char *ortnpu_program_name(const ortnpu_program_t *p);

/* Weights of one convolution packed once for repeated runs (compiled programs): valid only
 * with the same ortnpu_conv_t (apart from n), ortnpu_out_t and isa. */
typedef struct ortnpu_conv_pack ortnpu_conv_pack_t;
ortnpu_conv_pack_t *ortnpu_conv_pack_new(const ortnpu_conv_t *p, const ortnpu_out_t *o,
                                         const int8_t *w, const int64_t *bias, int isa);
void ortnpu_conv_pack_free(ortnpu_conv_pack_t *pk);
int ortnpu_conv2d_packed(const ortnpu_conv_pack_t *pk, const ortnpu_conv_t *p,
                         const ortnpu_out_t *o, const void *x, const int8_t *w,
                         const int32_t *mult, const int32_t *shift, void *y, int nthreads);

/* FullyConnected of 8-bit input with the output channels in the SIMD lanes (AVX-512 VNNI,
 * acc_bits 32, tflite_double; NULL when that does not apply): x [rows, k], y [rows, n]. */
typedef struct ortnpu_fc_pack ortnpu_fc_pack_t;
ortnpu_fc_pack_t *ortnpu_fc_pack_new(int64_t k, int64_t n, int32_t xtype, int64_t x_zp,
                                     const int8_t *w, const int64_t *bias, const int32_t *mult,
                                     const int32_t *shift, int32_t n_params,
                                     const ortnpu_out_t *o, int isa);
void ortnpu_fc_pack_free(ortnpu_fc_pack_t *pk);
int ortnpu_fc_packed(const ortnpu_fc_pack_t *pk, int64_t rows, const void *x, void *y,
                     int nthreads);


/* ortnpu_softmax with, for 8-bit input, the exponential of every difference x - max made once
 * by ortnpu_softmax8_table (tab[-d] for d in [-255, 0]; NULL: evaluated per element). */
void ortnpu_softmax8_table(int32_t mult, int32_t shift, int32_t diff_min, int32_t *tab);
int ortnpu_softmax_tab(int64_t rows, int64_t depth, const void *x, int32_t xtype, int32_t mult,
                       int32_t shift, int32_t diff_min, const int16_t *exp_lut,
                       const int16_t *recip_lut, const int32_t *exp8, void *y, int nthreads);

#endif
