/* The parts of onnxruntime's stable C ABI that ortnpu's custom ops use (ort_op.c, domain_op.c).
 *
 * onnxruntime's C headers are not shipped in any package we can install, so this file declares
 * what we use: onnxruntime only ever appends to the OrtApi function table and to OrtCustomOp, so
 * a function's slot in the table never changes. The slots are those of the released headers
 * (include/onnxruntime/core/session/onnxruntime_c_api.h, counted from CreateStatus = 0; checked
 * against onnxruntime 1.14 to 1.32).
 * The plugin EP's slots (ep_plugin.c) were counted in the 1.29 header; they exist since 1.23.
 */
#ifndef ORTNPU_ORT_ABI_H
#define ORTNPU_ORT_ABI_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define ORTNPU_EXPORT __declspec(dllexport)
#else
#define ORTNPU_EXPORT __attribute__((visibility("default")))
#endif

typedef struct OrtStatus OrtStatus;
typedef struct OrtApi OrtApi;                 /* a table of function pointers, see ORT_FN */
typedef struct OrtKernelInfo OrtKernelInfo;
typedef struct OrtKernelContext OrtKernelContext;
typedef struct OrtValue OrtValue;
typedef struct OrtTensorTypeAndShapeInfo OrtTensorTypeAndShapeInfo;
typedef struct OrtSessionOptions OrtSessionOptions;
typedef struct OrtCustomOpDomain OrtCustomOpDomain;

typedef struct {
    const OrtApi *(*GetApi)(uint32_t version);
    const char *(*GetVersionString)(void);
} OrtApiBase;

typedef struct OrtCustomOp OrtCustomOp;
struct OrtCustomOp {               /* field order of onnxruntime's OrtCustomOp (26 fields) */
    uint32_t version;
    void *(*CreateKernel)(const OrtCustomOp *, const OrtApi *, const OrtKernelInfo *);
    const char *(*GetName)(const OrtCustomOp *);
    const char *(*GetExecutionProviderType)(const OrtCustomOp *);
    int (*GetInputType)(const OrtCustomOp *, size_t);
    size_t (*GetInputTypeCount)(const OrtCustomOp *);
    int (*GetOutputType)(const OrtCustomOp *, size_t);
    size_t (*GetOutputTypeCount)(const OrtCustomOp *);
    void (*KernelCompute)(void *, OrtKernelContext *);
    void (*KernelDestroy)(void *);
    int (*GetInputCharacteristic)(const OrtCustomOp *, size_t);
    int (*GetOutputCharacteristic)(const OrtCustomOp *, size_t);
    int (*GetInputMemoryType)(const OrtCustomOp *, size_t);
    int (*GetVariadicInputMinArity)(const OrtCustomOp *);
    int (*GetVariadicInputHomogeneity)(const OrtCustomOp *);
    int (*GetVariadicOutputMinArity)(const OrtCustomOp *);
    int (*GetVariadicOutputHomogeneity)(const OrtCustomOp *);
    OrtStatus *(*CreateKernelV2)(const OrtCustomOp *, const OrtApi *, const OrtKernelInfo *,
                                 void **);
    OrtStatus *(*KernelComputeV2)(void *, OrtKernelContext *);
    void *InferOutputShapeFn, *GetStartVersion, *GetEndVersion, *GetMayInplace,
        *ReleaseMayInplace, *GetAliasMap, *ReleaseAliasMap;
};

/* the OrtCustomOp version we declare: 16 is the first with CreateKernelV2/KernelComputeV2 */
#define ORTNPU_OP_VERSION 16

/* OrtApi slots (index into the table of function pointers) */
enum {
    SLOT_CreateStatus = 0,
    SLOT_CreateCustomOpDomain = 26,
    SLOT_CustomOpDomain_Add = 27,
    SLOT_AddCustomOpDomain = 28,
    SLOT_GetErrorMessage = 2,
    SLOT_GetTensorMutableData = 51,
    SLOT_GetTensorElementType = 60,
    SLOT_GetDimensionsCount = 61,
    SLOT_GetDimensions = 62,
    SLOT_GetTensorTypeAndShape = 65,
    SLOT_KernelInfoGetAttribute_float = 85,
    SLOT_KernelInfoGetAttribute_int64 = 86,
    SLOT_KernelInfoGetAttribute_string = 87,
    SLOT_KernelContext_GetInputCount = 88,
    SLOT_KernelContext_GetOutputCount = 89,
    SLOT_KernelContext_GetInput = 90,
    SLOT_KernelContext_GetOutput = 91,
    SLOT_ReleaseStatus = 93,
    SLOT_ReleaseTensorTypeAndShapeInfo = 99,
    /* the plugin EP (ep_plugin.c; counted in the 1.29 header, all present since 1.23) */
    SLOT_HardwareDevice_Type = 307,
    SLOT_GetEpApi = 317,
};

/* OrtEpApi slots (the table GetEpApi returns; onnxruntime_ep_c_api.h, from CreateEpDevice = 0).
 * The OrtApi and OrtEpApi slots Python calls for the graph are in ortnpu/ep/abi.py. */
enum { EPSLOT_CreateEpDevice = 0 };

#define ORT_FN(api, slot, type) ((type)((void *const *)(const void *)(api))[slot])

typedef OrtStatus *(*CreateStatus_fn)(int code, const char *msg);
typedef OrtStatus *(*CreateCustomOpDomain_fn)(const char *, OrtCustomOpDomain **);
typedef OrtStatus *(*CustomOpDomain_Add_fn)(OrtCustomOpDomain *, const OrtCustomOp *);
typedef OrtStatus *(*AddCustomOpDomain_fn)(OrtSessionOptions *, OrtCustomOpDomain *);
typedef OrtStatus *(*GetTensorMutableData_fn)(OrtValue *, void **);
typedef OrtStatus *(*GetDimensionsCount_fn)(const OrtTensorTypeAndShapeInfo *, size_t *);
typedef OrtStatus *(*GetDimensions_fn)(const OrtTensorTypeAndShapeInfo *, int64_t *, size_t);
typedef OrtStatus *(*GetTensorTypeAndShape_fn)(const OrtValue *, OrtTensorTypeAndShapeInfo **);
typedef OrtStatus *(*KernelInfoGetAttribute_int64_fn)(const OrtKernelInfo *, const char *,
                                                      int64_t *);
typedef OrtStatus *(*KernelInfoGetAttribute_float_fn)(const OrtKernelInfo *, const char *,
                                                      float *);
typedef OrtStatus *(*KernelInfoGetAttribute_string_fn)(const OrtKernelInfo *, const char *,
                                                       char *, size_t *);
typedef OrtStatus *(*KernelContext_GetInputCount_fn)(const OrtKernelContext *, size_t *);
typedef OrtStatus *(*KernelContext_GetOutputCount_fn)(const OrtKernelContext *, size_t *);
typedef OrtStatus *(*GetTensorElementType_fn)(const OrtTensorTypeAndShapeInfo *, int *);
typedef const char *(*GetErrorMessage_fn)(const OrtStatus *);
typedef OrtStatus *(*KernelContext_GetInput_fn)(const OrtKernelContext *, size_t,
                                                const OrtValue **);
typedef OrtStatus *(*KernelContext_GetOutput_fn)(OrtKernelContext *, size_t, const int64_t *,
                                                 size_t, OrtValue **);
typedef void (*ReleaseStatus_fn)(OrtStatus *);
struct OrtHardwareDevice;
struct OrtEpDevice;
struct OrtEpFactory;
struct OrtKeyValuePairs;
typedef int (*HardwareDevice_Type_fn)(const struct OrtHardwareDevice *);
typedef const void *(*GetEpApi_fn)(void);
typedef OrtStatus *(*CreateEpDevice_fn)(struct OrtEpFactory *, const struct OrtHardwareDevice *,
                                        const struct OrtKeyValuePairs *,
                                        const struct OrtKeyValuePairs *, struct OrtEpDevice **);
typedef void (*ReleaseTensorTypeAndShapeInfo_fn)(OrtTensorTypeAndShapeInfo *);

enum { ORT_OK = 0, ORT_FAIL = 1, ORT_INVALID_ARGUMENT = 2, ORT_RUNTIME_EXCEPTION = 6 };
enum { HW_DEVICE_CPU = 0 }; /* OrtHardwareDeviceType_CPU */
enum { ELEM_FLOAT = 1, ELEM_UINT8 = 2, ELEM_INT8 = 3, ELEM_INT16 = 5 };

#endif
