/* tests/test_mpi_util.h — what the tests that run under mpirun share: a
 * check that stops every rank (MPI_Abort) instead of leaving the others
 * waiting in a collective, and the exit hook that routes gpt3d's fatal
 * errors the same way. */
#ifndef GPT3D_TEST_MPI_UTIL_H
#define GPT3D_TEST_MPI_UTIL_H

#include <mpi.h>
#include <stdio.h>

#define MPI_TEST_CHECK(cond)                                                                       \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);              \
            MPI_Abort(MPI_COMM_WORLD, 1);                                                          \
        }                                                                                          \
    } while (0)

/* For gpt3d_set_exit_hook. */
static inline void mpi_test_abort_job(int code) { MPI_Abort(MPI_COMM_WORLD, code); }

#endif
