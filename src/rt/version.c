/*
 * Version queries and error names.
 */
#include "internal.h"

#include <string.h>

unsigned weft_version(void)
{
    return WEFT_VERSION_HEX;
}

const char *weft_version_string(void)
{
    return WEFT_VERSION_STRING;
}

const char *weft_strerror(int err)
{
    if (err == 0)
        return "success";
    if (err > 0 || err < -4095)
        return "unknown error";
    /* glibc's table is static and complete for errno values; strerror()
     * itself may format into a buffer for unknown ones, so ask for the
     * description by name only for values glibc knows. */
    const char *d = strerrordesc_np(-err);
    return d ? d : "unknown error";
}
