/* ortnpu adaptive thread choice: run a piece of work (one layer of a compiled program, or a
 * batch of samples) on n threads only while n threads measurably pay.
 *
 * Why: an OpenMP parallel region ends at a barrier that waits for every thread of the team. On
 * a machine whose other cores are busy (another process, other sessions), a worker thread can
 * wait a whole scheduler time slice before it runs, and the caller waits with it: a layer of
 * 5.8 us took 3-20 ms at 2 threads while a competing process kept the second core busy (issue
 * 15). Small layers also lose to the region's own cost on a quiet machine. Neither can be
 * decided once at build time, so each work item keeps the last few wall times of both modes
 * (one thread, n threads) and uses n threads while their mean beats the one-thread mean (see
 * ortnpu_adapt_time). The mode not in use is tried again now and then, more rarely
 * each time it loses (16 runs, doubling up to 1024), so a losing mode costs at most a few runs in
 * a thousand. A machine that becomes busy is noticed at once (slow n-thread runs raise their
 * mean); one that becomes quiet again at the first try of n threads that beats one thread
 * (ortnpu_adapt_record).
 *
 * The choice never changes results: every kernel gives the same bits at any thread count.
 * Concurrent runs of one program update the record with relaxed atomics; a lost update only
 * delays a switch. */
#ifndef ORTNPU_ADAPTIVE_H
#define ORTNPU_ADAPTIVE_H

#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#define ORTNPU_ADAPT_KEEP 8        /* recent times kept per mode */
#define ORTNPU_ADAPT_WARMUP 4      /* first runs alternate the two modes */
#define ORTNPU_ADAPT_PROBE_MIN 16  /* runs between tries of the other mode, after a switch */
#define ORTNPU_ADAPT_PROBE_MAX 1024

typedef struct {
    int64_t recent[2][ORTNPU_ADAPT_KEEP]; /* ns per mode (0: one thread, 1: n threads); 0 unset */
    int64_t seen[2];                      /* times recorded per mode */
    int64_t runs;                         /* picks so far */
    int64_t interval;                     /* ticks between tries of the other mode (power of 2) */
    int64_t mode;                         /* the mode in use after warm-up */
    int64_t fixed;                        /* 1: always n threads (ORTNPU_ADAPTIVE=0) */
} ortnpu_adapt_t;

/* ORTNPU_ADAPTIVE=0 in the environment turns the choice off (n threads always, as before):
 * for measuring what the guard saves. */
static inline int ortnpu_adapt_disabled(void) {
    const char *e = getenv("ORTNPU_ADAPTIVE");
    return e && e[0] == '0' && e[1] == 0;
}

#define ORTNPU_LD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define ORTNPU_ST(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)

static inline int64_t ortnpu_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* 1: run on n threads this time, 0: on one. ``tick`` counts the runs of what holds the
 * records (a program's samples): the other mode is tried at ticks that are multiples of the
 * interval, so the tries of all layers of a program fall into the same few runs (a try that
 * must wake a sleeping worker on a busy machine can cost a scheduler time slice; spread over
 * the layers, such tries would slow most runs instead of one in 16 or fewer). */
static inline int ortnpu_adapt_pick(ortnpu_adapt_t *a, int64_t tick) {
    if (a->fixed) return 1;
    const int64_t r = __atomic_fetch_add(&a->runs, 1, __ATOMIC_RELAXED);
    if (r < ORTNPU_ADAPT_WARMUP) return (int)(~r & 1); /* n, 1, n, 1, ... */
    const int64_t mode = ORTNPU_LD(a->mode);
    int64_t interval = ORTNPU_LD(a->interval);
    if (interval < ORTNPU_ADAPT_PROBE_MIN) interval = ORTNPU_ADAPT_PROBE_MIN;
    return (int)((tick & (interval - 1)) == 0 ? !mode : mode);
}

/* The mean of the kept times of mode m (0: none yet). The mean, not the median or the worst:
 * the expected time of a run is what a mode costs. On a busy machine an n-thread run that
 * waits a scheduler time slice weighs in with its full wait (one such run turns the choice
 * around); on a quiet but noisy one the two modes' means differ only by what threads change
 * (with the worst n-thread time against the median one-thread time, as before, host noise
 * alone kept layers of MobileNetV2 at one thread: 0.875x the one-thread time where two threads
 * everywhere took 0.74x; scripts/bench_thread_guard.py, docs/kernels.md). */
static inline int64_t ortnpu_adapt_time(const ortnpu_adapt_t *a, int m) {
    int64_t sum = 0, n = 0;
    for (int k = 0; k < ORTNPU_ADAPT_KEEP; k++) {
        const int64_t t = ORTNPU_LD(a->recent[m][k]);
        if (t <= 0) continue;
        sum += t;
        n++;
    }
    return n ? sum / n : 0;
}

/* Record that a run in mode ``used`` took ``ns`` (for a batch: per sample). */
static inline void ortnpu_adapt_record(ortnpu_adapt_t *a, int used, int64_t ns) {
    const int64_t k = __atomic_fetch_add(&a->seen[used], 1, __ATOMIC_RELAXED);
    ns = ns > 0 ? ns : 1;
    ORTNPU_ST(a->recent[used][k % ORTNPU_ADAPT_KEEP], ns);
    /* A try of the mode not in use that beats the mode in use: the tried mode's older times
     * are from another state of the machine (a busy phase that ended: its slow n-thread runs
     * would outweigh the try in the mean, and the tries grow rarer each time they lose, so a
     * session stayed on one thread long after the machine became quiet). Keep only the try. */
    if (used != ORTNPU_LD(a->mode)) {
        const int64_t in_use = ortnpu_adapt_time(a, !used);
        if (in_use > 0 && ns < in_use)
            for (int j = 0; j < ORTNPU_ADAPT_KEEP; j++)
                if (j != k % ORTNPU_ADAPT_KEEP) ORTNPU_ST(a->recent[used][j], 0);
    }
    const int64_t one = ortnpu_adapt_time(a, 0), many = ortnpu_adapt_time(a, 1);
    if (one == 0 || many == 0) return;
    const int64_t want = many < one;
    const int64_t mode = ORTNPU_LD(a->mode);
    int64_t interval = ORTNPU_LD(a->interval);
    if (want != mode) { /* switch (after a try of the other mode, or the mode in use got slow) */
        ORTNPU_ST(a->mode, want);
        interval = ORTNPU_ADAPT_PROBE_MIN;
    } else if (used != mode) { /* the other mode was tried and lost: try it more rarely */
        interval = interval < ORTNPU_ADAPT_PROBE_MIN ? ORTNPU_ADAPT_PROBE_MIN : 2 * interval;
        if (interval > ORTNPU_ADAPT_PROBE_MAX) interval = ORTNPU_ADAPT_PROBE_MAX;
    } else {
        return; /* the mode in use ran as usual */
    }
    ORTNPU_ST(a->interval, interval);
}

#undef ORTNPU_LD
#undef ORTNPU_ST

#endif
