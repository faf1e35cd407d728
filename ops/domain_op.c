/* The com.ortnpu domain as native onnxruntime custom ops (see ortnpu_domain.h).
 *
 * onnxruntime-extensions' Python custom ops (the fallback when this module is not built) turn
 * string attributes into Python str inside their C++ kernel, and an undecodable one aborts the
 * process; they cannot return an error status either. Here the attributes reach Python as bytes
 * when onnxruntime creates the kernel (at load), and every error is an OrtStatus.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ort_abi.h"
#include "ortnpu_domain.h"

#define DOM_MAX_IN 24
#define DOM_MAX_ATTR 24
#define DOM_MAX_RANK 16
#define DOM_NAME 64

typedef struct {
    int32_t n;
    char names[DOM_MAX_ATTR][DOM_NAME];
    int32_t kinds[DOM_MAX_ATTR];
} dom_spec_t;

typedef struct {
    OrtCustomOp base; /* first: onnxruntime hands back a pointer to it */
    int32_t op_id, n_in, out_type;
    int32_t in_types[DOM_MAX_IN];
    const dom_spec_t *spec;
    char name[DOM_NAME];
} dom_op_t;

typedef struct {
    const OrtApi *api;
    const dom_op_t *op;
    int64_t py; /* the Python kernel's id */
} dom_kernel_t;

typedef struct { /* one compute call, handed to Python as an opaque pointer */
    const dom_kernel_t *kernel;
    OrtKernelContext *ctx;
} dom_call_t;

/* Ops are declared once per process by Python (under its registry lock) before any session
 * uses them, and live until the process ends: onnxruntime keeps pointers to them. */
static dom_spec_t **g_specs;
static int32_t g_n_specs, g_cap_specs;
static dom_op_t **g_ops;
static int32_t g_n_ops, g_cap_ops;
static volatile int g_python_alive = 1;

static OrtStatus *dom_fail(const OrtApi *api, int code, const char *msg) {
    return ORT_FN(api, SLOT_CreateStatus, CreateStatus_fn)(code, msg);
}

static void dom_release(const OrtApi *api, OrtStatus *st) {
    if (st) ORT_FN(api, SLOT_ReleaseStatus, ReleaseStatus_fn)(st);
}

static int grow(void **items, int32_t *cap, int32_t n, size_t size) {
    if (n < *cap) return 0;
    int32_t c = *cap ? *cap * 2 : 64;
    void *p = realloc(*items, (size_t)c * size);
    if (!p) return -1;
    *items = p;
    *cap = c;
    return 0;
}

int32_t ortnpu_domain_spec(int32_t n_attrs, const char *const *names, const int32_t *kinds) {
    if (n_attrs < 0 || n_attrs > DOM_MAX_ATTR) return -1;
    if (grow((void **)&g_specs, &g_cap_specs, g_n_specs, sizeof(*g_specs))) return -1;
    dom_spec_t *s = calloc(1, sizeof(*s));
    if (!s) return -1;
    s->n = n_attrs;
    for (int32_t a = 0; a < n_attrs; a++) {
        if (strlen(names[a]) >= DOM_NAME) {
            free(s);
            return -1;
        }
        strcpy(s->names[a], names[a]);
        s->kinds[a] = kinds[a];
    }
    g_specs[g_n_specs] = s;
    return g_n_specs++;
}

int32_t ortnpu_domain_count(void) { return g_n_ops; }

void ortnpu_domain_python_gone(void) { g_python_alive = 0; }

/* ------------------------------------------------------------------ the OrtCustomOp callbacks */
static const dom_op_t *as_op(const OrtCustomOp *op) { return (const dom_op_t *)op; }
static const char *dom_name(const OrtCustomOp *op) { return as_op(op)->name; }
static const char *dom_ep(const OrtCustomOp *op) {
    (void)op;
    return NULL; /* CPU */
}
static int dom_in_type(const OrtCustomOp *op, size_t i) {
    return i < (size_t)as_op(op)->n_in ? as_op(op)->in_types[i] : 0;
}
static size_t dom_in_count(const OrtCustomOp *op) { return (size_t)as_op(op)->n_in; }
static int dom_out_type(const OrtCustomOp *op, size_t i) {
    (void)i;
    return as_op(op)->out_type;
}
static size_t dom_one(const OrtCustomOp *op) {
    (void)op;
    return 1;
}
static int dom_zero(const OrtCustomOp *op, size_t i) {
    (void)op;
    (void)i;
    return 0; /* INPUT_OUTPUT_REQUIRED, OrtMemTypeDefault */
}
static int dom_arity(const OrtCustomOp *op) {
    (void)op;
    return 1;
}

/* Read one attribute as whatever kind the node gives it: present = ORTNPU_ATTR_* or 0. */
static void read_attr(const OrtApi *api, const OrtKernelInfo *info, const char *name,
                      int32_t *present, int64_t *i, double *f, char **s, size_t *len) {
    OrtStatus *st = ORT_FN(api, SLOT_KernelInfoGetAttribute_int64,
                           KernelInfoGetAttribute_int64_fn)(info, name, i);
    if (!st) {
        *present = ORTNPU_ATTR_INT;
        return;
    }
    /* onnxruntime says "No attribute with name:'x'is defined." when the node lacks it, and
     * "Attribute name and type don't match" when it has another type */
    const char *msg = ORT_FN(api, SLOT_GetErrorMessage, GetErrorMessage_fn)(st);
    int absent = msg && strstr(msg, "No attribute with name") != NULL;
    dom_release(api, st);
    if (absent) {
        *present = 0; /* Python refuses the node: every declared attribute is required */
        return;
    }
    size_t size = 0;
    KernelInfoGetAttribute_string_fn get_string =
        ORT_FN(api, SLOT_KernelInfoGetAttribute_string, KernelInfoGetAttribute_string_fn);
    st = get_string(info, name, NULL, &size);
    if (!st) {
        char *buf = malloc(size + 1); /* size counts the terminating NUL */
        if (buf) {
            st = get_string(info, name, buf, &size);
            if (!st) {
                buf[size] = 0;
                *s = buf;
                *len = size ? size - 1 : 0; /* the bytes themselves, NULs inside included */
                *present = ORTNPU_ATTR_STRING;
                return;
            }
            free(buf);
        }
    }
    dom_release(api, st);
    float v = 0;
    st = ORT_FN(api, SLOT_KernelInfoGetAttribute_float, KernelInfoGetAttribute_float_fn)(info,
                                                                                     name, &v);
    if (!st) {
        *f = v;
        *present = ORTNPU_ATTR_FLOAT;
        return;
    }
    dom_release(api, st);
    *present = ORTNPU_ATTR_OTHER; /* a list, tensor, graph, ... */
}

static OrtStatus *dom_create(const OrtCustomOp *op_, const OrtApi *api, const OrtKernelInfo *info,
                             void **out) {
    const dom_op_t *op = as_op(op_);
    const dom_spec_t *spec = op->spec;
    *out = NULL;
    if (!api) return NULL; /* cannot happen: onnxruntime passes its table */
    if (!g_python_alive)
        return dom_fail(api, ORT_RUNTIME_EXCEPTION, "ortnpu: Python is shutting down");
    int32_t present[DOM_MAX_ATTR] = {0};
    int64_t ints[DOM_MAX_ATTR] = {0};
    double floats[DOM_MAX_ATTR] = {0};
    char *strings[DOM_MAX_ATTR] = {0};
    size_t lengths[DOM_MAX_ATTR] = {0};
    for (int32_t a = 0; a < spec->n; a++)
        read_attr(api, info, spec->names[a], &present[a], &ints[a], &floats[a], &strings[a],
                  &lengths[a]);
    char err[1024] = "";
    int64_t py = ortnpu_py_kernel_create(op->op_id, spec->n, present, ints, floats,
                                         (const char *const *)strings, lengths, err, sizeof err);
    for (int32_t a = 0; a < spec->n; a++) free(strings[a]);
    if (py <= 0) {
        if (!err[0])
            snprintf(err, sizeof err, "ortnpu: %s: the Python side of the com.ortnpu domain did "
                     "not answer (is ortnpu imported in this process?)", op->name);
        return dom_fail(api, ORT_INVALID_ARGUMENT, err);
    }
    dom_kernel_t *k = calloc(1, sizeof(*k));
    if (!k) {
        ortnpu_py_kernel_destroy(py);
        return dom_fail(api, ORT_RUNTIME_EXCEPTION, "ortnpu: out of memory");
    }
    k->api = api;
    k->op = op;
    k->py = py;
    *out = k;
    return NULL;
}

static size_t elem_size(int type) {
    switch (type) {
    case ELEM_INT8: case ELEM_UINT8: return 1;
    case ELEM_INT16: return 2;
    case ELEM_FLOAT: case 6: return 4; /* float, int32 */
    case 7: return 8;                  /* int64 */
    default: return 0;
    }
}

static OrtStatus *dom_compute(void *kernel, OrtKernelContext *ctx) {
    dom_kernel_t *k = kernel;
    const OrtApi *api = k->api;
    char err[1024] = "";
    size_t n = 0;
    OrtStatus *st = ORT_FN(api, SLOT_KernelContext_GetInputCount,
                           KernelContext_GetInputCount_fn)(ctx, &n);
    if (st) return st;
    if (n > DOM_MAX_IN) return dom_fail(api, ORT_INVALID_ARGUMENT, "ortnpu: too many inputs");
    void *data[DOM_MAX_IN] = {0};
    int32_t types[DOM_MAX_IN] = {0}, ranks[DOM_MAX_IN] = {0};
    int64_t dims[DOM_MAX_IN * DOM_MAX_RANK], nbytes[DOM_MAX_IN] = {0};
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        const OrtValue *v = NULL;
        st = ORT_FN(api, SLOT_KernelContext_GetInput, KernelContext_GetInput_fn)(ctx, i, &v);
        if (st) return st;
        if (!v) {
            snprintf(err, sizeof err, "ortnpu: %s: input %zu is missing", k->op->name, i);
            return dom_fail(api, ORT_INVALID_ARGUMENT, err);
        }
        OrtTensorTypeAndShapeInfo *info = NULL;
        st = ORT_FN(api, SLOT_GetTensorTypeAndShape, GetTensorTypeAndShape_fn)(v, &info);
        if (st) return st;
        int type = 0;
        size_t rank = 0;
        st = ORT_FN(api, SLOT_GetTensorElementType, GetTensorElementType_fn)(info, &type);
        if (!st) st = ORT_FN(api, SLOT_GetDimensionsCount, GetDimensionsCount_fn)(info, &rank);
        if (!st && rank > DOM_MAX_RANK) {
            snprintf(err, sizeof err, "ortnpu: %s: input %zu has rank %zu, more than %d",
                     k->op->name, i, rank, DOM_MAX_RANK);
            st = dom_fail(api, ORT_INVALID_ARGUMENT, err);
        }
        if (!st && rank) st = ORT_FN(api, SLOT_GetDimensions, GetDimensions_fn)(info, dims + pos,
                                                                                rank);
        ORT_FN(api, SLOT_ReleaseTensorTypeAndShapeInfo, ReleaseTensorTypeAndShapeInfo_fn)(info);
        if (st) return st;
        st = ORT_FN(api, SLOT_GetTensorMutableData, GetTensorMutableData_fn)((OrtValue *)v,
                                                                             &data[i]);
        if (st) return st;
        types[i] = type;
        ranks[i] = (int32_t)rank;
        int64_t bytes = (int64_t)elem_size(type); /* 0 for a type Python refuses */
        for (size_t d = 0; d < rank; d++) bytes *= dims[pos + d] > 0 ? dims[pos + d] : 0;
        nbytes[i] = bytes;
        pos += rank;
    }
    dom_call_t call = {k, ctx};
    if (!ortnpu_py_kernel_compute(k->py, &call, (int32_t)n, data, types, ranks, dims, nbytes,
                                  err, sizeof err)) {
        if (!err[0])
            snprintf(err, sizeof err, "ortnpu: %s: the Python kernel did not answer",
                     k->op->name);
        return dom_fail(api, ORT_RUNTIME_EXCEPTION, err);
    }
    return NULL;
}

int32_t ortnpu_domain_output(void *call_, const int64_t *dims, int32_t rank, const void *data,
                             size_t nbytes, char *err, size_t err_size) {
    dom_call_t *call = call_;
    const dom_kernel_t *k = call->kernel;
    const OrtApi *api = k->api;
    if (rank < 0 || rank > DOM_MAX_RANK) {
        snprintf(err, err_size, "output rank %d is not supported", (int)rank);
        return 1;
    }
    size_t want = elem_size(k->op->out_type);
    for (int32_t d = 0; d < rank; d++) {
        if (dims[d] < 0) {
            snprintf(err, err_size, "negative output dimension");
            return 1;
        }
        want *= (size_t)dims[d];
    }
    if (want != nbytes) {
        snprintf(err, err_size, "output of %zu bytes, its shape needs %zu", nbytes, want);
        return 1;
    }
    OrtValue *out = NULL;
    OrtStatus *st = ORT_FN(api, SLOT_KernelContext_GetOutput, KernelContext_GetOutput_fn)(
        call->ctx, 0, dims, (size_t)rank, &out);
    void *y = NULL;
    if (!st) st = ORT_FN(api, SLOT_GetTensorMutableData, GetTensorMutableData_fn)(out, &y);
    if (st) {
        snprintf(err, err_size, "onnxruntime refused the output: %s",
                 ORT_FN(api, SLOT_GetErrorMessage, GetErrorMessage_fn)(st));
        dom_release(api, st);
        return 1;
    }
    if (nbytes) memcpy(y, data, nbytes);
    return 0;
}

static void dom_destroy(void *kernel) {
    dom_kernel_t *k = kernel;
    if (!k) return;
    if (g_python_alive) ortnpu_py_kernel_destroy(k->py);
    free(k);
}

/* Version-1 entry points for a runtime that ignores the V2 ones (never reached on 1.16+). */
static void *dom_create_v1(const OrtCustomOp *op, const OrtApi *api, const OrtKernelInfo *info) {
    void *k = NULL;
    dom_release(api, dom_create(op, api, info, &k));
    return k;
}

static void dom_compute_v1(void *kernel, OrtKernelContext *ctx) {
    dom_kernel_t *k = kernel;
    if (k) dom_release(k->api, dom_compute(kernel, ctx));
}

int32_t ortnpu_domain_op(const char *op_type, int32_t spec_id, int32_t n_inputs,
                         const int32_t *input_types, int32_t output_type) {
    if (spec_id < 0 || spec_id >= g_n_specs || n_inputs < 0 || n_inputs > DOM_MAX_IN ||
        strlen(op_type) >= DOM_NAME)
        return -1;
    if (grow((void **)&g_ops, &g_cap_ops, g_n_ops, sizeof(*g_ops))) return -1;
    dom_op_t *o = calloc(1, sizeof(*o));
    if (!o) return -1;
    o->op_id = g_n_ops;
    o->n_in = n_inputs;
    o->out_type = output_type;
    o->spec = g_specs[spec_id];
    memcpy(o->in_types, input_types, (size_t)n_inputs * sizeof(int32_t));
    strcpy(o->name, op_type);
    OrtCustomOp *b = &o->base;
    b->version = ORTNPU_OP_VERSION;
    b->CreateKernel = dom_create_v1;
    b->GetName = dom_name;
    b->GetExecutionProviderType = dom_ep;
    b->GetInputType = dom_in_type;
    b->GetInputTypeCount = dom_in_count;
    b->GetOutputType = dom_out_type;
    b->GetOutputTypeCount = dom_one;
    b->KernelCompute = dom_compute_v1;
    b->KernelDestroy = dom_destroy;
    b->GetInputCharacteristic = dom_zero;
    b->GetOutputCharacteristic = dom_zero;
    b->GetInputMemoryType = dom_zero;
    b->GetVariadicInputMinArity = dom_arity;
    b->GetVariadicInputHomogeneity = dom_arity;
    b->GetVariadicOutputMinArity = dom_arity;
    b->GetVariadicOutputHomogeneity = dom_arity;
    b->CreateKernelV2 = dom_create;
    b->KernelComputeV2 = dom_compute;
    g_ops[g_n_ops] = o;
    return g_n_ops++;
}

OrtStatus *ortnpu_domain_register(OrtSessionOptions *options, const OrtApi *api) {
    if (g_n_ops == 0) return NULL;
    /* a new domain per registration, kept for the life of the process (see ort_op.c) */
    OrtCustomOpDomain *domain = NULL;
    OrtStatus *st = ORT_FN(api, SLOT_CreateCustomOpDomain, CreateCustomOpDomain_fn)("com.ortnpu",
                                                                                   &domain);
    if (st) return st;
    for (int32_t i = 0; i < g_n_ops; i++) {
        st = ORT_FN(api, SLOT_CustomOpDomain_Add, CustomOpDomain_Add_fn)(domain, &g_ops[i]->base);
        if (st) return st;
    }
    return ORT_FN(api, SLOT_AddCustomOpDomain, AddCustomOpDomain_fn)(options, domain);
}
