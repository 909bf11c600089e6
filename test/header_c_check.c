/*
 * <weft.h> must compile on its own as strict C11: this file is built with
 * -std=c11 -pedantic -Wall -Wextra -Werror and includes nothing else first.
 * Run as the test header.c, it also checks the version macros against the
 * linked library.
 */
#include <weft.h>

#include <stdio.h>
#include <string.h>

static weft_poll poll_ready(weft_future *f, weft_cx *cx)
{
    (void)cx;
    return weft_future_set(f, NULL, 0);
}

static const weft_future_ops ready_ops = {poll_ready, NULL, "ready"};

int main(void)
{
    const weft_site *here = WEFT_HERE;
    weft_config cfg;
    weft_spawn_opts opts = {"check", 0};
    weft_waker noop = {NULL, NULL};

    (void)cfg;
    (void)opts;
    (void)noop;
    (void)ready_ops;
    if (weft_version() != WEFT_VERSION_HEX ||
        strcmp(weft_version_string(), WEFT_VERSION_STRING) != 0) {
        fprintf(stderr, "header says %s, library is %s\n", WEFT_VERSION_STRING,
                weft_version_string());
        return 1;
    }
    printf("weft %s (C, %s:%d)\n", weft_version_string(), here->file,
           here->line);
    return 0;
}
