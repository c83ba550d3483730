/* TensorBoard event files (tensorboard.h). */
#include "tensorboard/tensorboard.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/crc32c.h"
#include "core/errors.h"
#include "event.pb-c.h"

struct TensorBoardWriter {
    FILE *file;
    char path[4200];
};

uint32_t tensorboard_masked_crc(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

static double wall_time_now(void) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (double)now.tv_sec + 1e-9 * (double)now.tv_nsec;
}

static bool fail_io(TensorBoardWriter *w, const char *what, char *err, size_t err_size) {
    snprintf(err, err_size, "cannot %s TensorBoard file '%s' (--tensorboard-dir): %s", what,
             w->path, strerror(errno));
    return false;
}

static void put_le(unsigned char *out, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) out[i] = (unsigned char)(v >> (8 * i));
}

/* One TFRecord: length, its masked CRC, the bytes, their masked CRC. */
static bool write_record(TensorBoardWriter *w, const unsigned char *data, size_t n, char *err,
                         size_t err_size) {
    unsigned char head[12], tail[4];
    put_le(head, n, 8);
    put_le(head + 8, tensorboard_masked_crc(crc32c(0, head, 8)), 4);
    put_le(tail, tensorboard_masked_crc(crc32c(0, data, n)), 4);
    if (fwrite(head, 1, sizeof head, w->file) != sizeof head || fwrite(data, 1, n, w->file) != n ||
        fwrite(tail, 1, sizeof tail, w->file) != sizeof tail)
        return fail_io(w, "write", err, err_size);
    return true;
}

static bool write_event(TensorBoardWriter *w, const Gpt3dTensorboard__Event *e, char *err,
                        size_t err_size) {
    const size_t n = gpt3d_tensorboard__event__get_packed_size(e);
    unsigned char *buf = xmalloc(n + 1);
    gpt3d_tensorboard__event__pack(e, buf);
    const bool ok = write_record(w, buf, n, err, err_size);
    free(buf);
    return ok;
}

static bool make_dirs(const char *dir, char *err, size_t err_size) {
    char path[4096];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path) {
        snprintf(err, err_size, "--tensorboard-dir '%.200s...' is too long", dir);
        return false;
    }
    for (char *p = path + 1;; p++) {
        const char c = *p;
        if (c != '/' && c != '\0') continue;
        *p = '\0';
        if (mkdir(path, 0777) != 0 && errno != EEXIST) {
            snprintf(err, err_size, "--tensorboard-dir: cannot create '%s': %s", path, strerror(errno));
            return false;
        }
        *p = c;
        if (c == '\0') return true;
    }
}

TensorBoardWriter *tensorboard_writer_open(const char *dir, char *err, size_t err_size) {
    if (!make_dirs(dir, err, err_size)) return NULL;
    TensorBoardWriter *w = xcalloc(1, sizeof *w);
    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    snprintf(w->path, sizeof w->path, "%s/events.out.tfevents.%lld.%s.%d.0", dir,
             (long long)time(NULL), host, (int)getpid());
    w->file = fopen(w->path, "wb");
    if (!w->file) {
        fail_io(w, "create", err, err_size);
        free(w);
        return NULL;
    }
    Gpt3dTensorboard__Event e = GPT3D_TENSORBOARD__EVENT__INIT;
    e.has_wall_time = true;
    e.wall_time = wall_time_now();
    e.file_version = (char *)"brain.Event:2";
    if (!write_event(w, &e, err, err_size) || !tensorboard_writer_flush(w, err, err_size)) {
        fclose(w->file);
        free(w);
        return NULL;
    }
    return w;
}

bool tensorboard_add_scalar(TensorBoardWriter *w, const char *tag, double value, int64_t step,
                            char *err, size_t err_size) {
    Gpt3dTensorboard__SummaryValue v = GPT3D_TENSORBOARD__SUMMARY_VALUE__INIT;
    v.tag = (char *)tag;
    v.has_simple_value = true;
    v.simple_value = (float)value;
    Gpt3dTensorboard__SummaryValue *values[1] = {&v};
    Gpt3dTensorboard__Summary s = GPT3D_TENSORBOARD__SUMMARY__INIT;
    s.n_value = 1;
    s.value = values;
    Gpt3dTensorboard__Event e = GPT3D_TENSORBOARD__EVENT__INIT;
    e.has_wall_time = e.has_step = true;
    e.wall_time = wall_time_now();
    e.step = step;
    e.summary = &s;
    return write_event(w, &e, err, err_size);
}

bool tensorboard_writer_flush(TensorBoardWriter *w, char *err, size_t err_size) {
    if (fflush(w->file) != 0) return fail_io(w, "write", err, err_size);
    return true;
}

bool tensorboard_writer_close(TensorBoardWriter *w, char *err, size_t err_size) {
    if (!w) return true;
    bool ok = tensorboard_writer_flush(w, err, err_size);
    if (fclose(w->file) != 0 && ok) ok = fail_io(w, "close", err, err_size);
    free(w);
    return ok;
}

const char *tensorboard_writer_path(const TensorBoardWriter *w) { return w->path; }
