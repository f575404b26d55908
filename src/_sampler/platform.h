/*
 * platform.h - everything that differs between operating systems, in one
 * place: a monotonic clock, per-thread CPU clocks, a native timer thread
 * that can be woken early, atomics and a small random generator.
 *
 * Three branches: _WIN32, __APPLE__, and POSIX (Linux glibc and musl, the
 * BSDs). Nothing here touches Python.
 */
#ifndef PYSAMPLER_PLATFORM_H
#define PYSAMPLER_PLATFORM_H

#include <stdint.h>
#include <stdlib.h>

#if defined(_WIN32)
#  ifndef WIN32_LEAN_AND_MEAN
#    define WIN32_LEAN_AND_MEAN
#  endif
#  include <windows.h>
#elif defined(__APPLE__)
#  include <mach/mach.h>
#  include <mach/mach_time.h>
#  include <mach/thread_act.h>
#  include <pthread.h>
#  include <time.h>
#  include <errno.h>
#else
#  include <pthread.h>
#  include <time.h>
#  include <errno.h>
#endif

/* ------------------------------------------------------------------ */
/* Atomics. MSVC's C mode has no <stdatomic.h> before VS 2022 17.5, so  */
/* the Interlocked family stands in there. All values are `long`.     */
/* ------------------------------------------------------------------ */
#if defined(_MSC_VER) && !defined(__clang__)
typedef volatile long ps_atomic_t;
static inline long ps_atomic_load(ps_atomic_t *p) { return InterlockedCompareExchange(p, 0, 0); }
static inline void ps_atomic_store(ps_atomic_t *p, long v) { InterlockedExchange(p, v); }
static inline long ps_atomic_exchange(ps_atomic_t *p, long v) { return InterlockedExchange(p, v); }
static inline long ps_atomic_add(ps_atomic_t *p, long v) { return InterlockedExchangeAdd(p, v) + v; }
#else
typedef volatile long ps_atomic_t;
static inline long ps_atomic_load(ps_atomic_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static inline void ps_atomic_store(ps_atomic_t *p, long v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
static inline long ps_atomic_exchange(ps_atomic_t *p, long v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
static inline long ps_atomic_add(ps_atomic_t *p, long v) { return __atomic_add_fetch(p, v, __ATOMIC_SEQ_CST); }
#endif

/* ------------------------------------------------------------------ */
/* Monotonic clock, nanoseconds.                                      */
/* ------------------------------------------------------------------ */
static inline int64_t ps_monotonic_ns(void)
{
#if defined(_WIN32)
    static LARGE_INTEGER freq;
    LARGE_INTEGER now;
    if (freq.QuadPart == 0) {
        QueryPerformanceFrequency(&freq);
    }
    QueryPerformanceCounter(&now);
    /* split to avoid overflow of now * 1e9 after ~1 hour at 10 MHz */
    return (int64_t)(now.QuadPart / freq.QuadPart) * 1000000000LL
         + (int64_t)(now.QuadPart % freq.QuadPart) * 1000000000LL / freq.QuadPart;
#elif defined(__APPLE__)
    static mach_timebase_info_data_t tb;
    if (tb.denom == 0) {
        mach_timebase_info(&tb);
    }
    return (int64_t)(mach_absolute_time() * tb.numer / tb.denom);
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
#endif
}

/* ------------------------------------------------------------------ */
/* Per-thread CPU time of *another* thread, nanoseconds, or -1.       */
/*                                                                    */
/* `ident` is CPython's PyThreadState.thread_id (pthread_t on POSIX,  */
/* the Win32 thread id on Windows); `native_id` is the kernel thread  */
/* id where the interpreter records it (3.11+), else 0.               */
/* ------------------------------------------------------------------ */
#if defined(__linux__)
/* The kernel encodes a per-thread CPU clock id from the thread id; this
 * is the ABI glibc's and musl's pthread_getcpuclockid use. Building it
 * from the kernel tid instead of the pthread_t means a thread that has
 * already exited yields EINVAL, where pthread_getcpuclockid would read
 * the (possibly unmapped) pthread struct of a dead thread. */
static inline clockid_t ps_linux_thread_clock(long tid)
{
    return (clockid_t)((~(unsigned long)tid << 3) | 6 /* CPUCLOCK_SCHED | PERTHREAD */);
}
#endif

static inline int64_t ps_thread_cpu_ns_of(unsigned long ident, unsigned long native_id);

/* CPU time a thread has used, in nanoseconds; -1 when it cannot be read.
 * ident 0 is no thread at all: the OS calls below would dereference it. */
static inline int64_t ps_thread_cpu_ns(unsigned long ident, unsigned long native_id)
{
    if (ident == 0 && native_id == 0) {
        return -1;
    }
    return ps_thread_cpu_ns_of(ident, native_id);
}

static inline int64_t ps_thread_cpu_ns_of(unsigned long ident, unsigned long native_id)
{
#if defined(_WIN32)
    FILETIME created, exited, kernel, user;
    HANDLE h = OpenThread(THREAD_QUERY_LIMITED_INFORMATION, FALSE, (DWORD)ident);
    int64_t total = -1;
    (void)native_id;
    if (h == NULL) {
        return -1;
    }
    if (GetThreadTimes(h, &created, &exited, &kernel, &user)) {
        ULARGE_INTEGER k, u;
        k.LowPart = kernel.dwLowDateTime; k.HighPart = kernel.dwHighDateTime;
        u.LowPart = user.dwLowDateTime;   u.HighPart = user.dwHighDateTime;
        total = (int64_t)(k.QuadPart + u.QuadPart) * 100;  /* 100 ns units */
    }
    CloseHandle(h);
    return total;
#elif defined(__APPLE__)
    thread_basic_info_data_t info;
    mach_msg_type_number_t count = THREAD_BASIC_INFO_COUNT;
    mach_port_t port = pthread_mach_thread_np((pthread_t)ident);
    (void)native_id;
    if (port == MACH_PORT_NULL) {
        return -1;
    }
    if (thread_info(port, THREAD_BASIC_INFO, (thread_info_t)&info, &count) != KERN_SUCCESS) {
        return -1;
    }
    return ((int64_t)info.user_time.seconds + info.system_time.seconds) * 1000000000LL
         + ((int64_t)info.user_time.microseconds + info.system_time.microseconds) * 1000LL;
#else
    struct timespec ts;
    clockid_t cid;
#  if defined(__linux__)
    if (native_id != 0) {
        cid = ps_linux_thread_clock((long)native_id);
    } else
#  endif
    if (pthread_getcpuclockid((pthread_t)ident, &cid) != 0) {
        return -1;
    }
    (void)native_id;
    if (clock_gettime(cid, &ts) != 0) {
        return -1;
    }
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
#endif
}

/* CPU time of the whole process (every thread, those that exited too),
 * and of the calling thread, in nanoseconds; -1 when unknown. */
static inline int64_t ps_process_cpu_ns(void)
{
#if defined(_WIN32)
    FILETIME created, exited, kernel, user;
    ULARGE_INTEGER k, u;
    if (!GetProcessTimes(GetCurrentProcess(), &created, &exited, &kernel, &user)) {
        return -1;
    }
    k.LowPart = kernel.dwLowDateTime; k.HighPart = kernel.dwHighDateTime;
    u.LowPart = user.dwLowDateTime;   u.HighPart = user.dwHighDateTime;
    return (int64_t)(k.QuadPart + u.QuadPart) * 100;
#else
    struct timespec ts;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0) {
        return -1;
    }
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
#endif
}

static inline int64_t ps_self_cpu_ns(void)
{
#if defined(_WIN32)
    FILETIME created, exited, kernel, user;
    ULARGE_INTEGER k, u;
    if (!GetThreadTimes(GetCurrentThread(), &created, &exited, &kernel, &user)) {
        return -1;
    }
    k.LowPart = kernel.dwLowDateTime; k.HighPart = kernel.dwHighDateTime;
    u.LowPart = user.dwLowDateTime;   u.HighPart = user.dwHighDateTime;
    return (int64_t)(k.QuadPart + u.QuadPart) * 100;
#else
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) {
        return -1;
    }
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
#endif
}

/* ------------------------------------------------------------------ */
/* A waker: the timer thread sleeps until a deadline on it, and stop()  */
/* wakes it at once instead of waiting out the period.                */
/* ------------------------------------------------------------------ */
typedef struct {
#if defined(_WIN32)
    HANDLE stop_event;   /* manual reset */
    HANDLE timer;        /* high-resolution waitable timer where available */
#else
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    int signalled;
#endif
} ps_waker;

static int ps_waker_init(ps_waker *w)
{
#if defined(_WIN32)
    w->stop_event = CreateEventW(NULL, TRUE, FALSE, NULL);
    if (w->stop_event == NULL) {
        return -1;
    }
    /* Plain waitable timers follow the 15.6 ms system tick; the high
     * resolution flag (Windows 10 1803+) gives sub-millisecond waits.
     * 0x00000002 is CREATE_WAITABLE_TIMER_HIGH_RESOLUTION. */
    w->timer = CreateWaitableTimerExW(NULL, NULL, 0x00000002, TIMER_ALL_ACCESS);
    if (w->timer == NULL) {
        w->timer = CreateWaitableTimerExW(NULL, NULL, 0, TIMER_ALL_ACCESS);
    }
    if (w->timer == NULL) {
        CloseHandle(w->stop_event);
        return -1;
    }
    return 0;
#else
    pthread_condattr_t attr;
    w->signalled = 0;
    if (pthread_mutex_init(&w->mutex, NULL) != 0) {
        return -1;
    }
    pthread_condattr_init(&attr);
#  if !defined(__APPLE__)
    /* wait against the monotonic clock so a wall-clock step cannot
     * stall or race the timer */
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
#  endif
    if (pthread_cond_init(&w->cond, &attr) != 0) {
        pthread_condattr_destroy(&attr);
        pthread_mutex_destroy(&w->mutex);
        return -1;
    }
    pthread_condattr_destroy(&attr);
    return 0;
#endif
}

static void ps_waker_destroy(ps_waker *w)
{
#if defined(_WIN32)
    CloseHandle(w->timer);
    CloseHandle(w->stop_event);
#else
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->mutex);
#endif
}

static void ps_waker_signal(ps_waker *w)
{
#if defined(_WIN32)
    SetEvent(w->stop_event);
#else
    pthread_mutex_lock(&w->mutex);
    w->signalled = 1;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mutex);
#endif
}

/* Sleep until the monotonic deadline; return 1 if woken by
 * ps_waker_signal (now or earlier), 0 when the deadline passed. */
static int ps_waker_wait_until(ps_waker *w, int64_t deadline_ns)
{
#if defined(_WIN32)
    int64_t left = deadline_ns - ps_monotonic_ns();
    LARGE_INTEGER due;
    HANDLE handles[2];
    DWORD r;
    if (left <= 0) {
        return WaitForSingleObject(w->stop_event, 0) == WAIT_OBJECT_0;
    }
    due.QuadPart = -(left / 100);  /* relative, in 100 ns units */
    if (due.QuadPart == 0) {
        due.QuadPart = -1;
    }
    SetWaitableTimer(w->timer, &due, 0, NULL, NULL, FALSE);
    handles[0] = w->stop_event;
    handles[1] = w->timer;
    r = WaitForMultipleObjects(2, handles, FALSE, INFINITE);
    return r == WAIT_OBJECT_0;
#else
    int woken;
    pthread_mutex_lock(&w->mutex);
    while (!w->signalled) {
        int rc;
#  if defined(__APPLE__)
        /* macOS has no monotonic condattr; wait a relative interval */
        struct timespec rel;
        int64_t left = deadline_ns - ps_monotonic_ns();
        if (left <= 0) {
            break;
        }
        rel.tv_sec = (time_t)(left / 1000000000LL);
        rel.tv_nsec = (long)(left % 1000000000LL);
        rc = pthread_cond_timedwait_relative_np(&w->cond, &w->mutex, &rel);
#  else
        struct timespec abs;
        abs.tv_sec = (time_t)(deadline_ns / 1000000000LL);
        abs.tv_nsec = (long)(deadline_ns % 1000000000LL);
        rc = pthread_cond_timedwait(&w->cond, &w->mutex, &abs);
#  endif
        if (rc == ETIMEDOUT) {
            break;
        }
    }
    woken = w->signalled;
    pthread_mutex_unlock(&w->mutex);
    return woken;
#endif
}

/* ------------------------------------------------------------------ */
/* A bell: one thread rings (rings coalesce until the waiter wakes),   */
/* the other waits for a ring or for the bell to be closed.           */
/* ------------------------------------------------------------------ */
typedef struct {
#if defined(_WIN32)
    HANDLE ring_event;   /* auto reset: one wake per ring(s) */
    HANDLE close_event;  /* manual reset */
#else
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    int rung;
    int closed;
#endif
} ps_bell;

static int ps_bell_init(ps_bell *b)
{
#if defined(_WIN32)
    b->ring_event = CreateEventW(NULL, FALSE, FALSE, NULL);
    b->close_event = CreateEventW(NULL, TRUE, FALSE, NULL);
    if (b->ring_event == NULL || b->close_event == NULL) {
        if (b->ring_event) CloseHandle(b->ring_event);
        if (b->close_event) CloseHandle(b->close_event);
        return -1;
    }
    return 0;
#else
    b->rung = 0;
    b->closed = 0;
    if (pthread_mutex_init(&b->mutex, NULL) != 0) {
        return -1;
    }
    if (pthread_cond_init(&b->cond, NULL) != 0) {
        pthread_mutex_destroy(&b->mutex);
        return -1;
    }
    return 0;
#endif
}

/* Make the bell usable again after ps_bell_close. */
static void ps_bell_reopen(ps_bell *b)
{
#if defined(_WIN32)
    ResetEvent(b->close_event);
    ResetEvent(b->ring_event);
#else
    pthread_mutex_lock(&b->mutex);
    b->rung = 0;
    b->closed = 0;
    pthread_mutex_unlock(&b->mutex);
#endif
}

static void ps_bell_ring(ps_bell *b)
{
#if defined(_WIN32)
    SetEvent(b->ring_event);
#else
    pthread_mutex_lock(&b->mutex);
    b->rung = 1;
    pthread_cond_signal(&b->cond);
    pthread_mutex_unlock(&b->mutex);
#endif
}

static void ps_bell_close(ps_bell *b)
{
#if defined(_WIN32)
    SetEvent(b->close_event);
#else
    pthread_mutex_lock(&b->mutex);
    b->closed = 1;
    pthread_cond_signal(&b->cond);
    pthread_mutex_unlock(&b->mutex);
#endif
}

/* Wait for a ring (returns 1) or for the bell to close (returns 0). */
static int ps_bell_wait(ps_bell *b)
{
#if defined(_WIN32)
    HANDLE handles[2];
    handles[0] = b->close_event;
    handles[1] = b->ring_event;
    return WaitForMultipleObjects(2, handles, FALSE, INFINITE) == WAIT_OBJECT_0 + 1;
#else
    int rung;
    pthread_mutex_lock(&b->mutex);
    while (!b->rung && !b->closed) {
        pthread_cond_wait(&b->cond, &b->mutex);
    }
    rung = !b->closed;
    b->rung = 0;
    pthread_mutex_unlock(&b->mutex);
    return rung;
#endif
}

/* ------------------------------------------------------------------ */
/* Native threads.                                                    */
/* ------------------------------------------------------------------ */
#if defined(_WIN32)
typedef HANDLE ps_thread_t;
typedef DWORD (WINAPI *ps_thread_fn)(LPVOID);
#  define PS_THREAD_RETURN DWORD WINAPI
static int ps_thread_start(ps_thread_t *t, ps_thread_fn fn, void *arg)
{
    *t = CreateThread(NULL, 0, fn, arg, 0, NULL);
    return *t == NULL ? -1 : 0;
}
static void ps_thread_join(ps_thread_t t)
{
    WaitForSingleObject(t, INFINITE);
    CloseHandle(t);
}
#else
typedef pthread_t ps_thread_t;
typedef void *(*ps_thread_fn)(void *);
#  define PS_THREAD_RETURN void *
static int ps_thread_start(ps_thread_t *t, ps_thread_fn fn, void *arg)
{
    return pthread_create(t, NULL, fn, arg) == 0 ? 0 : -1;
}
static void ps_thread_join(ps_thread_t t)
{
    pthread_join(t, NULL);
}
#endif

/* ------------------------------------------------------------------ */
/* xorshift64*: jitter for the timer, never for anything secret.      */
/* ------------------------------------------------------------------ */
static inline uint64_t ps_random_next(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* uniform double in [0, 1) */
static inline double ps_random_unit(uint64_t *state)
{
    return (double)(ps_random_next(state) >> 11) * (1.0 / 9007199254740992.0);
}

#endif /* PYSAMPLER_PLATFORM_H */
