#include "core/timer.h"

#include <stdio.h>
#include <time.h>

double timer_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void timer_wall_clock_string(char *buf, int size) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    localtime_r(&now.tv_sec, &tm);
    char seconds[24];
    strftime(seconds, sizeof seconds, "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(buf, (size_t)size, "%s.%06ld", seconds, now.tv_nsec / 1000);
}
