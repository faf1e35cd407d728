/* ortnpu as an onnxruntime plugin execution provider library (see ortnpu_ep.h).
 *
 * onnxruntime >= 1.23 loads a plugin EP from a shared library that exports CreateEpFactories
 * and ReleaseEpFactory (onnxruntime_ep_c_api.h). This is that library: the same shared object
 * as the cffi module, so its callbacks reach the Python process that registered it
 * (ortnpu.ep.register). The structs below are onnxruntime's OrtEpFactory, OrtEp and
 * OrtNodeComputeInfo up to their 1.23 fields (field order of the released header; onnxruntime
 * only appends to them and reads no field newer than the ort_version_supported we declare).
 * The OrtApi and OrtEpApi slots used are listed in ort_abi.h.
 *
 * What runs here: the factory offers one OrtEpDevice on the CPU hardware device; CreateEp,
 * GetCapability, Compile and each compiled node's Compute call Python, which reads the graph
 * through the OrtGraph API, places, compiles and runs. A Python failure is a message in a
 * buffer, returned as an OrtStatus; after Python has shut down, every call fails cleanly.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ort_abi.h"
#include "ortnpu_ep.h"

#define EP_NAME "ortnpu"
#define EP_VENDOR "ortnpu"
#define EP_VERSION "0.1.0"
#define ERR_SIZE 2048

typedef struct OrtEp OrtEp;
typedef struct OrtEpFactory OrtEpFactory;
typedef struct OrtEpDevice OrtEpDevice;
typedef struct OrtHardwareDevice OrtHardwareDevice;
typedef struct OrtKeyValuePairs OrtKeyValuePairs;
typedef struct OrtLogger OrtLogger;
typedef struct OrtGraph OrtGraph;
typedef struct OrtNode OrtNode;
typedef struct OrtEpGraphSupportInfo OrtEpGraphSupportInfo;
typedef struct OrtNodeComputeContext OrtNodeComputeContext;
typedef struct OrtMemoryInfo OrtMemoryInfo;
typedef struct OrtMemoryDevice OrtMemoryDevice;
typedef struct OrtAllocator OrtAllocator;
typedef struct OrtDataTransferImpl OrtDataTransferImpl;
typedef struct OrtSyncStreamImpl OrtSyncStreamImpl;
typedef struct OrtRunOptions OrtRunOptions;
typedef struct OrtEpApi OrtEpApi;

typedef struct OrtNodeComputeInfo OrtNodeComputeInfo;
struct OrtNodeComputeInfo { /* 1.23, all fields */
    uint32_t ort_version_supported;
    OrtStatus *(*CreateState)(OrtNodeComputeInfo *, OrtNodeComputeContext *, void **);
    OrtStatus *(*Compute)(OrtNodeComputeInfo *, void *, OrtKernelContext *);
    void (*ReleaseState)(OrtNodeComputeInfo *, void *);
};

struct OrtEp { /* the 1.23 fields */
    uint32_t ort_version_supported;
    const char *(*GetName)(const OrtEp *);
    OrtStatus *(*GetCapability)(OrtEp *, const OrtGraph *, OrtEpGraphSupportInfo *);
    OrtStatus *(*Compile)(OrtEp *, const OrtGraph **, const OrtNode **, size_t,
                          OrtNodeComputeInfo **, OrtNode **);
    void (*ReleaseNodeComputeInfos)(OrtEp *, OrtNodeComputeInfo **, size_t);
    void *GetPreferredDataLayout, *ShouldConvertDataLayoutForOp, *SetDynamicOptions,
        *OnRunStart, *OnRunEnd, *CreateAllocator, *CreateSyncStreamForDevice,
        *GetCompiledModelCompatibilityInfo; /* optional: NULL */
};

struct OrtEpFactory { /* the 1.23 fields */
    uint32_t ort_version_supported;
    const char *(*GetName)(const OrtEpFactory *);
    const char *(*GetVendor)(const OrtEpFactory *);
    OrtStatus *(*GetSupportedDevices)(OrtEpFactory *, const OrtHardwareDevice *const *, size_t,
                                      OrtEpDevice **, size_t, size_t *);
    OrtStatus *(*CreateEp)(OrtEpFactory *, const OrtHardwareDevice *const *,
                           const OrtKeyValuePairs *const *, size_t, const OrtSessionOptions *,
                           const OrtLogger *, OrtEp **);
    void (*ReleaseEp)(OrtEpFactory *, OrtEp *);
    uint32_t (*GetVendorId)(const OrtEpFactory *);
    const char *(*GetVersion)(const OrtEpFactory *);
    OrtStatus *(*ValidateCompiledModelCompatibilityInfo)(OrtEpFactory *,
                                                         const OrtHardwareDevice *const *, size_t,
                                                         const char *, int *);
    OrtStatus *(*CreateAllocator)(OrtEpFactory *, const OrtMemoryInfo *,
                                  const OrtKeyValuePairs *, OrtAllocator **);
    void (*ReleaseAllocator)(OrtEpFactory *, OrtAllocator *);
    OrtStatus *(*CreateDataTransfer)(OrtEpFactory *, OrtDataTransferImpl **);
    bool (*IsStreamAware)(const OrtEpFactory *);
    OrtStatus *(*CreateSyncStreamForDevice)(OrtEpFactory *, const OrtMemoryDevice *,
                                            const OrtKeyValuePairs *, OrtSyncStreamImpl **);
};

typedef struct {
    OrtEpFactory base; /* first: onnxruntime hands back a pointer to it */
    const OrtApi *api;
    const OrtEpApi *ep_api;
} ep_factory_t;

typedef struct {
    OrtEp base;
    const OrtApi *api;
    const OrtEpApi *ep_api;
    int64_t py; /* the Python EP's id */
} ep_t;

typedef struct {
    OrtNodeComputeInfo base;
    const OrtApi *api;
    int64_t py; /* the Python compiled node's id */
} ep_node_t;

static volatile int g_python_alive = 1;

void ortnpu_ep_python_gone(void) { g_python_alive = 0; }

static OrtStatus *ep_fail(const OrtApi *api, int code, const char *msg) {
    return ORT_FN(api, SLOT_CreateStatus, CreateStatus_fn)(code, msg);
}

static OrtStatus *python_gone(const OrtApi *api) {
    return ep_fail(api, ORT_FAIL, "ortnpu: the Python interpreter that registered the "
                                     "ortnpu execution provider has shut down");
}

/* ---------------------------------------------------------------------------- the factory */
static const char *factory_name(const OrtEpFactory *f) {
    (void)f;
    return EP_NAME;
}
static const char *factory_vendor(const OrtEpFactory *f) {
    (void)f;
    return EP_VENDOR;
}
static uint32_t factory_vendor_id(const OrtEpFactory *f) {
    (void)f;
    return 0;
}
static const char *factory_version(const OrtEpFactory *f) {
    (void)f;
    return EP_VERSION;
}

static OrtStatus *factory_devices(OrtEpFactory *self, const OrtHardwareDevice *const *devices,
                                  size_t n_devices, OrtEpDevice **ep_devices, size_t max_out,
                                  size_t *n_out) {
    ep_factory_t *f = (ep_factory_t *)self;
    *n_out = 0;
    /* one EP device, on the (first) CPU: the virtual NPU is simulated by the CPU */
    for (size_t i = 0; i < n_devices && *n_out < max_out && *n_out < 1; i++) {
        if (ORT_FN(f->api, SLOT_HardwareDevice_Type, HardwareDevice_Type_fn)(devices[i]) !=
            HW_DEVICE_CPU)
            continue;
        OrtEpDevice *d = NULL;
        OrtStatus *st = ORT_FN(f->ep_api, EPSLOT_CreateEpDevice, CreateEpDevice_fn)(
            self, devices[i], NULL, NULL, &d);
        if (st) return st;
        ep_devices[(*n_out)++] = d;
    }
    return NULL;
}

static OrtStatus *factory_no_compiled_models(OrtEpFactory *self,
                                             const OrtHardwareDevice *const *devices, size_t n,
                                             const char *info, int *out) {
    (void)self;
    (void)devices;
    (void)n;
    (void)info;
    *out = 0; /* OrtCompiledModelCompatibility_EP_NOT_APPLICABLE: no EPContext models */
    return NULL;
}

static OrtStatus *factory_allocator(OrtEpFactory *self, const OrtMemoryInfo *info,
                                    const OrtKeyValuePairs *options, OrtAllocator **out) {
    (void)self;
    (void)info;
    (void)options;
    *out = NULL; /* the default CPU allocator */
    return NULL;
}
static void factory_release_allocator(OrtEpFactory *self, OrtAllocator *a) {
    (void)self;
    (void)a;
}
static OrtStatus *factory_data_transfer(OrtEpFactory *self, OrtDataTransferImpl **out) {
    (void)self;
    *out = NULL; /* CPU memory only: nothing to copy */
    return NULL;
}
static bool factory_stream_aware(const OrtEpFactory *self) {
    (void)self;
    return false;
}
static OrtStatus *factory_stream(OrtEpFactory *self, const OrtMemoryDevice *device,
                                 const OrtKeyValuePairs *options, OrtSyncStreamImpl **out) {
    (void)self;
    (void)device;
    (void)options;
    *out = NULL;
    return NULL;
}

/* -------------------------------------------------------------------------------- the EP */
static const char *ep_name(const OrtEp *ep) {
    (void)ep;
    return EP_NAME;
}

static OrtStatus *ep_capability(OrtEp *self, const OrtGraph *graph,
                                OrtEpGraphSupportInfo *support) {
    ep_t *ep = (ep_t *)self;
    if (!g_python_alive) return python_gone(ep->api);
    char err[ERR_SIZE] = "";
    int32_t rc = ortnpu_py_ep_capability(ep->py, ep->api, ep->ep_api, graph, support, err,
                                         sizeof err);
    if (rc <= 0) return ep_fail(ep->api, ORT_FAIL, err[0] ? err : "ortnpu: GetCapability failed");
    return NULL;
}

static OrtStatus *node_state(OrtNodeComputeInfo *self, OrtNodeComputeContext *ctx, void **out) {
    (void)ctx;
    *out = self; /* the state is the compiled node itself */
    return NULL;
}

static OrtStatus *node_compute(OrtNodeComputeInfo *self, void *state, OrtKernelContext *ctx) {
    (void)state;
    ep_node_t *n = (ep_node_t *)self;
    if (!g_python_alive) return python_gone(n->api);
    char err[ERR_SIZE] = "";
    int32_t rc = ortnpu_py_ep_compute(n->py, n->api, ctx, err, sizeof err);
    /* not ORT_EP_FAIL: onnxruntime's Python InferenceSession answers that code by rerunning
     * the whole model on the CPU EP (and keeps it there), hiding the NPU's error */
    if (rc <= 0)
        return ep_fail(n->api, ORT_RUNTIME_EXCEPTION, err[0] ? err : "ortnpu: compute failed");
    return NULL;
}

static void node_release_state(OrtNodeComputeInfo *self, void *state) {
    (void)self;
    (void)state;
}

static void ep_release_nodes(OrtEp *self, OrtNodeComputeInfo **infos, size_t n) {
    (void)self;
    for (size_t i = 0; i < n; i++) {
        ep_node_t *node = (ep_node_t *)infos[i];
        if (!node) continue;
        if (g_python_alive) ortnpu_py_ep_release_node(node->py);
        free(node);
        infos[i] = NULL;
    }
}

static OrtStatus *ep_compile(OrtEp *self, const OrtGraph **graphs, const OrtNode **fused,
                             size_t count, OrtNodeComputeInfo **infos, OrtNode **ctx_nodes) {
    ep_t *ep = (ep_t *)self;
    (void)ctx_nodes; /* no EPContext models */
    for (size_t i = 0; i < count; i++) infos[i] = NULL;
    if (!g_python_alive) return python_gone(ep->api);
    for (size_t i = 0; i < count; i++) {
        char err[ERR_SIZE] = "";
        int64_t id = ortnpu_py_ep_compile(ep->py, ep->api, graphs[i], fused[i], err, sizeof err);
        ep_node_t *node = id > 0 ? calloc(1, sizeof(*node)) : NULL;
        if (!node) {
            if (id > 0) ortnpu_py_ep_release_node(id);
            ep_release_nodes(self, infos, i);
            return ep_fail(ep->api, ORT_FAIL,
                           id > 0 ? "ortnpu: out of memory" : (err[0] ? err : "ortnpu: Compile failed"));
        }
        node->base.ort_version_supported = ORTNPU_EP_API_VERSION;
        node->base.CreateState = node_state;
        node->base.Compute = node_compute;
        node->base.ReleaseState = node_release_state;
        node->api = ep->api;
        node->py = id;
        infos[i] = &node->base;
    }
    return NULL;
}

static OrtStatus *factory_create_ep(OrtEpFactory *self, const OrtHardwareDevice *const *devices,
                                    const OrtKeyValuePairs *const *metadata, size_t n_devices,
                                    const OrtSessionOptions *options, const OrtLogger *logger,
                                    OrtEp **out) {
    ep_factory_t *f = (ep_factory_t *)self;
    (void)devices;
    (void)metadata;
    (void)logger;
    *out = NULL;
    if (n_devices != 1)
        return ep_fail(f->api, ORT_INVALID_ARGUMENT, "ortnpu: select the ortnpu EP device once");
    if (!g_python_alive) return python_gone(f->api);
    char err[ERR_SIZE] = "";
    int64_t id = ortnpu_py_ep_create(f->api, options, err, sizeof err);
    if (id <= 0) return ep_fail(f->api, ORT_INVALID_ARGUMENT, err[0] ? err : "ortnpu: CreateEp failed");
    ep_t *ep = calloc(1, sizeof(*ep));
    if (!ep) {
        ortnpu_py_ep_release(id);
        return ep_fail(f->api, ORT_RUNTIME_EXCEPTION, "ortnpu: out of memory");
    }
    ep->base.ort_version_supported = ORTNPU_EP_API_VERSION;
    ep->base.GetName = ep_name;
    ep->base.GetCapability = ep_capability;
    ep->base.Compile = ep_compile;
    ep->base.ReleaseNodeComputeInfos = ep_release_nodes;
    ep->api = f->api;
    ep->ep_api = f->ep_api;
    ep->py = id;
    *out = &ep->base;
    return NULL;
}

static void factory_release_ep(OrtEpFactory *self, OrtEp *base) {
    (void)self;
    ep_t *ep = (ep_t *)base;
    if (!ep) return;
    if (g_python_alive) ortnpu_py_ep_release(ep->py);
    free(ep);
}

/* ------------------------------------------------------------------- the library's exports */
ORTNPU_EXPORT OrtStatus *CreateEpFactories(const char *registered_name, const OrtApiBase *base,
                                           const OrtLogger *logger, OrtEpFactory **factories,
                                           size_t max_factories, size_t *n_factories) {
    (void)registered_name;
    (void)logger;
    *n_factories = 0;
    /* NULL when the running onnxruntime is older than the structs declared here: no factory,
     * and ortnpu.ep.register says which version is needed */
    const OrtApi *api = base ? base->GetApi(ORTNPU_EP_API_VERSION) : NULL;
    if (!api || max_factories < 1) return NULL;
    const OrtEpApi *ep_api = ORT_FN(api, SLOT_GetEpApi, GetEpApi_fn)();
    if (!ep_api) return ep_fail(api, ORT_FAIL, "ortnpu: this onnxruntime has no OrtEpApi");
    ep_factory_t *f = calloc(1, sizeof(*f));
    if (!f) return ep_fail(api, ORT_RUNTIME_EXCEPTION, "ortnpu: out of memory");
    f->api = api;
    f->ep_api = ep_api;
    OrtEpFactory *b = &f->base;
    b->ort_version_supported = ORTNPU_EP_API_VERSION;
    b->GetName = factory_name;
    b->GetVendor = factory_vendor;
    b->GetSupportedDevices = factory_devices;
    b->CreateEp = factory_create_ep;
    b->ReleaseEp = factory_release_ep;
    b->GetVendorId = factory_vendor_id;
    b->GetVersion = factory_version;
    b->ValidateCompiledModelCompatibilityInfo = factory_no_compiled_models;
    b->CreateAllocator = factory_allocator;
    b->ReleaseAllocator = factory_release_allocator;
    b->CreateDataTransfer = factory_data_transfer;
    b->IsStreamAware = factory_stream_aware;
    b->CreateSyncStreamForDevice = factory_stream;
    factories[0] = b;
    *n_factories = 1;
    return NULL;
}

ORTNPU_EXPORT OrtStatus *ReleaseEpFactory(OrtEpFactory *factory) {
    free(factory);
    return NULL;
}
