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

/* The watchdog limit of the start-up agreements: the flag once it parsed,
 * Megatron's default before (a bad value must not disarm the agreement that
 * reports it). */
static double timeout_s(const TrainArgs *a, bool parsed) {
    return parsed ? 60.0 * a->distributed_timeout_minutes : PARALLEL_STATE_DEFAULT_TIMEOUT_S;
}

/* Ends every rank after parallel_state_agree gave them all the lowest
 * failing rank's own message, which rank 0 alone prints. */
static int stop_all(const char *err, int code) {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank == 0) {
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
    bool ok = args_parse(&args, &parser, argc, argv, world_size, &wants_help, err, sizeof err) &&
              parallel_state_check_launcher(world_size, err, sizeof err);
    if (wants_help) {
        if (rank == 0) args_print_help(stdout);
        args_free(&args, &parser);
        MPI_Finalize();
        return 0;
    }
    if (!parallel_state_agree(MPI_COMM_WORLD, ok, timeout_s(&args, ok), err, sizeof err)) {
        args_free(&args, &parser);
        return stop_all(err, 2);
    }

    ParallelState ps;
    ok = parallel_state_init_sizes(&ps, MPI_COMM_WORLD, args_parallel_sizes(&args), err,
                                   sizeof err);
    if (!parallel_state_agree(MPI_COMM_WORLD, ok, timeout_s(&args, true), err, sizeof err))
        return stop_all(err, 2);
    ps.timeout_s = timeout_s(&args, true);

    Trainer trainer;
    ok = trainer_setup(&trainer, &args, &ps, err, sizeof err);
    if (!parallel_state_agree(MPI_COMM_WORLD, ok, ps.timeout_s, err, sizeof err)) {
        trainer_free(&trainer);
        parallel_state_destroy(&ps);
        args_free(&args, &parser);
        return stop_all(err, 2);
    }
    int status = trainer_run(&trainer);
    trainer_free(&trainer);
    parallel_state_destroy(&ps);
    args_free(&args, &parser);
    MPI_Finalize();
    return status;
}
