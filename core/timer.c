#include "core/timer.h"

#include <time.h>

double timer_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void timer_wall_clock_string(char *buf, int size) {
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(buf, (size_t)size, "%Y-%m-%d %H:%M:%S", &tm);
}
