/*
 * saferead.h - copy memory of this very process through the kernel, so that
 * reading an address that was freed and unmapped a moment ago returns an
 * error instead of killing the program.
 *
 * Why
 * ---
 * The stack reader (reader.h) reads other threads' Python frames from the
 * native timer thread, without the GIL. Nothing stops those threads: a frame
 * may be popped, its data-stack chunk freed and unmapped, a generator (and
 * the frame inside it) deallocated, between the moment we learn an address
 * and the moment we read it. A plain load would then fault. A copy made by
 * the kernel on our behalf checks the mapping and fails with EFAULT / EIO.
 * What the copy returns may still be stale or torn; reader.h validates it.
 *
 * How, per system
 *   Linux      process_vm_readv(getpid(), ...): one call copies one range.
 *              Refused by some sandboxes (seccomp: EPERM or ENOSYS); then
 *              pread() on /proc/self/mem, opened once at start; then none.
 *   macOS      vm_read_overwrite(mach_task_self(), ...) (mach_vm_read_overwrite).
 *   Windows    ReadProcessMemory(GetCurrentProcess(), ...).
 *   others     none: the sampler keeps the GIL-holding path.
 *
 * Cost measured (Linux 6.x under a Firecracker VM, 2 vCPUs, where any system
 * call costs ~0.8 us): process_vm_readv 1.3-1.5 us for 64 B to 1 KiB, 1.7 us
 * for 4 KiB, 3.4 us for 16 KiB; pread on /proc/self/mem ~2 us for 256 B. On
 * bare metal the same calls take ~0.3 us for <= 1 KiB. Each extra iovec in
 * one call costs almost as much as a call of its own (the kernel pins each
 * range), so the reader copies a thread's whole data-stack chunk in one call
 * rather than frame by frame.
 */
#ifndef PYSAMPLER_SAFEREAD_H
#define PYSAMPLER_SAFEREAD_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(_WIN32)
#  ifndef WIN32_LEAN_AND_MEAN
#    define WIN32_LEAN_AND_MEAN
#  endif
#  include <windows.h>
#elif defined(__APPLE__)
#  include <mach/mach.h>  /* vm_read_overwrite (mach/vm_map.h) */
#elif defined(__linux__)
/* process_vm_readv is a GNU extension: declared when _GNU_SOURCE is set
 * before the first system header, as Python.h (pyconfig.h) does */
#  include <errno.h>
#  include <fcntl.h>
#  include <sys/types.h>
#  include <sys/uio.h>
#  include <unistd.h>
#endif

enum {
    PS_SAFEREAD_NONE = 0,   /* no safe copy on this system: keep the GIL path */
    PS_SAFEREAD_VM = 1,     /* process_vm_readv / mach_vm_read / ReadProcessMemory */
    PS_SAFEREAD_PROCMEM = 2 /* Linux: pread on /proc/self/mem */
};

typedef struct {
    int how;
#if defined(__linux__)
    pid_t pid;
    int mem_fd;
#endif
} ps_saferead;

static ps_saferead ps_SR = {PS_SAFEREAD_NONE
#if defined(__linux__)
    , 0, -1
#endif
};

/* Copy n bytes at `src` (an address in this process) to `dst`. Returns 0
 * when all n bytes were copied, -1 otherwise (unmapped, or no mechanism).
 * Never faults on `src`; `dst` must be ours. */
static inline int ps_safe_read(void *dst, const void *src, size_t n)
{
    if (n == 0) {
        return 0;
    }
#if defined(__linux__)
    if (ps_SR.how == PS_SAFEREAD_VM) {
        struct iovec local, remote;
        local.iov_base = dst;
        local.iov_len = n;
        remote.iov_base = (void *)(uintptr_t)src;
        remote.iov_len = n;
        return process_vm_readv(ps_SR.pid, &local, 1, &remote, 1, 0) == (ssize_t)n ? 0 : -1;
    }
    if (ps_SR.how == PS_SAFEREAD_PROCMEM) {
        /* addresses above 2^63 do not fit off_t and are never mapped */
        if ((uintptr_t)src > (uintptr_t)INT64_MAX - n) {
            return -1;
        }
        return pread(ps_SR.mem_fd, dst, n, (off_t)(uintptr_t)src) == (ssize_t)n ? 0 : -1;
    }
    return -1;
#elif defined(__APPLE__)
    vm_size_t got = 0;
    if (ps_SR.how != PS_SAFEREAD_VM) {
        return -1;
    }
    /* vm_read_overwrite: mach_vm_read_overwrite's older name, whose address
     * types are 64-bit in 64-bit processes (and declared in mach/mach.h) */
    if (vm_read_overwrite(mach_task_self(), (vm_address_t)(uintptr_t)src, (vm_size_t)n,
                          (vm_address_t)(uintptr_t)dst, &got) != KERN_SUCCESS) {
        return -1;
    }
    return got == n ? 0 : -1;
#elif defined(_WIN32)
    SIZE_T got = 0;
    if (ps_SR.how != PS_SAFEREAD_VM) {
        return -1;
    }
    if (!ReadProcessMemory(GetCurrentProcess(), src, dst, n, &got)) {
        return -1;
    }
    return got == n ? 0 : -1;
#else
    (void)dst; (void)src;
    return -1;
#endif
}

/* Several copies made as close together in time as the system allows:
 * one call with several ranges where there is one (process_vm_readv, which
 * copies them in order), else one call each. The reader copies a running
 * thread's innermost-frame pointer and its data stack this way: the thread
 * pushes and pops frames every few hundred nanoseconds, and what lies
 * between the copies decides how often they disagree (reader.h). 0 when
 * every range was copied whole. */
typedef struct {
    void *dst;
    const void *src;
    size_t n;
} ps_range;

#define PS_MAX_SAFE_RANGES 4

static inline int ps_safe_read_ranges(const ps_range *r, int count)
{
    int i;
#if defined(__linux__)
    if (ps_SR.how == PS_SAFEREAD_VM && count <= PS_MAX_SAFE_RANGES) {
        struct iovec local[PS_MAX_SAFE_RANGES], remote[PS_MAX_SAFE_RANGES];
        size_t total = 0;
        for (i = 0; i < count; i++) {
            local[i].iov_base = r[i].dst;
            local[i].iov_len = r[i].n;
            remote[i].iov_base = (void *)(uintptr_t)r[i].src;
            remote[i].iov_len = r[i].n;
            total += r[i].n;
        }
        return process_vm_readv(ps_SR.pid, local, (unsigned long)count, remote,
                                (unsigned long)count, 0) == (ssize_t)total ? 0 : -1;
    }
#endif
    for (i = 0; i < count; i++) {
        if (ps_safe_read(r[i].dst, r[i].src, r[i].n) != 0) {
            return -1;
        }
    }
    return 0;
}

/* A copy of a known value must come back intact, and an address in the
 * first page (never mapped) must fail without a fault. */
static int ps_saferead_works(void)
{
    volatile uint64_t probe = 0x5053414D504C4552ULL;  /* "PSAMPLER" */
    uint64_t got = 0;
    if (ps_safe_read(&got, (const void *)&probe, sizeof(got)) != 0 || got != probe) {
        return 0;
    }
    return ps_safe_read(&got, (const void *)(uintptr_t)64, sizeof(got)) != 0;
}

/* Choose the mechanism (once per session, GIL held). Returns ps_SR.how. */
static int ps_saferead_init(void)
{
#if defined(__linux__)
    ps_SR.pid = getpid();  /* fork: a child calls this again at its start() */
    if (ps_SR.mem_fd >= 0) {
        close(ps_SR.mem_fd);
        ps_SR.mem_fd = -1;
    }
    ps_SR.how = PS_SAFEREAD_VM;
    if (ps_saferead_works()) {
        return ps_SR.how;
    }
    /* seccomp profiles (containers) often refuse process_vm_readv */
    ps_SR.mem_fd = open("/proc/self/mem", O_RDONLY | O_CLOEXEC);
    if (ps_SR.mem_fd >= 0) {
        ps_SR.how = PS_SAFEREAD_PROCMEM;
        if (ps_saferead_works()) {
            return ps_SR.how;
        }
        close(ps_SR.mem_fd);
        ps_SR.mem_fd = -1;
    }
    ps_SR.how = PS_SAFEREAD_NONE;
    return ps_SR.how;
#elif defined(__APPLE__) || defined(_WIN32)
    ps_SR.how = PS_SAFEREAD_VM;
    if (!ps_saferead_works()) {
        ps_SR.how = PS_SAFEREAD_NONE;
    }
    return ps_SR.how;
#else
    ps_SR.how = PS_SAFEREAD_NONE;
    return ps_SR.how;
#endif
}

#endif /* PYSAMPLER_SAFEREAD_H */
