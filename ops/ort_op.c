/* onnxruntime custom op that runs a compiled program (program.c) with no Python in the loop.
 *
 * onnxruntime loads this library (the same shared object as the cffi module, so it sees the
 * programs Python compiled) through SessionOptions.register_custom_ops_library, which calls
 * RegisterCustomOps. The ops live in the runtime-only domain "com.ortnpu.native":
 * Program_<in>_<out> with in, out in {i8, u8, i16, f32}: one or more inputs, all of type <in>,
 * one or more outputs, all of type <out> (variadic, homogeneous: onnxruntime then infers every
 * output's type), and one attribute, `handle`, the number ortnpu_program_publish returned.
 * Saved models never contain them.
 *
 * RegisterCustomOps also registers the com.ortnpu domain itself (domain_op.c) once Python has
 * defined its ops, so one library serves both domains. The parts of onnxruntime's C ABI used
 * are declared in ort_abi.h. Every failure becomes an OrtStatus (an exception in Python), never
 * an abort.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ortnpu_kernels.h"

#include "ort_abi.h"
#include "ortnpu_domain.h"

/* -------------------------------------------------------------------------------- the op */
typedef struct {
    OrtCustomOp base;      /* first: onnxruntime hands back a pointer to it */
    int32_t in_type, out_type;
    char name[32];
} ortnpu_op_t;

typedef struct {
    int32_t type, rank;
    int64_t dims[8];
} ortnpu_io_t;

typedef struct {
    const OrtApi *api;
    ortnpu_program_t *program;
    int32_t n_in, n_out;
    ortnpu_io_t io[2 * ORTNPU_PROGRAM_MAX_IO]; /* the inputs, then the outputs */
} ortnpu_kernel_t;

/* type codes of the program's boundary: those of ortnpu_kernels.h, and 3 for float32 */
#define N_TYPES 4
static const char *const TYPE_NAME[N_TYPES] = {"i8", "u8", "i16", "f32"};
static const int ELEM_OF[N_TYPES] = {ELEM_INT8, ELEM_UINT8, ELEM_INT16, ELEM_FLOAT};

static OrtStatus *fail(const OrtApi *api, int code, const char *msg) {
    return ORT_FN(api, SLOT_CreateStatus, CreateStatus_fn)(code, msg);
}

static const char *op_name(const OrtCustomOp *op) { return ((const ortnpu_op_t *)op)->name; }
static const char *op_ep(const OrtCustomOp *op) {
    (void)op;
    return NULL; /* CPU */
}
static int op_in_type(const OrtCustomOp *op, size_t i) {
    (void)i;
    return ELEM_OF[((const ortnpu_op_t *)op)->in_type];
}
static int op_out_type(const OrtCustomOp *op, size_t i) {
    (void)i;
    return ELEM_OF[((const ortnpu_op_t *)op)->out_type];
}
static size_t op_one(const OrtCustomOp *op) {
    (void)op;
    return 1;
}
static int op_variadic(const OrtCustomOp *op, size_t i) {
    (void)op;
    (void)i;
    return 2; /* INPUT_OUTPUT_VARIADIC: one or more tensors of the one type */
}
static int op_default_mem(const OrtCustomOp *op, size_t i) {
    (void)op;
    (void)i;
    return 0; /* OrtMemTypeDefault */
}
static int op_arity(const OrtCustomOp *op) {
    (void)op;
    return 1; /* minimum arity 1; homogeneous */
}

static OrtStatus *kernel_create(const OrtCustomOp *op, const OrtApi *api,
                                const OrtKernelInfo *info, void **out) {
    const ortnpu_op_t *o = (const ortnpu_op_t *)op;
    char msg[512];
    *out = NULL;
    if (!api) return NULL; /* cannot happen: onnxruntime passes its table */
    int64_t handle = 0;
    OrtStatus *st = ORT_FN(api, SLOT_KernelInfoGetAttribute_int64,
                           KernelInfoGetAttribute_int64_fn)(info, "handle", &handle);
    if (st) return st;
    ortnpu_program_t *p = ortnpu_program_acquire(handle);
    if (!p) {
        snprintf(msg, sizeof msg,
                 "ortnpu: compiled program not found in this process: a %s node has handle %lld, "
                 "which is unknown or stale (its session is gone, or the graph was saved from "
                 "a running session with SessionOptions.optimized_model_filepath, or comes "
                 "from another process); com.ortnpu.native nodes only run inside the "
                 "ortnpu.InferenceSession that compiled them: load the NPU graph itself",
                 o->name, (long long)handle);
        return fail(api, ORT_INVALID_ARGUMENT, msg);
    }
    ortnpu_kernel_t *k = calloc(1, sizeof(*k));
    if (!k) {
        ortnpu_program_release(p);
        return fail(api, ORT_RUNTIME_EXCEPTION, "ortnpu: out of memory");
    }
    k->api = api;
    k->program = p;
    k->n_in = ortnpu_program_io(p, 0, -1, NULL, NULL, NULL);
    k->n_out = ortnpu_program_io(p, 1, -1, NULL, NULL, NULL);
    for (int32_t j = 0; j < k->n_in + k->n_out; j++) {
        ortnpu_io_t *io = &k->io[j];
        const int is_out = j >= k->n_in;
        ortnpu_program_io(p, is_out, is_out ? j - k->n_in : j, &io->type, &io->rank, io->dims);
        if (io->type != (is_out ? o->out_type : o->in_type)) {
            snprintf(msg, sizeof msg, "ortnpu: program %s's %s %d is %s, the node %s",
                     ortnpu_program_name(p), is_out ? "output" : "input",
                     is_out ? j - k->n_in : j, TYPE_NAME[io->type], o->name);
            ortnpu_program_release(p);
            free(k);
            return fail(api, ORT_INVALID_ARGUMENT, msg);
        }
    }
    *out = k;
    return NULL;
}

/* The shape of input j, checked against the program's [batch, dims...] (same batch for all). */
static OrtStatus *input_of(ortnpu_kernel_t *k, OrtKernelContext *ctx, int32_t j, int64_t *batch,
                           const void **data) {
    const OrtApi *api = k->api;
    char msg[512];
    const OrtValue *in = NULL;
    OrtStatus *st = ORT_FN(api, SLOT_KernelContext_GetInput, KernelContext_GetInput_fn)(
        ctx, (size_t)j, &in);
    if (st) return st;
    if (!in) return fail(api, ORT_INVALID_ARGUMENT, "ortnpu: missing input");
    OrtTensorTypeAndShapeInfo *info = NULL;
    st = ORT_FN(api, SLOT_GetTensorTypeAndShape, GetTensorTypeAndShape_fn)(in, &info);
    if (st) return st;
    size_t rank = 0;
    int64_t dims[9] = {0};
    st = ORT_FN(api, SLOT_GetDimensionsCount, GetDimensionsCount_fn)(info, &rank);
    if (!st && rank >= 1 && rank <= 9)
        st = ORT_FN(api, SLOT_GetDimensions, GetDimensions_fn)(info, dims, rank);
    ORT_FN(api, SLOT_ReleaseTensorTypeAndShapeInfo, ReleaseTensorTypeAndShapeInfo_fn)(info);
    if (st) return st;
    const ortnpu_io_t *io = &k->io[j];
    int ok = rank == (size_t)io->rank + 1 && dims[0] >= 0 && (*batch < 0 || dims[0] == *batch);
    for (int d = 0; ok && d < io->rank; d++) ok = dims[d + 1] == io->dims[d];
    if (!ok) {
        int n = snprintf(msg, sizeof msg, "ortnpu: %s: input %d has shape [",
                         ortnpu_program_name(k->program), j);
        for (size_t d = 0; d < rank && d < 9 && n < 400; d++)
            n += snprintf(msg + n, sizeof msg - (size_t)n, d ? ", %lld" : "%lld",
                          (long long)dims[d]);
        n += snprintf(msg + n, sizeof msg - (size_t)n, "], the compiled subgraph takes [%s",
                      *batch < 0 ? "batch" : "the batch of input 0");
        for (int d = 0; d < io->rank && n < 480; d++)
            n += snprintf(msg + n, sizeof msg - (size_t)n, ", %lld", (long long)io->dims[d]);
        snprintf(msg + n, sizeof msg - (size_t)n, "]");
        return fail(api, ORT_INVALID_ARGUMENT, msg);
    }
    *batch = dims[0];
    void *x = NULL;
    st = ORT_FN(api, SLOT_GetTensorMutableData, GetTensorMutableData_fn)((OrtValue *)in, &x);
    *data = x;
    return st;
}

static OrtStatus *kernel_compute(void *kernel, OrtKernelContext *ctx) {
    ortnpu_kernel_t *k = kernel;
    const OrtApi *api = k->api;
    char msg[512];
    size_t n_in = 0, n_out = 0;
    OrtStatus *st = ORT_FN(api, SLOT_KernelContext_GetInputCount,
                           KernelContext_GetInputCount_fn)(ctx, &n_in);
    if (!st)
        st = ORT_FN(api, SLOT_KernelContext_GetOutputCount, KernelContext_GetOutputCount_fn)(
            ctx, &n_out);
    if (st) return st;
    if (n_in != (size_t)k->n_in || n_out != (size_t)k->n_out) {
        snprintf(msg, sizeof msg, "ortnpu: %s takes %d input(s) and gives %d output(s), the node "
                 "has %zu and %zu", ortnpu_program_name(k->program), k->n_in, k->n_out, n_in,
                 n_out);
        return fail(api, ORT_INVALID_ARGUMENT, msg);
    }
    const void *xs[ORTNPU_PROGRAM_MAX_IO];
    void *ys[ORTNPU_PROGRAM_MAX_IO];
    int64_t batch = -1;
    for (int32_t j = 0; j < k->n_in; j++) {
        st = input_of(k, ctx, j, &batch, &xs[j]);
        if (st) return st;
    }
    for (int32_t j = 0; j < k->n_out; j++) {
        const ortnpu_io_t *io = &k->io[k->n_in + j];
        int64_t odims[9];
        odims[0] = batch;
        for (int d = 0; d < io->rank; d++) odims[d + 1] = io->dims[d];
        OrtValue *out = NULL;
        st = ORT_FN(api, SLOT_KernelContext_GetOutput, KernelContext_GetOutput_fn)(
            ctx, (size_t)j, odims, (size_t)io->rank + 1, &out);
        if (st) return st;
        void *y = NULL;
        st = ORT_FN(api, SLOT_GetTensorMutableData, GetTensorMutableData_fn)(out, &y);
        if (st) return st;
        ys[j] = y;
    }
    char err[400] = "";
    int rc = ortnpu_program_run_io(k->program, batch, xs, ys, err, sizeof err, NULL);
    if (rc != 0) {
        snprintf(msg, sizeof msg, "ortnpu: %s", err);
        return fail(api, ORT_RUNTIME_EXCEPTION, msg);
    }
    return NULL;
}

static void kernel_destroy(void *kernel) {
    ortnpu_kernel_t *k = kernel;
    if (!k) return;
    ortnpu_program_release(k->program);
    free(k);
}

/* Version-1 entry points, used only by a runtime that ignores the V2 ones: no status can
 * be returned there, so a failure leaves the output unwritten (never reached on 1.16+). */
static void *kernel_create_v1(const OrtCustomOp *op, const OrtApi *api,
                              const OrtKernelInfo *info) {
    void *k = NULL;
    OrtStatus *st = kernel_create(op, api, info, &k);
    if (st) ORT_FN(api, SLOT_ReleaseStatus, ReleaseStatus_fn)(st);
    return k;
}

static void kernel_compute_v1(void *kernel, OrtKernelContext *ctx) {
    ortnpu_kernel_t *k = kernel;
    if (!k) return;
    OrtStatus *st = kernel_compute(kernel, ctx);
    if (st) ORT_FN(k->api, SLOT_ReleaseStatus, ReleaseStatus_fn)(st);
}

static ortnpu_op_t g_ops[N_TYPES * N_TYPES];

static void init_ops(void) {
    for (int i = 0; i < N_TYPES; i++) {
        for (int j = 0; j < N_TYPES; j++) {
            ortnpu_op_t *o = &g_ops[i * N_TYPES + j];
            memset(o, 0, sizeof(*o));
            o->in_type = i;
            o->out_type = j;
            snprintf(o->name, sizeof o->name, "Program_%s_%s", TYPE_NAME[i], TYPE_NAME[j]);
            OrtCustomOp *b = &o->base;
            b->version = ORTNPU_OP_VERSION;
            b->CreateKernel = kernel_create_v1;
            b->GetName = op_name;
            b->GetExecutionProviderType = op_ep;
            b->GetInputType = op_in_type;
            b->GetInputTypeCount = op_one;
            b->GetOutputType = op_out_type;
            b->GetOutputTypeCount = op_one;
            b->KernelCompute = kernel_compute_v1;
            b->KernelDestroy = kernel_destroy;
            b->GetInputCharacteristic = op_variadic;
            b->GetOutputCharacteristic = op_variadic;
            b->GetInputMemoryType = op_default_mem;
            b->GetVariadicInputMinArity = op_arity;
            b->GetVariadicInputHomogeneity = op_arity;
            b->GetVariadicOutputMinArity = op_arity;
            b->GetVariadicOutputHomogeneity = op_arity;
            b->CreateKernelV2 = kernel_create;
            b->KernelComputeV2 = kernel_compute;
        }
    }
}

#include <pthread.h>
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

ORTNPU_EXPORT OrtStatus *RegisterCustomOps(OrtSessionOptions *options, const OrtApiBase *base) {
    const OrtApi *api = base ? base->GetApi(ORTNPU_OP_VERSION) : NULL;
    if (!api) return NULL; /* onnxruntime older than 1.16: nothing registered, models say so */
    pthread_once(&g_once, init_ops);
    /* a new domain per registration, kept for the life of the process: onnxruntime reads it
     * for as long as sessions made from these options live */
    OrtCustomOpDomain *domain = NULL;
    OrtStatus *st = ORT_FN(api, SLOT_CreateCustomOpDomain, CreateCustomOpDomain_fn)(
        "com.ortnpu.native", &domain);
    if (st) return st;
    for (int i = 0; i < N_TYPES * N_TYPES; i++) {
        st = ORT_FN(api, SLOT_CustomOpDomain_Add, CustomOpDomain_Add_fn)(domain, &g_ops[i].base);
        if (st) return st;
    }
    st = ORT_FN(api, SLOT_AddCustomOpDomain, AddCustomOpDomain_fn)(options, domain);
    if (st) return st;
    return ortnpu_domain_register(options, api);
}
