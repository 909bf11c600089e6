/* weft version macros. Included by <weft.h>; do not include directly. */
#ifndef WEFT_VERSION_H
#define WEFT_VERSION_H

#define WEFT_VERSION_MAJOR 0
#define WEFT_VERSION_MINOR 1
#define WEFT_VERSION_PATCH 0

/* The version as one number, (major << 16) | (minor << 8) | patch, so that
 * releases compare with < and >. weft_version() returns the same number for
 * the library actually linked. */
#define WEFT_VERSION_HEX                                                       \
    ((WEFT_VERSION_MAJOR << 16) | (WEFT_VERSION_MINOR << 8) |                  \
     WEFT_VERSION_PATCH)

#define WEFT_STRINGIFY_(x) #x
#define WEFT_STRINGIFY(x) WEFT_STRINGIFY_(x)
#define WEFT_VERSION_STRING                                                    \
    WEFT_STRINGIFY(WEFT_VERSION_MAJOR)                                         \
    "." WEFT_STRINGIFY(WEFT_VERSION_MINOR) "." WEFT_STRINGIFY(                 \
        WEFT_VERSION_PATCH)

#endif
