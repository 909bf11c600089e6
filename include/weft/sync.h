/* weft: channels, sync primitives, select, task groups.
 * Included by <weft.h>; do not include directly. */
#ifndef WEFT_SYNC_H
#define WEFT_SYNC_H

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif

#endif
