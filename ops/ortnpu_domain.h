/* The com.ortnpu domain as native onnxruntime custom ops whose kernels run in Python
 * (domain_op.c, ortnpu/domain/native_domain.py).
 *
 * Python defines the ops once per process (ortnpu_domain_spec, ortnpu_domain_op), then
 * onnxruntime's RegisterCustomOps (ort_op.c) adds them to its options. onnxruntime creates a
 * kernel per node when it loads a model: domain_op.c reads every declared attribute and hands
 * them to Python, which validates them (types, UTF-8, ranges) and answers a kernel id or an
 * error that becomes an OrtStatus. Each run hands the inputs to Python without a copy; Python
 * writes the output through ortnpu_domain_output. No Python exception and no undecodable string
 * ever reaches onnxruntime: every failure is an OrtStatus.
 */
#ifndef ORTNPU_DOMAIN_H
#define ORTNPU_DOMAIN_H

#include <stddef.h>
#include <stdint.h>

/* --- cdef begin --- */
/* attribute kinds of ortnpu_domain_spec, and what ortnpu_py_kernel_create gets per attribute */
enum { ORTNPU_ATTR_INT = 1, ORTNPU_ATTR_STRING = 2, ORTNPU_ATTR_FLOAT = 3, ORTNPU_ATTR_OTHER = 4 };

/* Declare an op's attributes (names and ORTNPU_ATTR_* kinds); the spec id or -1. */
int32_t ortnpu_domain_spec(int32_t n_attrs, const char *const *names, const int32_t *kinds);
/* Declare one onnxruntime overload: op type, its spec, its input element types (ONNX codes) and
 * output element type; the op id Python's callbacks receive, or -1. */
int32_t ortnpu_domain_op(const char *op_type, int32_t spec_id, int32_t n_inputs,
                         const int32_t *input_types, int32_t output_type);
/* Number of ops declared (0: RegisterCustomOps registers only com.ortnpu.native). */
int32_t ortnpu_domain_count(void);
/* Write a kernel's output (called by Python during ortnpu_py_kernel_compute): 0 on success,
 * otherwise the reason in err. */
int32_t ortnpu_domain_output(void *call, const int64_t *dims, int32_t rank, const void *data,
                             size_t nbytes, char *err, size_t err_size);
/* Python is shutting down: kernels destroyed later no longer call it. */
void ortnpu_domain_python_gone(void);
/* --- cdef end --- */

/* Python's side (cffi extern "Python+C", see build_native.py). Each returns 0 on failure, with
 * the reason in err; cffi also returns 0 when Python has not installed the callback. */
int64_t ortnpu_py_kernel_create(int32_t op_id, int32_t n_attrs, const int32_t *present,
                                const int64_t *ints, const double *floats,
                                const char *const *strings, const size_t *lengths, char *err,
                                size_t err_size);
int32_t ortnpu_py_kernel_compute(int64_t kernel, void *call, int32_t n_inputs,
                                 void *const *data, const int32_t *types, const int32_t *ranks,
                                 const int64_t *dims, const int64_t *nbytes, char *err,
                                 size_t err_size);
void ortnpu_py_kernel_destroy(int64_t kernel);

#ifndef ORTNPU_DOMAIN_NO_REGISTER
struct OrtApi;
struct OrtSessionOptions;
struct OrtStatus;
/* Add the declared ops as domain com.ortnpu to the options (ort_op.c's RegisterCustomOps). */
struct OrtStatus *ortnpu_domain_register(struct OrtSessionOptions *options,
                                         const struct OrtApi *api);
#endif

#endif
