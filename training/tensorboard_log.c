/* Megatron's TensorBoard scalars (training_log and evaluate_and_print_results
 * tags), written by rank 0. A write that fails (a full disk) is reported
 * once and ends the TensorBoard output, not the training run. */
#include <stdio.h>
#include <string.h>

#include "tensorboard/tensorboard.h"
#include "training/trainer.h"

bool trainer_open_tensorboard(Trainer *t, char *err, size_t err_size) {
    if (!t->args->tensorboard_dir || t->ps->rank != 0) return true;
    t->tensorboard = tensorboard_writer_open(t->args->tensorboard_dir, err, err_size);
    if (t->tensorboard) printf("tensorboard: writing %s\n", tensorboard_writer_path(t->tensorboard));
    return t->tensorboard != NULL;
}

static void stop_on_failure(Trainer *t, const char *err) {
    fprintf(stderr, "warning: %s; TensorBoard output stops here, training goes on\n", err);
    tensorboard_writer_close(t->tensorboard, NULL, 0);
    t->tensorboard = NULL;
}

/* tag at the iteration and, as "<tag> vs samples", at the samples consumed. */
static bool both(Trainer *t, const char *tag, double value, char *err, size_t err_size) {
    char vs[128];
    snprintf(vs, sizeof vs, "%s vs samples", tag);
    return tensorboard_add_scalar(t->tensorboard, tag, value, t->iteration, err, err_size) &&
           tensorboard_add_scalar(t->tensorboard, vs, value, t->consumed_samples, err, err_size);
}

void trainer_tensorboard_iteration(Trainer *t, const StepResult *r, bool log_line,
                                   bool first_line, double seconds_per_iteration,
                                   double tflops_per_gpu) {
    const TrainArgs *a = t->args;
    if (!t->tensorboard) return;
    char err[4400] = "";
    bool ok = true;
    if (t->iteration % a->tensorboard_log_interval == 0) {
        ok = both(t, "learning-rate", r->lr, err, sizeof err) &&
             both(t, "batch-size", r->global_batch_size, err, sizeof err) &&
             both(t, "lm loss", r->loss, err, sizeof err) &&
             (a->no_log_loss_scale_to_tensorboard ||
              both(t, "loss-scale", t->scaler.scale, err, sizeof err)) &&
             (!a->log_world_size_to_tensorboard ||
              both(t, "world-size", t->ps->world_size, err, sizeof err)) &&
             (r->skipped || both(t, "grad-norm", r->grad_norm, err, sizeof err)) &&
             (!a->log_num_zeros_in_grad || both(t, "num-zeros", (double)r->num_zeros, err, sizeof err)) &&
             (!a->log_params_norm || both(t, "params-norm", r->params_norm, err, sizeof err)) &&
             (t->cfg.num_experts == 0 ||
              (both(t, "load_balancing_loss", r->moe_aux_loss, err, sizeof err) &&
               both(t, "z_loss", r->moe_z_loss, err, sizeof err)));
    }
    /* The first line's time includes the warm-up, so Megatron keeps it out
     * of the iteration-time curve; throughput is a timer too. */
    const bool timers = a->log_timers_to_tensorboard;
    if (ok && log_line) {
        ok = (!timers || first_line ||
              tensorboard_add_scalar(t->tensorboard, "iteration-time", seconds_per_iteration,
                                     t->iteration, err, sizeof err)) &&
             (!timers || !a->log_throughput ||
              tensorboard_add_scalar(t->tensorboard, "throughput", tflops_per_gpu, t->iteration,
                                     err, sizeof err)) &&
             tensorboard_writer_flush(t->tensorboard, err, sizeof err);
    }
    if (!ok) stop_on_failure(t, err);
}

void trainer_tensorboard_validation(Trainer *t, const char *suffix, double loss) {
    if (!t->tensorboard) return;
    char err[4400] = "", tag[128];
    snprintf(tag, sizeof tag, "lm loss validation%s", suffix);
    bool ok = both(t, tag, loss, err, sizeof err);
    if (ok && t->args->log_validation_ppl_to_tensorboard) {
        snprintf(tag, sizeof tag, "lm loss validation%s ppl", suffix);
        ok = both(t, tag, trainer_perplexity(loss), err, sizeof err);
    }
    if (ok) ok = tensorboard_writer_flush(t->tensorboard, err, sizeof err);
    if (!ok) stop_on_failure(t, err);
}

void trainer_close_tensorboard(Trainer *t) {
    char err[4400];
    if (t->tensorboard && !tensorboard_writer_close(t->tensorboard, err, sizeof err))
        fprintf(stderr, "warning: %s\n", err);
    t->tensorboard = NULL;
}
