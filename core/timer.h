/* core/timer.h — wall-clock timing for logs and benchmarks. */
#ifndef GPT3D_CORE_TIMER_H
#define GPT3D_CORE_TIMER_H

/* Seconds on a monotonic clock (arbitrary origin). */
double timer_now_s(void);

/* "2026-11-23 14:05:09.123456" local time, microseconds as Python's %f
 * (Megatron's log stamps), into buf (at least 27 bytes). */
void timer_wall_clock_string(char *buf, int size);

#endif
