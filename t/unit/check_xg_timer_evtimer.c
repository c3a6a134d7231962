/*
 * check_xg_timer_evtimer.c: check_xg_timer.c's cases on the timers'
 * other way of waking the loop, one libevent timer set to the earliest
 * deadline, which exgate takes where there is no timerfd(2) (not Linux,
 * or timerfd_create() failed). Built from the sources with
 * HAVE_SYS_TIMERFD_H off.
 */
#include "xg_core.h"
#undef HAVE_SYS_TIMERFD_H
#include "xg_timer.c"
#include "check_xg_timer.c"
