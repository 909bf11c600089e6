// <weft.h> must compile on its own as C++11: this file is built with
// -std=c++11 -Wall -Wextra -Werror and includes nothing else first. Run as
// the test header.cxx, it also checks that the C declarations link from C++.
#include <weft.h>

#include <cstdio>
#include <cstring>

static weft_poll poll_ready(weft_future *f, weft_cx *)
{
    return weft_future_set(f, nullptr, 0);
}

static const weft_future_ops ready_ops = {poll_ready, nullptr, "ready"};

int main()
{
    const weft_site *here = WEFT_HERE;
    weft_config cfg = {};
    weft_spawn_opts opts = {"check", 0};
    weft_task_fn fn = nullptr;

    (void)cfg;
    (void)opts;
    (void)fn;
    (void)ready_ops;
    if (weft_version() != WEFT_VERSION_HEX ||
        std::strcmp(weft_version_string(), WEFT_VERSION_STRING) != 0) {
        std::fprintf(stderr, "header says %s, library is %s\n",
                     WEFT_VERSION_STRING, weft_version_string());
        return 1;
    }
    std::printf("weft %s (C++, %s, %s:%d)\n", weft_version_string(),
                weft_strerror(0), here->file, here->line);
    return 0;
}
