/* Shared state of the C kernels: per-thread scratch buffers and the OpenMP queries. */
#include <pthread.h>

#include "kernels_common.h"

typedef struct {
    void *p;
    size_t n;
} scratch_t;
static pthread_key_t g_scratch_key;
static pthread_once_t g_scratch_once = PTHREAD_ONCE_INIT;

static void scratch_release(void *t) {
    scratch_t *s = t;
    for (int k = 0; k < S_SLOTS; k++) free(s[k].p);
    free(s);
}

static void scratch_init(void) { (void)pthread_key_create(&g_scratch_key, scratch_release); }

void *ortnpu_scratch(int slot, size_t bytes) {
    pthread_once(&g_scratch_once, scratch_init);
    scratch_t *t = pthread_getspecific(g_scratch_key);
    if (!t) {
        t = calloc(S_SLOTS, sizeof(scratch_t));
        if (!t || pthread_setspecific(g_scratch_key, t)) {
            free(t);
            return NULL;
        }
    }
    scratch_t *s = &t[slot];
    if (s->n < bytes) {
        free(s->p);
        s->n = 0;
        size_t n = bytes + bytes / 4 + 64;
        if (posix_memalign(&s->p, 64, n)) {
            s->p = NULL;
            return NULL;
        }
        s->n = n;
    }
    return s->p;
}

int ortnpu_has_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int ortnpu_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}
