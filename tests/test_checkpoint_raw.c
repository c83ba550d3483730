/* Raw reads of contiguous datasets' bytes (checkpoint/checkpoint_raw.c), on
 * a file of known bytes in TMPDIR (default /tmp):
 * - through O_DIRECT and the two-half bounce buffer, at unaligned offsets
 *   and lengths spanning several windows, the bytes are the file's;
 * - with no O_DIRECT descriptor, no bounce buffer, or a misaligned bounce
 *   buffer (which O_DIRECT refuses with EINVAL where it is enforced), the
 *   buffered fallback gives the same bytes;
 * - a read past the end of the file fails and says so.
 * It includes the module's internal header: these functions have no public
 * entry point of their own. */
#include "checkpoint/checkpoint_internal.h"
#include "test_util.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FILE_BYTES ((size_t)(3 * CKPT_RAW_BOUNCE_BYTES + 12345))

static unsigned char byte_at(size_t i) { return (unsigned char)((i * 2654435761u) >> 13); }

static void expect_bytes(const CkptRawFile *f, unsigned char *bounce, int64_t off, size_t len) {
    unsigned char *out = xmalloc(len + 1);
    char detail[512] = "";
    CHECK_MSG(ckpt_raw_read(f, bounce, off, len, out, detail, sizeof detail), "%s", detail);
    for (size_t i = 0; i < len; i++)
        CHECK_MSG(out[i] == byte_at((size_t)off + i), "byte %zu of the read at %lld", i,
                  (long long)off);
    free(out);
}

static void expect_all_reads(const CkptRawFile *f, unsigned char *bounce) {
    expect_bytes(f, bounce, 0, 4096);
    expect_bytes(f, bounce, 4097 + 3, (size_t)CKPT_RAW_BOUNCE_BYTES + 5);   /* several windows */
    expect_bytes(f, bounce, 1, 7);                                         /* inside one page */
    expect_bytes(f, bounce, (int64_t)FILE_BYTES - 10, 10);                 /* up to the end */
    expect_bytes(f, bounce, 12, FILE_BYTES - 12);                          /* nearly all */
}

int main(void) {
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char path[512];
    snprintf(path, sizeof path, "%s/test_checkpoint_raw.XXXXXX", tmp);
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    unsigned char *data = xmalloc(FILE_BYTES);
    for (size_t i = 0; i < FILE_BYTES; i++) data[i] = byte_at(i);
    CHECK(write(fd, data, FILE_BYTES) == (ssize_t)FILE_BYTES);
    close(fd);
    free(data);

    CkptRawFile f;
    ckpt_raw_open(&f, path);
    CHECK(f.fd >= 0);
    unsigned char *bounce = ckpt_raw_bounce_new();
    CHECK(bounce && (uintptr_t)bounce % 4096 == 0);
    printf("O_DIRECT %s on %s\n", f.direct_fd >= 0 ? "accepted" : "refused at open", tmp);
    expect_all_reads(&f, bounce);
    expect_all_reads(&f, NULL);
    unsigned char *misaligned = ckpt_raw_bounce_new();
    CHECK(misaligned);
    /* Room for the shift: only the first half-window plus slack is used. */
    expect_bytes(&f, misaligned + 1, 4097, 1000);
    free(misaligned);

    char detail[512] = "";
    unsigned char small[64];
    CHECK(!ckpt_raw_read(&f, bounce, (int64_t)FILE_BYTES - 8, 16, small, detail, sizeof detail));
    CHECK_HAS(detail, "the file ends early");
    CHECK(!ckpt_raw_read(&f, NULL, (int64_t)FILE_BYTES + 100, 16, small, detail, sizeof detail));
    CHECK_HAS(detail, "the file ends early");

    if (f.direct_fd >= 0) { /* the buffered path alone */
        close(f.direct_fd);
        f.direct_fd = -1;
        expect_all_reads(&f, bounce);
    }
    ckpt_raw_close(&f);
    CHECK(f.fd == -1 && f.direct_fd == -1);
    free(bounce);
    unlink(path);
    printf("test_checkpoint_raw: ok\n");
    return 0;
}
