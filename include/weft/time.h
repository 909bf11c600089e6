/* weft: time: clock, sleep, intervals, timeouts, deadline scopes.
 * Included by <weft.h>; do not include directly. */
#ifndef WEFT_TIME_H
#define WEFT_TIME_H

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif

#endif
