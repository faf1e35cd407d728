/* ortnpu as an onnxruntime plugin execution provider (ep_plugin.c, ortnpu/ep/).
 *
 * onnxruntime (1.23+) loads this library through register_execution_provider_library and calls
 * CreateEpFactories; the factory, the EP and each compiled node are small C structs whose
 * callbacks hand onnxruntime's opaque pointers to Python (cffi extern "Python+C"): Python reads
 * the graph through the OrtGraph API, decides placement, compiles and computes. Every Python
 * failure comes back as a message that becomes an OrtStatus; nothing aborts.
 */
#ifndef ORTNPU_EP_H
#define ORTNPU_EP_H

#include <stddef.h>
#include <stdint.h>

/* --- cdef begin --- */
/* The OrtApi version the EP structs are declared for (1.23: the first with Compile). */
#define ORTNPU_EP_API_VERSION 23
/* Python is shutting down: the EP callbacks no longer call it. */
void ortnpu_ep_python_gone(void);
/* --- cdef end --- */

/* Python's side (extern "Python+C", defined in ortnpu/ep/plugin.py). Ids are > 0; 0 (also what
 * cffi returns when no Python callback is installed) or a negative rc means failure, with the
 * reason in err. */
int64_t ortnpu_py_ep_create(const void *api, const void *session_options, char *err,
                            size_t err_size);
void ortnpu_py_ep_release(int64_t ep);
int32_t ortnpu_py_ep_capability(int64_t ep, const void *api, const void *ep_api,
                                const void *graph, void *support_info, char *err,
                                size_t err_size);
int64_t ortnpu_py_ep_compile(int64_t ep, const void *api, const void *graph,
                             const void *fused_node, char *err, size_t err_size);
int32_t ortnpu_py_ep_compute(int64_t node, const void *api, void *kernel_context, char *err,
                             size_t err_size);
void ortnpu_py_ep_release_node(int64_t node);

#endif
