/* Megatron's evaluate_and_print_results: the validation block printed and
 * written to TensorBoard, and the test split evaluated once after training
 * (pretrain()'s do_test) or, with --skip-train, instead of it. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "training/trainer.h"

double trainer_perplexity(double loss) { return exp(loss < 20.0 ? loss : 20.0); }

bool trainer_open_test_split(Trainer *t, GPTDataConfig *dc, char *err, size_t err_size) {
    const TrainArgs *a = t->args;
    if (a->eval_iters == 0) return true;
    /* Per-split paths without one for the test split: Megatron has none. */
    if (a->test_data_path.count == 0 && (a->train_data_path.count > 0 || a->valid_data_path.count > 0))
        return true;
    bool too_short = false;
    dc->too_short = &too_short;
    t->test_ds = blended_dataset_create(dc, SPLIT_TEST, err, err_size);
    dc->too_short = NULL;
    if (t->test_ds) return true;
    /* --split's default test share (1 in 1000) holds no sample of a small
     * corpus; a run that trains and validates fine should not stop for it. */
    if (too_short && a->test_data_path.count == 0) {
        if (t->ps->rank == 0) printf("note: no test split to evaluate after training (%s)\n", err);
        err[0] = '\0';
        return true;
    }
    const size_t n = strlen(err);
    snprintf(err + n, err_size - n,
             " (test split, evaluated after training; pass --eval-iters 0 to train without "
             "evaluation)");
    return false;
}

/* The block between rules of its length + 1; Megatron calls the test set's
 * loss a validation loss too ("validation loss at iteration N on test set"). */
static void print_block(const Trainer *t, const char *where, double loss) {
    char line[512];
    snprintf(line, sizeof line, " validation loss at iteration %lld%s | lm loss value: %.6E | lm loss PPL: %.6E | ",
             (long long)t->iteration, where, loss, trainer_perplexity(loss));
    char rule[sizeof line + 1];
    const size_t len = strlen(line) + 1;
    memset(rule, '-', len);
    rule[len] = '\0';
    printf("%s\n%s\n%s\n", rule, line, rule);
    fflush(stdout);
}

bool trainer_evaluate_and_print(Trainer *t, BlendedDataset *ds, const char *where, double *loss) {
    *loss = evaluate(t, ds);
    if (!trainer_data_reads_ok(t)) return false;
    if (t->ps->rank == 0) {
        print_block(t, where, *loss);
        /* Megatron's tag for both splits: the test loss is a second
         * "lm loss validation" point at the last iteration. */
        trainer_tensorboard_validation(t, "", *loss);
    }
    return true;
}

int trainer_evaluate_only(Trainer *t) {
    if (t->ps->rank == 0) {
        printf("skipping training (--skip-train is on) ...\n");
        fflush(stdout);
    }
    double loss;
    if (t->valid_ds && !trainer_evaluate_and_print(t, t->valid_ds, " on validation set", &loss))
        return 2;
    if (t->test_ds && !trainer_evaluate_and_print(t, t->test_ds, " on test set", &loss)) return 2;
    return 0;
}
