/* LD_PRELOAD shim: sums the bytes a process writes to files whose name ends in "-wal".
 *
 * The total lives in a small file mapped shared (WALCOUNT_OUT), so it survives a
 * process that exits without running destructors (Go calls exit_group directly), and
 * the counting costs one atomic add per write: the run is not slowed down the way
 * strace slows it (which would change how many debounce windows elapse).
 * Build: gcc -shared -fPIC -O2 -o walcount.so walcount.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <unistd.h>

#define MAXFD 65536
static unsigned char is_wal[MAXFD];
static uint64_t fallback[2];
static uint64_t *counter = fallback; /* [0] bytes, [1] write calls */

static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real_close)(int);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*real_write)(int, const void *, size_t);

__attribute__((constructor)) static void walcount_init(void) {
    real_open = dlsym(RTLD_NEXT, "open");
    real_open64 = dlsym(RTLD_NEXT, "open64");
    real_openat = dlsym(RTLD_NEXT, "openat");
    real_openat64 = dlsym(RTLD_NEXT, "openat64");
    real_close = dlsym(RTLD_NEXT, "close");
    real_pwrite = dlsym(RTLD_NEXT, "pwrite");
    real_pwrite64 = dlsym(RTLD_NEXT, "pwrite64");
    real_write = dlsym(RTLD_NEXT, "write");
    const char *out = getenv("WALCOUNT_OUT");
    if (out == NULL) return;
    int fd = real_open(out, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return;
    if (ftruncate(fd, sizeof fallback) == 0) {
        void *p = mmap(NULL, sizeof fallback, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p != MAP_FAILED) counter = p;
    }
    real_close(fd);
}

static int ends_wal(const char *path) {
    size_t n = path ? strlen(path) : 0;
    return n >= 4 && strcmp(path + n - 4, "-wal") == 0;
}

static int track(int fd, const char *path) {
    if (fd >= 0 && fd < MAXFD) is_wal[fd] = (unsigned char)ends_wal(path);
    return fd;
}

static ssize_t count(int fd, ssize_t written) {
    if (written > 0 && fd >= 0 && fd < MAXFD && is_wal[fd]) {
        __atomic_fetch_add(&counter[0], (uint64_t)written, __ATOMIC_RELAXED);
        __atomic_fetch_add(&counter[1], 1, __ATOMIC_RELAXED);
    }
    return written;
}

#define MODE(flags) \
    mode_t mode = 0; \
    if ((flags) & (O_CREAT | O_TMPFILE)) { va_list ap; va_start(ap, flags); \
        mode = va_arg(ap, mode_t); va_end(ap); }

int open(const char *path, int flags, ...) { MODE(flags) return track(real_open(path, flags, mode), path); }
int open64(const char *path, int flags, ...) { MODE(flags) return track(real_open64(path, flags, mode), path); }
int openat(int dir, const char *path, int flags, ...) { MODE(flags) return track(real_openat(dir, path, flags, mode), path); }
int openat64(int dir, const char *path, int flags, ...) { MODE(flags) return track(real_openat64(dir, path, flags, mode), path); }
int close(int fd) { if (fd >= 0 && fd < MAXFD) is_wal[fd] = 0; return real_close(fd); }
ssize_t pwrite(int fd, const void *b, size_t n, off_t o) { return count(fd, real_pwrite(fd, b, n, o)); }
ssize_t pwrite64(int fd, const void *b, size_t n, off_t o) { return count(fd, real_pwrite64(fd, b, n, o)); }
ssize_t write(int fd, const void *b, size_t n) { return count(fd, real_write(fd, b, n)); }
