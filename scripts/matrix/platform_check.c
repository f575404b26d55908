/*
 * platform_check.c - a translation unit that uses every function of
 * src/_sampler/platform.h and src/_sampler/saferead.h, so that
 * cross-compiling it with -Werror checks the operating-system code
 * (monotonic clock, per-thread, process and own CPU clocks, timer waker,
 * bell, native threads, copies of memory that cannot fault) of each target, with that target's own
 * system headers (zig ships glibc, musl, macOS and mingw-w64 headers).
 * Nothing here touches Python; cross-compile.sh builds the whole extension
 * separately.
 */
/* as Python.h's pyconfig.h does for the extension (process_vm_readv) */
#define _GNU_SOURCE 1
#include "_sampler/platform.h"
#include "_sampler/saferead.h"

static ps_waker waker;
static ps_bell bell;

static PS_THREAD_RETURN worker(void *arg)
{
    (void)arg;
    while (ps_bell_wait(&bell)) {
        ps_waker_signal(&waker);
    }
    return 0;
}

int platform_check(unsigned long ident, unsigned long native_id)
{
    ps_atomic_t counter = 0;
    ps_thread_t thread;
    uint64_t seed = 1;
    int64_t now = ps_monotonic_ns();
    int64_t cpu = ps_thread_cpu_ns(ident, native_id);
    ps_clock clock;
    uint64_t copy = 0;
    if (ps_clock_open(&clock, ident, native_id) == 0) {
        cpu += ps_clock_read(&clock);
        ps_clock_close(&clock);
    }
    cpu += ps_process_cpu_ns() + ps_self_cpu_ns();
    ps_thread_prefer_on_time();
    if (ps_saferead_init() != PS_SAFEREAD_NONE) {
        (void)ps_safe_read(&copy, &seed, sizeof(copy));
    }
    if (ps_waker_init(&waker) != 0 || ps_bell_init(&bell) != 0) {
        return -1;
    }
    if (ps_thread_start(&thread, worker, NULL) != 0) {
        return -1;
    }
    ps_bell_ring(&bell);
    (void)ps_waker_wait_until(&waker, now + (int64_t)(ps_random_unit(&seed) * 1e6));
    ps_bell_close(&bell);
    ps_thread_join(thread);
    ps_bell_reopen(&bell);
    ps_atomic_store(&counter, 1);
    (void)ps_atomic_exchange(&counter, 2);
    (void)ps_atomic_add(&counter, 1);
    ps_waker_destroy(&waker);
    return (int)(ps_atomic_load(&counter) + (cpu < 0));
}
