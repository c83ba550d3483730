/* pretrain_gpt: flags -> topology -> model -> train loop -> checkpoints. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "parallel_state/parallel_state.h"
#include "training/args.h"
#include "training/trainer.h"

static void abort_job(int code) {
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    int size = 1;
    if (initialized && !finalized) MPI_Comm_size(MPI_COMM_WORLD, &size);
    /* One rank alone can finalize cleanly; a job must abort so no sibling
     * waits forever in a collective. */
    if (initialized && !finalized && size > 1) MPI_Abort(MPI_COMM_WORLD, code);
    if (initialized && !finalized) MPI_Finalize();
}

/* Stops every rank with one message (printed by the lowest failing rank). */
static int stop_all(const char *err, bool ok, int code) {
    int rank = 0, first_bad = 0, mine;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    mine = ok ? 1 << 30 : rank;
    MPI_Allreduce(&mine, &first_bad, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!ok && rank == first_bad) {
        fflush(stdout);
        fprintf(stderr, "error: %s\n", err);
    }
    MPI_Finalize();
    return code;
}

int main(int argc, char **argv) {
    /* FUNNELED: --async-save and initialisation run threads, but only this
     * one calls MPI. */
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    gpt3d_set_exit_hook(abort_job);
    int world_size = 1, rank = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);

    TrainArgs args;
    FlagParser parser;
    bool wants_help = false;
    char err[2048] = "";
    bool ok = args_parse(&args, &parser, argc, argv, world_size, &wants_help, err, sizeof err);
    if (wants_help) {
        if (rank == 0) args_print_help(stdout);
        args_free(&args, &parser);
        MPI_Finalize();
        return 0;
    }
    if (!parallel_state_all_ok(MPI_COMM_WORLD, ok)) {
        args_free(&args, &parser);
        return stop_all(err, ok, 2);
    }

    ParallelState ps;
    ok = parallel_state_init(&ps, MPI_COMM_WORLD, args.tensor_model_parallel_size,
                             args.pipeline_model_parallel_size, err, sizeof err);
    if (!parallel_state_all_ok(MPI_COMM_WORLD, ok)) return stop_all(err, ok, 2);

    Trainer trainer;
    ok = trainer_setup(&trainer, &args, &ps, err, sizeof err);
    if (!parallel_state_all_ok(MPI_COMM_WORLD, ok)) {
        trainer_free(&trainer);
        parallel_state_destroy(&ps);
        args_free(&args, &parser);
        return stop_all(err, ok, 2);
    }
    int status = trainer_run(&trainer);
    trainer_free(&trainer);
    parallel_state_destroy(&ps);
    args_free(&args, &parser);
    MPI_Finalize();
    return status;
}
