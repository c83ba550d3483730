/* Glue between the model/optimizer state of a rank and checkpoint/: which
 * canonical intervals a rank writes and reads, and the run metadata. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoint/checkpoint.h"
#include "core/errors.h"
#include "core/host_memory.h"
#include "core/timer.h"
#include "training/async_save.h"
#include "training/trainer.h"

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(err, err_size, __VA_ARGS__);                                                      \
        return false;                                                                              \
    } while (0)

/* Each canonical element is written once, by the rank whose copy the
 * gradient norm counts (param_table.c owns that rule: TP-replicated
 * parameters on TP rank 0, the tied word embedding on the first stage, a
 * routed expert's shard wherever it lives). */
static bool rank_writes_param(const ParamInfo *p) { return p->counts_in_grad_norm; }

/* A dynamic scaler goes on from the saved one's state, as Megatron loads
 * its grad scaler with the optimizer; any other run starts from its flags. */
static void restore_loss_scaler(Trainer *t, const CheckpointMeta *m, bool with_moments) {
    if (!with_moments || !t->loss_scaling || !t->scaler.dynamic ||
        m->loss_scaler != CKPT_LOSS_SCALER_DYNAMIC)
        return;
    t->scaler.scale = m->loss_scale;
    t->scaler.growth_tracker = m->loss_scale_growth_tracker;
    t->scaler.hysteresis_tracker = m->loss_scale_hysteresis_tracker;
}

static void fill_meta(const Trainer *t, CheckpointMeta *m) {
    memset(m, 0, sizeof *m);
    const TransformerConfig *c = &t->cfg;
    m->iteration = t->iteration;
    m->consumed_train_samples = t->consumed_samples;
    m->optimizer_step = distrib_optimizer_step_count(t->opt);
    m->scheduler_num_steps = t->scheduler_samples;
    m->loss_scaler = !t->loss_scaling    ? CKPT_LOSS_SCALER_NONE
                     : t->scaler.dynamic ? CKPT_LOSS_SCALER_DYNAMIC
                                         : CKPT_LOSS_SCALER_CONSTANT;
    m->loss_scale = t->scaler.scale;
    m->loss_scale_growth_tracker = t->scaler.growth_tracker;
    m->loss_scale_hysteresis_tracker = t->scaler.hysteresis_tracker;
    m->model = *c;
    m->tensor_model_parallel_size = t->ps->tp_size;
    m->pipeline_model_parallel_size = t->ps->pp_size;
    m->data_parallel_size = t->ps->dp_size;
    m->context_parallel_size = t->ps->cp_size;
    m->world_size = t->ps->world_size;
    m->has_optimizer_state = !t->args->no_save_optim;
    snprintf(m->data_description, sizeof m->data_description, "%s",
             blended_dataset_description(t->train_ds));
    snprintf(m->tokenizer_type, sizeof m->tokenizer_type, "%s", t->tokenizer_type);
}

/* The optimizer shard's three fp32 arrays (master, exp_avg, exp_avg_sq),
 * indexed by state offset: `host` (3 x shard) when the backend's memory is
 * not the host's, else the device arrays themselves. */
static void interval_state(Trainer *t, float *host, const ShardInterval *iv, float *out[3]) {
    if (host) {
        const size_t len = distrib_optimizer_shard_numel(t->opt);
        for (int k = 0; k < 3; k++) out[k] = host + (size_t)k * len + iv->state_offset;
        return;
    }
    out[0] = distrib_optimizer_master_at(t->opt, iv);
    out[1] = distrib_optimizer_exp_avg(t->opt) + iv->state_offset;
    out[2] = distrib_optimizer_exp_avg_sq(t->opt) + iv->state_offset;
}

/* The intervals this rank writes, pointing into the state arrays (host
 * copies when `host` is set); *bytes is their payload. */
static CheckpointInterval *shard_intervals(Trainer *t, float *host, int *count, double *bytes) {
    const ParamTable *pt = trainer_param_table(t);
    int total;
    const ShardInterval *sh = distrib_optimizer_intervals(t->opt, &total);
    CheckpointInterval *iv = xcalloc((size_t)total + 1, sizeof *iv);
    int n = 0;
    *bytes = 0;
    for (int i = 0; i < total; i++) {
        const ParamInfo *p = &pt->params[sh[i].param];
        if (!rank_writes_param(p)) continue;
        float *state[3];
        interval_state(t, host, &sh[i], state);
        CheckpointInterval *c = &iv[n++];
        c->name = p->name;
        c->ndim = p->ndim;
        memcpy(c->shape, p->shape, sizeof c->shape);
        c->begin = sh[i].canonical_begin;
        c->end = sh[i].canonical_end;
        c->weight = state[0];
        const bool moments = !t->args->no_save_optim;
        c->exp_avg = moments ? state[1] : NULL;
        c->exp_avg_sq = moments ? state[2] : NULL;
        *bytes += (moments ? 3.0 : 1.0) * sizeof(float) * (double)(c->end - c->begin);
    }
    *count = n;
    return iv;
}

/* Copies the shard's state into `host` (3 x shard, by state offset). The
 * master weights of an fp32 backend are the parameters themselves, so they
 * are copied interval by interval. */
static void shard_to_host(Trainer *t, float *host) {
    Backend *be = t->be;
    DistributedOptimizer *o = t->opt;
    const size_t len = distrib_optimizer_shard_numel(o);
    be->ops->copy_to_host(be, host + len, distrib_optimizer_exp_avg(o), len * sizeof(float));
    be->ops->copy_to_host(be, host + 2 * len, distrib_optimizer_exp_avg_sq(o), len * sizeof(float));
    if (!distrib_optimizer_master_is_params(o)) {
        be->ops->copy_to_host(be, host, distrib_optimizer_master(o), len * sizeof(float));
        return;
    }
    int total;
    const ShardInterval *sh = distrib_optimizer_intervals(o, &total);
    for (int i = 0; i < total; i++)
        be->ops->copy_to_host(be, host + sh[i].state_offset, distrib_optimizer_master_at(o, &sh[i]),
                              (size_t)(sh[i].canonical_end - sh[i].canonical_begin) * sizeof(float));
}

/* The host copy of the state a load fills, back into the optimizer. */
static void shard_from_host(Trainer *t, const float *host) {
    Backend *be = t->be;
    DistributedOptimizer *o = t->opt;
    const size_t len = distrib_optimizer_shard_numel(o);
    GPT3D_CHECK(!distrib_optimizer_master_is_params(o),
                "a backend whose memory is not the host's keeps a separate master copy");
    be->ops->copy_to_device(be, distrib_optimizer_master(o), host, len * sizeof(float));
    be->ops->copy_to_device(be, distrib_optimizer_exp_avg(o), host + len, len * sizeof(float));
    be->ops->copy_to_device(be, distrib_optimizer_exp_avg_sq(o), host + 2 * len,
                            len * sizeof(float));
}

static bool write_rank_file(Trainer *t, double *bytes, char *err, size_t err_size) {
    const size_t len = distrib_optimizer_shard_numel(t->opt);
    const size_t host_bytes = t->be->host_visible ? 0 : 3 * len * sizeof(float) + 1;
    float *host = host_bytes ? host_alloc_zeroed(host_bytes) : NULL;
    GPT3D_CHECK(!host_bytes || host, "out of host memory for the checkpoint copy (%zu bytes)",
                host_bytes);
    if (host) shard_to_host(t, host);
    int n;
    CheckpointInterval *iv = shard_intervals(t, host, &n, bytes);
    bool ok = checkpoint_write_rank(t->args->save, t->iteration, t->ps->rank, iv, n, err, err_size);
    free(iv);
    host_free(host, host_bytes);
    return ok;
}

/* Test hook for crash safety: GPT3D_TEST_KILL_IN_SAVE="RANK:POINT" makes
 * that world rank SIGKILL itself at POINT of the next save (points:
 * after_begin, partial_rank_file, after_rank_file, before_publish,
 * after_rename, after_publish). partial_rank_file first leaves a truncated
 * rank file in the temporary directory, as a crash in the middle of the HDF5
 * write would; after_rename is reached inside checkpoint_publish (rank 0
 * only), between the directory rename and the tracker write. */
static void test_crash_point(const Trainer *t, const char *point) {
    const char *spec = getenv("GPT3D_TEST_KILL_IN_SAVE");
    if (!spec) return;
    int rank = -1;
    char where[64] = "";
    if (sscanf(spec, "%d:%63s", &rank, where) != 2 || rank != t->ps->rank || strcmp(where, point))
        return;
    if (!strcmp(point, "partial_rank_file")) {
        char dir[4096], path[4200];
        checkpoint_iter_dir(dir, sizeof dir, t->args->save, t->iteration);
        snprintf(path, sizeof path, "%s.tmp/rank_%05d.h5", dir, t->ps->rank);
        FILE *f = fopen(path, "wb");
        if (f) {
            fputs("\x89HDF\r\n\x1a\n truncated by a simulated crash", f);
            fclose(f);
        }
    }
    fprintf(stderr, "test hook: rank %d kills itself at %s of the save\n", t->ps->rank, point);
    fflush(stderr);
    raise(SIGKILL);
}

/* Test hook for a full disk: GPT3D_TEST_FAIL_IN_SAVE=POINT makes that step of
 * rank 0's publish fail with ENOSPC (points: tracker_write, the write of
 * latest_checkpointed_iteration.txt after the directory rename). */
static int test_fault_point(const char *point) {
    const char *spec = getenv("GPT3D_TEST_FAIL_IN_SAVE");
    return spec && !strcmp(spec, point) ? ENOSPC : 0;
}

static int publish_hook(const char *point, void *ctx) {
    test_crash_point(ctx, point);
    return test_fault_point(point);
}

/* After every rank's file is written (ok: this rank's result): agree, then
 * rank 0 writes the metadata and publishes. */
/* Megatron's position of the printing rank in its save and load messages,
 * "[ t 1/2, p 1/4 ]" (1-based ranks of the tensor and pipeline groups). */
static void group_position(const Trainer *t, char *out, size_t size) {
    snprintf(out, size, "[ t %d/%d, p %d/%d ]", t->ps->tp_rank + 1, t->ps->tp_size,
             t->ps->pp_rank + 1, t->ps->pp_size);
}

static bool publish_save(Trainer *t, const CheckpointMeta *meta, bool ok, const char *how,
                         char *err, size_t err_size) {
    const bool root = t->ps->rank == 0;
    test_crash_point(t, "after_rank_file");
    if (!parallel_state_agree(t->ps->world, ok, t->ps->timeout_s, err, err_size)) return false;
    test_crash_point(t, "before_publish");
    if (root)
        ok = checkpoint_write_meta(t->args->save, meta, err, err_size) &&
             checkpoint_publish_with_hook(t->args->save, meta->iteration, publish_hook, t, err,
                                          err_size);
    test_crash_point(t, "after_publish");
    if (!parallel_state_agree(t->ps->world, ok, t->ps->timeout_s, err, err_size)) return false;
    checkpoint_iter_dir(t->last_checkpoint, sizeof t->last_checkpoint, t->args->save,
                        meta->iteration);
    t->last_checkpoint_root = t->args->save;
    t->last_checkpoint_iteration = meta->iteration;
    if (root) {
        char stamp[40], position[64];
        timer_wall_clock_string(stamp, sizeof stamp);
        group_position(t, position, sizeof position);
        printf("  [%s] successfully saved checkpoint from iteration %7lld to %s %s: %s (%s)\n",
               stamp, (long long)meta->iteration, t->args->save, position, t->last_checkpoint, how);
        fflush(stdout);
    }
    return true;
}

/* --async-save: snapshot the shard (the only stall) and hand it to the
 * background writer; trainer_checkpoint_poll publishes it later. */
static bool start_async_save(Trainer *t, char *err, size_t err_size) {
    if (!t->async && !(t->async = async_writer_create(err, err_size))) return false;
    const size_t len = distrib_optimizer_shard_numel(t->opt);
    const double start = timer_now_s();
    float *snapshot = async_writer_buffer(t->async, 3 * len + 1);
    shard_to_host(t, snapshot);
    CheckpointMeta meta;
    fill_meta(t, &meta);
    int n;
    double bytes;
    CheckpointInterval *iv = shard_intervals(t, snapshot, &n, &bytes);
    async_writer_start(t->async, t->args->save, t->ps->rank, iv, n, &meta);
    if (t->ps->rank == 0) {
        printf("  shard of iteration %lld copied in %.3f s; its files are written in the "
               "background\n",
               (long long)t->iteration, timer_now_s() - start);
        fflush(stdout);
    }
    return true;
}

bool trainer_checkpoint_poll(Trainer *t, bool wait, char *err, size_t err_size) {
    if (!async_writer_pending(t->async)) return true;
    int done = wait || async_writer_done(t->async);
    /* One small all-reduce per iteration while a save is pending: publish
     * only when every rank's write has finished. */
    comm_host_all_reduce(&t->comm, GROUP_WORLD, &done, 1, HOST_I32, REDUCE_MIN);
    if (!done) return true;
    CheckpointMeta meta;
    double seconds = 0;
    bool ok = async_writer_join(t->async, &meta, &seconds, err, err_size);
    char how[128];
    snprintf(how, sizeof how, "written in the background in %.2f s by rank 0", seconds);
    return publish_save(t, &meta, ok, how, err, err_size);
}

bool trainer_save_checkpoint(Trainer *t, char *err, size_t err_size) {
    /* A pending asynchronous save is published first, so saves stay in order. */
    if (!trainer_checkpoint_poll(t, true, err, err_size)) return false;
    /* On an fp32 backend the master weights saved are the parameter buffer,
     * which an all-gather in flight may still be writing. */
    distrib_optimizer_finish_param_gather(t->opt);
    const bool root = t->ps->rank == 0;
    bool ok = !root || checkpoint_begin_save(t->args->save, t->iteration, err, err_size);
    if (!parallel_state_agree(t->ps->world, ok, t->ps->timeout_s, err, err_size)) return false;
    if (root) {
        char stamp[40];
        timer_wall_clock_string(stamp, sizeof stamp);
        printf("[%s] saving checkpoint at iteration %7lld to %s in %s format\n", stamp,
               (long long)t->iteration, t->args->save, t->args->ckpt_format);
        fflush(stdout);
    }
    test_crash_point(t, "after_begin");
    test_crash_point(t, "partial_rank_file");
    if (t->args->async_save) return start_async_save(t, err, err_size);
    const double start = timer_now_s();
    double bytes = 0;
    ok = write_rank_file(t, &bytes, err, err_size);
    const double seconds = timer_now_s() - start;
    CheckpointMeta meta;
    fill_meta(t, &meta);
    char how[128];
    snprintf(how, sizeof how, "rank 0 wrote %.1f MB in %.2f s, %.0f MB/s", bytes / 1e6, seconds,
             bytes / 1e6 / (seconds > 0 ? seconds : 1e-9));
    return publish_save(t, &meta, ok, how, err, err_size);
}

/* A checkpoint of another model shape is refused with the first difference. */
static bool check_shape(const CheckpointMeta *m, const TransformerConfig *c, const char *where,
                        char *err, size_t err_size) {
    char saved[TRANSFORMER_FIELD_TEXT_MAX], ours[TRANSFORMER_FIELD_TEXT_MAX];
    const char *what = transformer_config_difference(&m->model, c, saved, ours, sizeof saved);
    if (what)
        FAIL("%s was saved with %s %s but this run has %s; use the checkpoint's model shape "
             "or start without --load",
             where, what, saved, ours);
    return true;
}

/* Every parameter of this model must be in the checkpoint with its shape. */
static bool check_params(Trainer *t, CheckpointReader *r, const char *where, char *err,
                         size_t err_size) {
    const ParamTable *pt = trainer_param_table(t);
    for (int i = 0; i < pt->count; i++) {
        const ParamInfo *p = &pt->params[i];
        int ndim;
        int64_t shape[CHECKPOINT_MAX_DIMS];
        if (!checkpoint_param_shape(r, p->name, &ndim, shape))
            FAIL("%s has no parameter %s; it is not a checkpoint of this model", where, p->name);
        if (ndim != p->ndim || memcmp(shape, p->shape, (size_t)ndim * sizeof *shape))
            FAIL("%s: parameter %s has another shape than this model's", where, p->name);
    }
    return true;
}

static bool read_state(Trainer *t, CheckpointReader *r, bool with_moments, const char *where,
                       double *bytes, char *err, size_t err_size) {
    Backend *be = t->be;
    const ParamTable *pt = trainer_param_table(t);
    if (!check_params(t, r, where, err, err_size)) return false;
    const size_t len = distrib_optimizer_shard_numel(t->opt);
    /* Where the backend's memory is the host's, the reads land in the
     * optimizer's own buffers: no staging array, no copy (and no fresh
     * memory to fault in, which costs seconds per GB on some VMs). */
    const size_t host_bytes = be->host_visible ? 0 : (3 * len + 1) * sizeof(float);
    float *host = host_bytes ? host_alloc_zeroed(host_bytes) : NULL;
    GPT3D_CHECK(!host_bytes || host, "out of host memory reading the checkpoint (%zu bytes)",
                host_bytes);
    int total;
    const ShardInterval *sh = distrib_optimizer_intervals(t->opt, &total);
    bool ok = true;
    for (int i = 0; i < total && ok; i++) {
        const char *name = pt->params[sh[i].param].name;
        const int64_t begin = sh[i].canonical_begin, end = sh[i].canonical_end;
        float *dst[3];
        interval_state(t, host, &sh[i], dst);
        ok = checkpoint_read(r, name, CKPT_WEIGHT, begin, end, dst[0], err, err_size);
        if (ok && with_moments)
            ok = checkpoint_read(r, name, CKPT_EXP_AVG, begin, end, dst[1], err, err_size) &&
                 checkpoint_read(r, name, CKPT_EXP_AVG_SQ, begin, end, dst[2], err, err_size);
        if (ok) *bytes += (with_moments ? 3.0 : 1.0) * sizeof(float) * (double)(end - begin);
    }
    if (ok && host) shard_from_host(t, host);
    host_free(host, host_bytes);
    return ok;
}

static bool load_checkpoint(Trainer *t, bool *loaded, char *note, size_t note_size, char *err,
                            size_t err_size) {
    const TrainArgs *a = t->args;
    *loaded = false;
    const int64_t iteration = t->resume_iteration;
    err[0] = '\0';
    if (iteration < 0) {
        if (a->finetune || a->no_load_optim)
            FAIL("--load %s holds no checkpoint (no iter_* directory), but "
                 "--%s needs one",
                 a->load, a->finetune ? "finetune" : "no-load-optim");
        snprintf(note, note_size, "no checkpoint in --load %s yet: starting from the initial weights",
                 a->load);
        return true;
    }
    /* A release checkpoint starts a run, as --finetune does (Megatron). */
    const bool release = t->resume_release, restart = a->finetune || release;
    CheckpointReader *r = release ? checkpoint_open_release(a->load, err, err_size)
                                  : checkpoint_open(a->load, iteration, err, err_size);
    if (!r) return false;
    char where[sizeof t->last_checkpoint];
    if (release) snprintf(where, sizeof where, "%s/%s", a->load, CHECKPOINT_RELEASE_DIR);
    else checkpoint_iter_dir(where, sizeof where, a->load, iteration);
    const CheckpointMeta *m = checkpoint_meta(r);
    const bool with_moments = !restart && !a->no_load_optim;
    bool ok = check_shape(m, &t->cfg, where, err, err_size);
    if (ok && with_moments && !m->has_optimizer_state)
        ok = (snprintf(err, err_size,
                       "%s holds no optimizer state; add --no-load-optim or --finetune", where),
              false);
    const double start = timer_now_s();
    double bytes = 0;
    if (ok) ok = read_state(t, r, with_moments, where, &bytes, err, err_size);
    const double seconds = timer_now_s() - start;
    if (ok) {
        t->iteration = restart ? 0 : m->iteration;
        t->consumed_samples = restart ? 0 : m->consumed_train_samples;
        t->scheduler_samples = restart ? 0 : m->scheduler_num_steps;
        distrib_optimizer_set_step_count(t->opt, with_moments ? m->optimizer_step : 0);
        restore_loss_scaler(t, m, with_moments);
        snprintf(t->last_checkpoint, sizeof t->last_checkpoint, "%s", where);
        t->last_checkpoint_root = a->load;
        t->last_checkpoint_iteration = iteration;
        char position[64];
        group_position(t, position, sizeof position);
        snprintf(note, note_size,
                 "  successfully loaded checkpoint from %s %s at iteration %lld (%s, iteration "
                 "%lld, saved at TP %d PP %d DP %d)%s",
                 a->load, position, (long long)t->iteration, where, (long long)m->iteration,
                 m->tensor_model_parallel_size,
                 m->pipeline_model_parallel_size, m->data_parallel_size,
                 release ? " (a release checkpoint: weights only, training from iteration 0)"
                 : a->finetune ? " for finetuning from iteration 0"
                             : (a->no_load_optim ? " without optimizer state" : ""));
        const size_t n = strlen(note);
        snprintf(note + n, note_size - n, "\ncheckpoint read: rank %d read %.1f MB in %.2f s, %.0f MB/s",
                 t->ps->rank, bytes / 1e6, seconds, bytes / 1e6 / (seconds > 0 ? seconds : 1e-9));
        *loaded = true;
    }
    checkpoint_close(r);
    return ok;
}

/* Every rank loads its own shard, so every rank agrees before anything is
 * said: rank 0 reports "loaded" only when all ranks did, and otherwise the
 * failing rank's own message.
 * Test hook: with GPT3D_TEST_SAVE_AFTER_LOAD set (to anything) and --save
 * given, a run saves the state it loaded before its first iteration, so a
 * test can inspect exactly what a load (resharded, --no-load-optim,
 * --finetune) produced. The trainer has no other way to save without
 * training: --train-iters equal to the loaded iteration saves nothing (that
 * state is already on disk), and a --finetune run always trains. */
bool trainer_load_checkpoint(Trainer *t, bool *loaded, char *err, size_t err_size) {
    char note[2 * sizeof t->last_checkpoint + 256] = "";
    if (t->ps->rank == 0 && t->resume_iteration >= 0) {
        if (t->resume_release) printf(" loading release checkpoint from %s\n", t->args->load);
        else
            printf(" loading checkpoint from %s at iteration %lld\n", t->args->load,
                   (long long)t->resume_iteration);
        fflush(stdout);
    }
    bool ok = load_checkpoint(t, loaded, note, sizeof note, err, err_size);
    if (!parallel_state_agree(t->ps->world, ok, t->ps->timeout_s, err, err_size)) return false;
    if (t->ps->rank == 0 && note[0]) {
        printf("%s\n", note);
        fflush(stdout);
    }
    if (!getenv("GPT3D_TEST_SAVE_AFTER_LOAD") || !t->args->save || !*loaded) return true;
    if (t->ps->rank == 0) {
        printf("test hook: saving the loaded state (GPT3D_TEST_SAVE_AFTER_LOAD)\n");
        fflush(stdout);
    }
    return trainer_save_checkpoint(t, err, err_size);
}

static bool same_directory(const char *a, const char *b) {
    struct stat x, y;
    return a && b && stat(a, &x) == 0 && stat(b, &y) == 0 && x.st_dev == y.st_dev &&
           x.st_ino == y.st_ino;
}

/* Rank 0's part of trainer_prepare_checkpoints; *resume is -1 when --load
 * holds no checkpoint (or there is no --load). */
static bool prepare_on_root(Trainer *t, int64_t *resume, char *err, size_t err_size) {
    const TrainArgs *a = t->args;
    char note[2048];
    if (a->save) {
        t->save_lock = checkpoint_lock_save_dir(a->save, note, sizeof note, err, err_size);
        if (!t->save_lock) return false;
        if (note[0]) printf("note: %s\n", note);
    }
    if (a->load && checkpoint_tracker_is_release(a->load)) {
        t->resume_release = true;
        *resume = 0;
    } else if (a->load && a->ckpt_step_given) {
        char why[1024];
        if (!checkpoint_is_complete(a->load, a->ckpt_step, why, sizeof why))
            FAIL("--ckpt-step %lld: the checkpoint of that iteration in --load %s does not load "
                 "(%s)",
                 (long long)a->ckpt_step, a->load, why);
        *resume = a->ckpt_step;
    } else if (a->load && checkpoint_find_resume(a->load, resume, note, sizeof note, err, err_size)) {
        if (note[0]) printf("note: %s\n", note);
    } else if (err[0]) {
        return false;
    }
    fflush(stdout);
    if (!a->save) return true;
    /* A --finetune run counts from 0 whatever it loads. Re-saving the loaded
     * iteration is allowed only over that very checkpoint: it writes the
     * state just read from it. */
    const bool resumes = *resume >= 0 && !a->finetune && !t->resume_release;
    return checkpoint_check_save_target(a->save, resumes ? *resume : 0,
                                        resumes && same_directory(a->save, a->load), err,
                                        err_size);
}

bool trainer_prepare_checkpoints(Trainer *t, char *err, size_t err_size) {
    int64_t resume = -1;
    err[0] = '\0';
    const bool ok = t->ps->rank != 0 || prepare_on_root(t, &resume, err, err_size);
    if (!parallel_state_agree(t->ps->world, ok, t->ps->timeout_s, err, err_size)) return false;
    /* Only rank 0 looked; the others hold -1, so the maximum is its answer. */
    int64_t values[2] = {resume, t->resume_release ? 1 : 0};
    comm_host_all_reduce(&t->comm, GROUP_WORLD, values, 2, HOST_I64, REDUCE_MAX);
    t->resume_iteration = values[0];
    t->resume_release = values[1] != 0;
    return true;
}

void trainer_release_save(Trainer *t) {
    checkpoint_unlock(t->save_lock);
    t->save_lock = NULL;
}
