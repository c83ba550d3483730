#include "training/exit_signal.h"

#include <signal.h>
#include <string.h>

/* A signal handler can only reach static storage: this flag is the one
 * piece of process-wide state, written by the handler, read by the loop. */
static volatile sig_atomic_t term_received = 0;

static void on_term(int sig) {
    (void)sig;
    term_received = 1;
}

void exit_signal_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
}

bool exit_signal_received(void) { return term_received != 0; }
