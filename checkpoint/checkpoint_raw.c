/* checkpoint/checkpoint_raw.c — reading contiguous datasets' bytes directly.
 *
 * The writer stores every dataset contiguous, unfiltered, as IEEE F32LE, so
 * on a little-endian host its elements are the file's bytes at the offset
 * HDF5 reports. Reading them with large preads skips HDF5's per-call work,
 * and O_DIRECT skips the page cache: a cold buffered read allocates a
 * page-cache page per 4 KiB and then copies it into the destination, which
 * on a VM (where first touch of guest memory is expensive) costs more than
 * the disk. O_DIRECT needs aligned offsets, lengths and buffers, which an
 * HDF5 dataset inside a caller's array does not have, so reads go through an
 * aligned bounce buffer the reader reuses (its pages fault once), in two
 * halves: a thread reads the next window while the caller copies the last
 * one out, so the disk works while the destination's fresh pages fault in.
 * Where the filesystem refuses O_DIRECT (tmpfs), reads are buffered preads
 * straight into the destination. The bytes are verified by the caller exactly as an
 * H5Dread's would be. */
#define _GNU_SOURCE
#include "checkpoint/checkpoint_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RAW_ALIGN 4096
/* Each half of the bounce buffer takes one window plus its alignment slack. */
#define CKPT_RAW_WINDOW_BYTES (CKPT_RAW_BOUNCE_BYTES / 2 - 2 * RAW_ALIGN)

void ckpt_raw_open(CkptRawFile *f, const char *path) {
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    f->direct_fd = f->fd >= 0 ? open(path, O_RDONLY | O_CLOEXEC | O_DIRECT) : -1;
}

void ckpt_raw_close(CkptRawFile *f) {
    if (f->direct_fd >= 0) close(f->direct_fd);
    if (f->fd >= 0) close(f->fd);
    f->fd = f->direct_fd = -1;
}

unsigned char *ckpt_raw_bounce_new(void) {
    void *p = NULL;
    return posix_memalign(&p, RAW_ALIGN, CKPT_RAW_BOUNCE_BYTES) == 0 ? p : NULL;
}

int64_t ckpt_raw_offset(hid_t dset, int64_t n) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    hid_t type = H5Dget_type(dset);
    const bool f32le = type >= 0 && H5Tequal(type, H5T_IEEE_F32LE) > 0;
    if (type >= 0) H5Tclose(type);
    if (!f32le || H5Dget_storage_size(dset) != (hsize_t)n * sizeof(float)) return -1;
    haddr_t addr = H5Dget_offset(dset); /* HADDR_UNDEF unless contiguous and allocated */
    return addr == HADDR_UNDEF || addr > (haddr_t)INT64_MAX ? -1 : (int64_t)addr;
#else
    (void)dset;
    (void)n;
    return -1;
#endif
}

/* pread until len bytes or end of file; the bytes read, -1 on error. */
static int64_t pread_full(int fd, void *buf, size_t len, int64_t off) {
    size_t done = 0;
    while (done < len) {
        ssize_t got = pread(fd, (char *)buf + done, len - done, (off_t)(off + (int64_t)done));
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) return -1;
        if (got == 0) break;
        done += (size_t)got;
    }
    return (int64_t)done;
}

static bool raw_failed(char *detail, size_t size, const char *what, int64_t off, size_t len) {
    snprintf(detail, size, "%s reading %zu bytes of raw data at file offset %lld%s%s", what, len,
             (long long)off, errno ? ": " : "", errno ? strerror(errno) : "");
    return false;
}

/* One aligned O_DIRECT read into a bounce half, run on its own thread so
 * the disk fills one half while the caller copies out of the other. */
typedef struct {
    int fd;
    unsigned char *buf;
    int64_t start;  /* aligned file offset */
    size_t padded;  /* aligned length */
    int64_t got;    /* bytes read, -1 on error */
    int error;      /* errno of the failure */
    pthread_t thread;
    bool running;
} WindowRead;

static void *window_read_run(void *arg) {
    WindowRead *w = arg;
    errno = 0;
    w->got = pread_full(w->fd, w->buf, w->padded, w->start);
    w->error = errno;
    return NULL;
}

/* Window k of [off, off + len): its file range, rounded out to RAW_ALIGN. */
static void window_plan(WindowRead *w, int64_t off, size_t len, size_t k) {
    const int64_t lo = off + (int64_t)(k * CKPT_RAW_WINDOW_BYTES);
    const int64_t hi = lo + (int64_t)CKPT_RAW_WINDOW_BYTES < off + (int64_t)len
                           ? lo + (int64_t)CKPT_RAW_WINDOW_BYTES
                           : off + (int64_t)len;
    w->start = lo / RAW_ALIGN * RAW_ALIGN;
    w->padded = (size_t)((hi - w->start + RAW_ALIGN - 1) / RAW_ALIGN * RAW_ALIGN);
}

static void window_start(WindowRead *w) {
    w->running = pthread_create(&w->thread, NULL, window_read_run, w) == 0;
    if (!w->running) window_read_run(w); /* no thread: read in line */
}

static void window_wait(WindowRead *w) {
    if (w->running) pthread_join(w->thread, NULL);
    w->running = false;
}

/* The O_DIRECT path; *refused when the filesystem rejects O_DIRECT (EINVAL
 * before any byte was delivered), for the caller to fall back. */
static bool direct_read(const CkptRawFile *f, unsigned char *bounce, int64_t off, size_t len,
                        unsigned char *out, bool *refused, char *detail, size_t size) {
    const size_t windows = (len + CKPT_RAW_WINDOW_BYTES - 1) / CKPT_RAW_WINDOW_BYTES;
    WindowRead w[2] = {{.fd = f->direct_fd, .buf = bounce},
                       {.fd = f->direct_fd, .buf = bounce + CKPT_RAW_BOUNCE_BYTES / 2}};
    window_plan(&w[0], off, len, 0);
    window_start(&w[0]);
    bool ok = true;
    for (size_t k = 0; k < windows; k++) {
        WindowRead *cur = &w[k % 2], *next = &w[(k + 1) % 2];
        window_wait(cur);
        if (ok && k + 1 < windows) {
            window_plan(next, off, len, k + 1);
            window_start(next);
        }
        if (!ok) continue;
        const int64_t lo = off + (int64_t)(k * CKPT_RAW_WINDOW_BYTES);
        const size_t part = len - k * CKPT_RAW_WINDOW_BYTES < CKPT_RAW_WINDOW_BYTES
                                ? len - k * CKPT_RAW_WINDOW_BYTES
                                : CKPT_RAW_WINDOW_BYTES;
        errno = cur->error;
        if (cur->got < 0 && errno == EINVAL && k == 0) {
            *refused = true;
            ok = false;
        } else if (cur->got < 0) {
            ok = raw_failed(detail, size, "I/O error", lo, part);
        } else if (cur->got < lo - cur->start + (int64_t)part) {
            errno = 0;
            ok = raw_failed(detail, size, "the file ends early", lo, part);
        } else {
            memcpy(out + k * CKPT_RAW_WINDOW_BYTES, cur->buf + (lo - cur->start), part);
        }
    }
    window_wait(&w[0]);
    window_wait(&w[1]);
    return ok;
}

bool ckpt_raw_read(const CkptRawFile *f, unsigned char *bounce, int64_t off, size_t len,
                   void *out, char *detail, size_t size) {
    bool refused = f->direct_fd < 0 || !bounce;
    if (!refused && direct_read(f, bounce, off, len, out, &refused, detail, size)) return true;
    if (!refused) return false;
    errno = 0;
    int64_t got = pread_full(f->fd, out, len, off);
    if (got < 0) return raw_failed(detail, size, "I/O error", off, len);
    if ((size_t)got < len) {
        errno = 0;
        return raw_failed(detail, size, "the file ends early", off, len);
    }
    return true;
}
