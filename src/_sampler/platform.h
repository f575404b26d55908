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
#  include <signal.h>
#  include <time.h>
#  include <errno.h>
#else
#  include <pthread.h>
#  include <signal.h>
#  include <sched.h>
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
/* Per-thread CPU clock of *another* thread: opened once per thread     */
/* (ps_clock_open, when the sampler first sees it), read many times.    */
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

typedef struct {
    int ok;
#if defined(_WIN32)
    HANDLE handle;      /* opened once: OpenThread per reading costs a system call */
#elif defined(__APPLE__)
    mach_port_t port;   /* a send right we own, found by thread id */
#else
    clockid_t cid;
#endif
} ps_clock;

#if defined(_WIN32)
/* GetThreadTimes advances in 15.6 ms steps (the scheduler tick): at 1 kHz
 * most readings would show no CPU at all. QueryThreadCycleTime counts the
 * thread's own CPU cycles (the time-stamp counter while it runs); cycles
 * per nanosecond are measured once, against QueryPerformanceCounter, on
 * the calling thread while it spins for ~2 ms (the largest of three
 * tries: a preempted try counts too few cycles). */
static double ps_win_ns_per_cycle(void)
{
    static double ratio;
    int i;
    if (ratio > 0) {
        return ratio;
    }
    for (i = 0; i < 3; i++) {
        LARGE_INTEGER f, a, b;
        ULONG64 c0 = 0, c1 = 0;
        double ns, r;
        QueryPerformanceFrequency(&f);
        QueryPerformanceCounter(&a);
        QueryThreadCycleTime(GetCurrentThread(), &c0);
        do {
            QueryPerformanceCounter(&b);
        } while ((double)(b.QuadPart - a.QuadPart) * 1e9 / (double)f.QuadPart < 2e6);
        QueryThreadCycleTime(GetCurrentThread(), &c1);
        ns = (double)(b.QuadPart - a.QuadPart) * 1e9 / (double)f.QuadPart;
        if (c1 > c0) {
            r = ns / (double)(c1 - c0);
            if (ratio == 0 || r < ratio) {
                ratio = r;  /* fewest ns per cycle: the try that ran throughout */
            }
        }
    }
    if (ratio <= 0) {
        ratio = 1.0 / 3.0;  /* no reading: assume 3 GHz */
    }
    return ratio;
}
#endif

/* Open the clock of a thread that is alive now; 0 on success. */
static int ps_clock_open(ps_clock *c, unsigned long ident, unsigned long native_id)
{
    c->ok = 0;
    if (ident == 0 && native_id == 0) {
        return -1;  /* no thread at all: the calls below would dereference it */
    }
#if defined(_WIN32)
    (void)native_id;
    (void)ps_win_ns_per_cycle();
    c->handle = OpenThread(THREAD_QUERY_LIMITED_INFORMATION, FALSE, (DWORD)ident);
    c->ok = c->handle != NULL;
#elif defined(__APPLE__)
    {
        /* Find the thread's port by its 64-bit thread id (native_id, from
         * pthread_threadid_np) among the task's threads, rather than with
         * pthread_mach_thread_np(ident), which reads the pthread struct of
         * a thread that may have exited and been freed. */
        thread_act_array_t list = NULL;
        mach_msg_type_number_t n = 0, i;
        (void)ident;
        c->port = MACH_PORT_NULL;
        if (native_id == 0 || task_threads(mach_task_self(), &list, &n) != KERN_SUCCESS) {
            return -1;
        }
        for (i = 0; i < n; i++) {
            thread_identifier_info_data_t id;
            mach_msg_type_number_t count = THREAD_IDENTIFIER_INFO_COUNT;
            if (c->port == MACH_PORT_NULL &&
                thread_info(list[i], THREAD_IDENTIFIER_INFO, (thread_info_t)&id, &count) == KERN_SUCCESS &&
                id.thread_id == (uint64_t)native_id) {
                c->port = list[i];  /* keep this right */
                continue;
            }
            mach_port_deallocate(mach_task_self(), list[i]);
        }
        vm_deallocate(mach_task_self(), (vm_address_t)list, n * sizeof(list[0]));
        c->ok = c->port != MACH_PORT_NULL;
    }
#else
#  if defined(__linux__)
    if (native_id != 0) {
        c->cid = ps_linux_thread_clock((long)native_id);
        c->ok = 1;
        return 0;
    }
#  endif
    (void)native_id;
    c->ok = pthread_getcpuclockid((pthread_t)ident, &c->cid) == 0;
#endif
    return c->ok ? 0 : -1;
}

/* CPU time the thread has used, in nanoseconds; -1 when it cannot be read
 * (never opened, or the thread has exited). */
static inline int64_t ps_clock_read(const ps_clock *c)
{
    if (!c->ok) {
        return -1;
    }
#if defined(_WIN32)
    {
        ULONG64 cycles = 0;
        if (!QueryThreadCycleTime(c->handle, &cycles)) {
            return -1;
        }
        return (int64_t)((double)cycles * ps_win_ns_per_cycle());
    }
#elif defined(__APPLE__)
    {
        thread_basic_info_data_t info;
        mach_msg_type_number_t count = THREAD_BASIC_INFO_COUNT;
        if (thread_info(c->port, THREAD_BASIC_INFO, (thread_info_t)&info, &count) != KERN_SUCCESS) {
            return -1;
        }
        return ((int64_t)info.user_time.seconds + info.system_time.seconds) * 1000000000LL
             + ((int64_t)info.user_time.microseconds + info.system_time.microseconds) * 1000LL;
    }
#else
    {
        struct timespec ts;
        if (clock_gettime(c->cid, &ts) != 0) {
            return -1;
        }
        return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    }
#endif
}

static void ps_clock_close(ps_clock *c)
{
#if defined(_WIN32)
    if (c->ok) {
        CloseHandle(c->handle);
    }
#elif defined(__APPLE__)
    if (c->ok) {
        mach_port_deallocate(mach_task_self(), c->port);
    }
#endif
    c->ok = 0;
}

/* One reading of a thread's clock without keeping it open. */
static inline int64_t ps_thread_cpu_ns(unsigned long ident, unsigned long native_id)
{
    ps_clock c;
    int64_t v;
    if (ps_clock_open(&c, ident, native_id) != 0) {
        return -1;
    }
    v = ps_clock_read(&c);
    ps_clock_close(&c);
    return v;
}

/* CPU time of the whole process (every thread, those that exited too),
 * and of the calling thread, in nanoseconds; -1 when unknown. */
static inline int64_t ps_process_cpu_ns(void)
{
#if defined(_WIN32)
    /* cycles, like the per-thread clocks (GetProcessTimes ticks in 15.6 ms) */
    ULONG64 cycles = 0;
    if (!QueryProcessCycleTime(GetCurrentProcess(), &cycles)) {
        return -1;
    }
    return (int64_t)((double)cycles * ps_win_ns_per_cycle());
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
    ULONG64 cycles = 0;
    if (!QueryThreadCycleTime(GetCurrentThread(), &cycles)) {
        return -1;
    }
    return (int64_t)((double)cycles * ps_win_ns_per_cycle());
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
/* The sampler's threads start with every signal blocked (a new thread
 * inherits its creator's mask), so a signal sent to the process is always
 * taken by one of the program's threads: a Python handler then runs at the
 * main thread's next bytecode, as without pysampler, instead of whenever a
 * sleeping sampler thread is next scheduled to take the signal. */
static int ps_thread_start(ps_thread_t *t, ps_thread_fn fn, void *arg)
{
    sigset_t all, old;
    int rc;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(t, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc == 0 ? 0 : -1;
}
static void ps_thread_join(ps_thread_t t)
{
    pthread_join(t, NULL);
}
#endif

/* Ask the OS to run the calling thread (the timer) as soon as it wakes:
 * a tick must land when it is due, not when a core happens to free up. On
 * a machine with more runnable threads than cores, a timer at normal
 * priority runs mostly right after one of the program's threads blocks,
 * which is when the GIL is with code that holds it long: measured, shares
 * of such code +0.05 to +0.08 too high. Real-time round-robin at the lowest
 * priority where allowed (Linux: root or CAP_SYS_NICE), else the highest
 * priority the user may set; failures are ignored. The thread sleeps
 * between ticks and works ~10-20 us per tick, so it cannot starve anyone.
 * Linux wakes a real-time thread on the CPU it last ran on, taking it from
 * the program's thread there: placement.h moves it off the GIL holder's. */
static void ps_thread_prefer_on_time(void)
{
#if defined(_WIN32)
    SetThreadPriority(GetCurrentThread(), THREAD_PRIORITY_TIME_CRITICAL);
#elif defined(__linux__)
    struct sched_param sp;
    sp.sched_priority = 1;
    (void)pthread_setschedparam(pthread_self(), SCHED_RR, &sp);
#elif defined(__APPLE__)
    struct sched_param sp;
    int policy = 0;
    if (pthread_getschedparam(pthread_self(), &policy, &sp) == 0) {
        sp.sched_priority = sched_get_priority_max(policy);
        (void)pthread_setschedparam(pthread_self(), policy, &sp);
    }
#endif
}

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
