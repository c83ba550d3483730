/* dladdr and Dl_info are GNU extensions. */
#define _GNU_SOURCE
#include "backend/backend.h"

#include <stdio.h>
#include <string.h>
#ifdef GPT3D_HAVE_CUDA
#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>
#endif

#include "backend/cpu/cpu_backend.h"
#include "core/errors.h"

size_t dtype_size(DType t) {
    switch (t) {
    case DTYPE_F32: return 4;
    case DTYPE_BF16: return 2;
    case DTYPE_F16: return 2;
    }
    GPT3D_FAIL("unknown dtype %d", (int)t);
}

const char *dtype_name(DType t) {
    switch (t) {
    case DTYPE_F32: return "fp32";
    case DTYPE_BF16: return "bf16";
    case DTYPE_F16: return "fp16";
    }
    return "?";
}

#ifdef GPT3D_HAVE_CUDA
/* The CUDA backend lives in its own shared library, loaded on first use:
 * loading cuBLAS, cuBLASLt and NCCL costs most of a second, which CPU runs
 * and tools should not pay. dlopen reference-counts, so asking again is cheap.
 *
 * Where: $GPT3D_CUDA_LIBRARY when set (and then only there, so a user who
 * names a file never silently gets another one); else next to the program
 * or the shared object holding this code, or in ../lib from there, so a
 * build copied to another machine (scripts/gpu_bundle.sh) finds its own
 * copy; the build tree's path last. */
static const char CUDA_LIBRARY_NAME[] = "libgpt3d_cuda.so";

typedef struct {
    char paths[6][PATH_MAX];
    int count;
} LibraryCandidates;

static void add_path(LibraryCandidates *c, const char *path) {
    if (c->count == (int)(sizeof c->paths / sizeof *c->paths)) return;
    for (int i = 0; i < c->count; i++)
        if (!strcmp(c->paths[i], path)) return;
    snprintf(c->paths[c->count++], sizeof c->paths[0], "%s", path);
}

static void add_candidate(LibraryCandidates *c, const char *dir, const char *sub) {
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s%s%s%s", dir, strcmp(dir, "/") ? "/" : "", sub,
                 CUDA_LIBRARY_NAME) < (int)sizeof path)
        add_path(c, path);
}

/* The directory part of an absolute file name (resolving links first, so a
 * symlinked program looks beside the real one). */
static bool file_dir(const char *file, char *dir) {
    if (!file || file[0] != '/' || !realpath(file, dir)) return false;
    char *slash = strrchr(dir, '/');
    if (!slash) return false;
    slash[slash == dir ? 1 : 0] = '\0';
    return true;
}

/* DIR/libgpt3d_cuda.so, then DIR/../lib/libgpt3d_cuda.so (spelt without the
 * "..", so messages name the file plainly). */
static void add_dir_candidates(LibraryCandidates *c, const char *dir) {
    add_candidate(c, dir, "");
    if (!strcmp(dir, "/")) return;
    char parent[PATH_MAX];
    snprintf(parent, sizeof parent, "%s", dir);
    char *slash = strrchr(parent, '/');
    if (!slash) return;
    slash[slash == parent ? 1 : 0] = '\0';
    add_candidate(c, parent, "lib/");
}

static void candidate_dirs(LibraryCandidates *c) {
    char dir[PATH_MAX];
    Dl_info info;
    /* dladdr names the shared object this code was linked into (the program
     * itself for a static libgpt3d, often by a relative name: hence
     * /proc/self/exe as well). */
    if (dladdr((void *)candidate_dirs, &info) && file_dir(info.dli_fname, dir))
        add_dir_candidates(c, dir);
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        if (file_dir(exe, dir)) add_dir_candidates(c, dir);
    }
}

/* Opens the backend library. On success writes the path it came from into
 * `where`; on failure writes every path tried with dlerror()'s reason. */
static void *cuda_library_open(char *where, size_t where_size) {
    LibraryCandidates c = {.count = 0};
    const char *env = getenv("GPT3D_CUDA_LIBRARY");
    if (env && *env) {
        add_path(&c, env);
    } else {
        candidate_dirs(&c);
        add_path(&c, GPT3D_CUDA_BUILD_LIBRARY);
    }
    size_t used = 0;
    if (where && where_size) where[0] = '\0';
    for (int i = 0; i < c.count; i++) {
        void *lib = dlopen(c.paths[i], RTLD_NOW | RTLD_LOCAL);
        if (lib) {
            if (where && where_size) snprintf(where, where_size, "%s", c.paths[i]);
            return lib;
        }
        const char *why = dlerror();
        if (where && used < where_size)
            used += (size_t)snprintf(where + used, where_size - used, "%s%s (%s)", i ? "; " : "",
                                     c.paths[i], why ? why : "unknown dlopen error");
    }
    return NULL;
}

static void *cuda_symbol(const char *name, char *err, size_t err_size) {
    char where[2048];
    void *lib = cuda_library_open(where, sizeof where);
    if (!lib) {
        if (err)
            snprintf(err, err_size,
                     "--device cuda: cannot load the CUDA backend library; tried %s%s. Set "
                     "GPT3D_CUDA_LIBRARY to the path of %s (and LD_LIBRARY_PATH to the CUDA "
                     "libraries it needs), rebuild gpt3d, or use --device cpu",
                     getenv("GPT3D_CUDA_LIBRARY") && *getenv("GPT3D_CUDA_LIBRARY")
                         ? "GPT3D_CUDA_LIBRARY="
                         : "",
                     where, CUDA_LIBRARY_NAME);
        return NULL;
    }
    void *fn = dlsym(lib, name);
    GPT3D_CHECK(fn, "the CUDA backend library %s lacks %s", where, name);
    return fn;
}
#endif

Backend *backend_create(const char *device, int local_rank, char *err, size_t err_size) {
    if (!strcmp(device, "cpu")) return cpu_backend_create();
    if (!strcmp(device, "cuda")) {
#ifdef GPT3D_HAVE_CUDA
        Backend *(*create)(int, char *, size_t) =
            (Backend * (*)(int, char *, size_t)) cuda_symbol("cuda_backend_create", err, err_size);
        if (!create) return NULL;
        Backend *be = create(local_rank, err, err_size);
        /* Name the library that answered: with several builds around, the
         * first question about a CUDA failure is which one was loaded. */
        char where[PATH_MAX + 64];
        if (!be && err && backend_cuda_library(where, sizeof where)) {
            size_t n = strlen(err);
            snprintf(err + n, err_size - n, " (CUDA backend %s)", where);
        }
        return be;
#else
        (void)local_rank;
        snprintf(err, err_size,
                 "--device cuda: this build of gpt3d has no CUDA backend (nvcc was not found when "
                 "it was configured); install the CUDA toolkit and rebuild, or use --device cpu");
        return NULL;
#endif
    }
    snprintf(err, err_size, "--device %s: unknown device; use cpu or cuda", device);
    return NULL;
}

void backend_destroy(Backend *be) {
    if (be) be->ops->destroy(be);
}

bool backend_cuda_compiled(void) {
#ifdef GPT3D_HAVE_CUDA
    return true;
#else
    return false;
#endif
}

bool backend_cuda_complete(void) {
#ifdef GPT3D_HAVE_CUDA
    bool (*complete)(void) = (bool (*)(void))cuda_symbol("cuda_backend_complete", NULL, 0);
    return complete && complete();
#else
    return false;
#endif
}

void *backend_cuda_symbol(const char *name, char *err, size_t err_size) {
#ifdef GPT3D_HAVE_CUDA
    return cuda_symbol(name, err, err_size);
#else
    if (err && err_size)
        snprintf(err, err_size,
                 "this build of gpt3d has no CUDA backend (%s); rebuild with the CUDA toolkit",
                 name);
    return NULL;
#endif
}

bool backend_cuda_library(char *msg, size_t msg_size) {
#ifdef GPT3D_HAVE_CUDA
    return cuda_library_open(msg, msg_size) != NULL;
#else
    if (msg && msg_size) snprintf(msg, msg_size, "this build of gpt3d has no CUDA backend");
    return false;
#endif
}

#ifdef GPT3D_HAVE_CUDA
/* The driver API's own types, declared here so that this file compiles
 * without the CUDA headers; CUresult is an int enum and 0 is success. */
typedef int (*CuInitFn)(unsigned int flags);
typedef int (*CuDeviceGetCountFn)(int *count);
typedef int (*CuGetErrorFn)(int result, const char **text);
typedef int (*CuDriverGetVersionFn)(int *version);

static void describe_cu_error(void *cuda, int rc, char *buf, size_t size) {
    CuGetErrorFn name = (CuGetErrorFn)dlsym(cuda, "cuGetErrorName");
    CuGetErrorFn text = (CuGetErrorFn)dlsym(cuda, "cuGetErrorString");
    const char *n = NULL, *t = NULL;
    if (name) name(rc, &n);
    if (text) text(rc, &t);
    snprintf(buf, size, "%s: %s", n ? n : "error", t ? t : "no description");
}
#endif

int backend_cuda_probe(char *reason, size_t reason_size) {
    char scratch[512];
    if (!reason || !reason_size) {
        reason = scratch;
        reason_size = sizeof scratch;
    }
#ifdef GPT3D_HAVE_CUDA
    /* Asking the driver itself: sandboxes (gVisor) and containers can lack
     * /proc/driver/nvidia and /dev/nvidia0 while the GPU works. Only libcuda
     * is loaded, never cuBLAS or NCCL, so CPU runs stay cheap. The handle is
     * kept: the CUDA runtime loads the same library later, and unloading a
     * driver library that has run cuInit is not safe. */
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!cuda) {
        const char *why = dlerror();
        snprintf(reason, reason_size, "no NVIDIA driver: libcuda.so.1 cannot be loaded (%s)",
                 why ? why : "unknown dlopen error");
        return 0;
    }
    CuInitFn init = (CuInitFn)dlsym(cuda, "cuInit");
    CuDeviceGetCountFn count_fn = (CuDeviceGetCountFn)dlsym(cuda, "cuDeviceGetCount");
    if (!init || !count_fn) {
        snprintf(reason, reason_size, "libcuda.so.1 lacks cuInit or cuDeviceGetCount");
        return 0;
    }
    char what[256];
    int rc = init(0);
    if (rc != 0) {
        describe_cu_error(cuda, rc, what, sizeof what);
        snprintf(reason, reason_size, "the NVIDIA driver is there but cuInit failed (%s)", what);
        return 0;
    }
    int count = 0;
    rc = count_fn(&count);
    if (rc != 0) {
        describe_cu_error(cuda, rc, what, sizeof what);
        snprintf(reason, reason_size, "cuDeviceGetCount failed (%s)", what);
        return 0;
    }
    int version = 0;
    CuDriverGetVersionFn ver = (CuDriverGetVersionFn)dlsym(cuda, "cuDriverGetVersion");
    if (ver) ver(&version);
    snprintf(reason, reason_size, "%d CUDA device(s) visible (driver API %d.%d)%s", count,
             version / 1000, version % 1000 / 10, count ? "" : "; check CUDA_VISIBLE_DEVICES");
    return count;
#else
    snprintf(reason, reason_size, "this build of gpt3d has no CUDA backend");
    return 0;
#endif
}

int backend_cuda_device_count(void) { return backend_cuda_probe(NULL, 0); }
