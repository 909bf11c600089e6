/*
 * A small test harness. Each test file holds several cases:
 *
 *     TEST(spawn_join) { ... ASSERT_EQ(a, b); ... }
 *
 * and ends with TEST_MAIN(). The build registers every TEST(name) of a file
 * as its own ctest case (one process each, with a timeout) by scanning the
 * source, and runs it as `test_file name`. Without an argument the binary
 * runs every case in turn, in one process (handy under gdb).
 *
 * A case that needs something the machine lacks calls SKIP("why"): the
 * process exits 77, which ctest reports as skipped, never as passed.
 */
#ifndef WEFT_TEST_H
#define WEFT_TEST_H

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*test_fn)(void);
struct test_case {
    const char *name;
    test_fn fn;
    struct test_case *next;
};
extern struct test_case *test_cases_;

#define TEST(name)                                                             \
    static void test_##name(void);                                             \
    static struct test_case test_case_##name = {#name, test_##name, NULL};     \
    __attribute__((constructor)) static void test_register_##name(void)        \
    {                                                                          \
        test_case_##name.next = test_cases_;                                   \
        test_cases_ = &test_case_##name;                                       \
    }                                                                          \
    static void test_##name(void)

#define TEST_FAIL_(...)                                                        \
    do {                                                                       \
        fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                        \
        fprintf(stderr, __VA_ARGS__);                                          \
        fputc('\n', stderr);                                                   \
        abort();                                                               \
    } while (0)

#define ASSERT(cond)                                                           \
    do {                                                                       \
        if (!(cond))                                                           \
            TEST_FAIL_("assertion failed: %s", #cond);                         \
    } while (0)

#define ASSERT_CMP_(a, op, b)                                                  \
    do {                                                                       \
        int64_t a_ = (int64_t)(a), b_ = (int64_t)(b);                          \
        if (!(a_ op b_))                                                       \
            TEST_FAIL_("expected %s %s %s: %" PRId64 " vs %" PRId64, #a, #op,  \
                       #b, a_, b_);                                            \
    } while (0)

#define ASSERT_EQ(a, b) ASSERT_CMP_(a, ==, b)
#define ASSERT_NE(a, b) ASSERT_CMP_(a, !=, b)
#define ASSERT_LT(a, b) ASSERT_CMP_(a, <, b)
#define ASSERT_LE(a, b) ASSERT_CMP_(a, <=, b)
#define ASSERT_GT(a, b) ASSERT_CMP_(a, >, b)
#define ASSERT_GE(a, b) ASSERT_CMP_(a, >=, b)
#define ASSERT_PTR_EQ(a, b)                                                    \
    do {                                                                       \
        const void *a_ = (a), *b_ = (b);                                       \
        if (a_ != b_)                                                          \
            TEST_FAIL_("expected %s == %s: %p vs %p", #a, #b, a_, b_);         \
    } while (0)
#define ASSERT_STR_CONTAINS(hay, needle)                                       \
    do {                                                                       \
        const char *h_ = (hay), *n_ = (needle);                                \
        if (!h_ || !strstr(h_, n_))                                            \
            TEST_FAIL_("expected \"%s\" to contain \"%s\"",                    \
                       h_ ? h_ : "(null)", n_);                                \
    } while (0)
/* A weft call that must succeed: prints the error name otherwise. */
#define ASSERT_OK(expr)                                                        \
    do {                                                                       \
        int rc_ = (expr);                                                      \
        if (rc_ < 0)                                                           \
            TEST_FAIL_("%s failed: %d (%s)", #expr, rc_, strerror(-rc_));      \
    } while (0)

#define SKIP(why)                                                              \
    do {                                                                       \
        fprintf(stderr, "SKIP: %s\n", why);                                    \
        exit(77);                                                              \
    } while (0)

/* True when built with ASan or TSan, or run under an emulator (qemu-user in
 * the aarch64 build): slow builds in which the big cases scale down. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define TEST_SANITIZED 1
#endif
#endif
#if defined(WEFT_TEST_EMULATED) && !defined(TEST_SANITIZED)
#define TEST_SANITIZED 1
#endif
#ifndef TEST_SANITIZED
#define TEST_SANITIZED 0
#endif

#if defined(__SANITIZE_THREAD__)
#define TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TEST_TSAN 1
#endif
#endif
#ifndef TEST_TSAN
#define TEST_TSAN 0
#endif

#define TEST_MAIN()                                                            \
    struct test_case *test_cases_;                                             \
    int main(int argc, char **argv)                                            \
    {                                                                          \
        int ran = 0;                                                           \
        for (struct test_case *c = test_cases_; c; c = c->next) {              \
            if (argc > 1 && strcmp(argv[1], c->name) != 0)                     \
                continue;                                                      \
            c->fn();                                                           \
            ran++;                                                             \
        }                                                                      \
        if (!ran) {                                                            \
            fprintf(stderr, "no test named %s\n", argc > 1 ? argv[1] : "");    \
            return 2;                                                          \
        }                                                                      \
        return 0;                                                              \
    }

#endif
