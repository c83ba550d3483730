/* The launcher check (parallel_state.h): torchrun and Slurm announce a world
 * of several processes in the environment; a process that MPI sees alone
 * would otherwise train the whole model by itself, once per launched copy,
 * all writing the same checkpoints. */
#include <stdio.h>
#include <stdlib.h>

#include "parallel_state/parallel_state.h"

/* A positive integer environment variable; 0 when unset or not one. */
static long env_count(const char *name) {
    const char *v = getenv(name);
    if (!v || !*v) return 0;
    char *end = NULL;
    const long n = strtol(v, &end, 10);
    return *end == '\0' && n > 0 ? n : 0;
}

bool parallel_state_check_launcher(int mpi_world_size, char *err, size_t err_size) {
    /* mpirun -np 1 (Open MPI says so) is a deliberate single rank. */
    if (mpi_world_size != 1 || env_count("OMPI_COMM_WORLD_SIZE") == 1) return true;
    static const struct {
        const char *variable, *launcher;
    } ANNOUNCED[] = {{"WORLD_SIZE", "torchrun"}, {"SLURM_NTASKS", "Slurm"}};
    for (size_t i = 0; i < sizeof ANNOUNCED / sizeof ANNOUNCED[0]; i++) {
        const long n = env_count(ANNOUNCED[i].variable);
        if (n <= 1) continue;
        snprintf(err, err_size,
                 "%s=%ld (set by %s) says this job has %ld processes, but MPI sees this one "
                 "alone: gpt3d's ranks are MPI processes. Launch with `mpirun -np %ld [--hostfile "
                 "FILE] pretrain_gpt ...`, or in a Slurm allocation with `srun --mpi=pmix -n %ld "
                 "pretrain_gpt ...` (Open MPI built with PMIx); for one rank on purpose use "
                 "`mpirun -np 1` or `srun -n 1`",
                 ANNOUNCED[i].variable, n, ANNOUNCED[i].launcher, n, n, n);
        return false;
    }
    return true;
}
