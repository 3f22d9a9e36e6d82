/* A minimal test harness that runs the same on the host and under QEMU (semihosting). */
#ifndef EDGELOOP_CHECK_H
#define EDGELOOP_CHECK_H
#include "../hal/hal.h"
#include "../core/text.h"

extern int g_failures, g_checks;
void check_fail(const char *file, int line, const char *expr);

#define CHECK(expr)                                                    \
    do {                                                               \
        g_checks++;                                                    \
        if (!(expr)) check_fail(__FILE__, __LINE__, #expr);            \
    } while (0)
#define CHECK_EQ(a, b) CHECK((long long)(a) == (long long)(b))

void test_primitives(void);
void test_model(void);
void test_device(void);
void test_update(void);
void test_drivers(void);
void test_flash(void);

#endif
