#include "check.h"

int g_failures, g_checks;

void check_fail(const char *file, int line, const char *expr) {
    char buf[256];
    size_t n = 0;
    text_str(buf, sizeof buf, &n, "FAIL ");
    text_str(buf, sizeof buf, &n, file);
    text_str(buf, sizeof buf, &n, ":");
    text_u32(buf, sizeof buf, &n, (uint32_t)line);
    text_str(buf, sizeof buf, &n, ": ");
    text_str(buf, sizeof buf, &n, expr);
    text_str(buf, sizeof buf, &n, "\n");
    hal_console(buf);
    g_failures++;
}

static void run(const char *name, void (*fn)(void)) {
    const int before = g_failures;
    fn();
    hal_console(g_failures == before ? "ok   " : "FAIL ");
    hal_console(name);
    hal_console("\n");
}

int main(void) {
    hal_init();
    run("primitives", test_primitives);
    run("model", test_model);
    run("device", test_device);
    run("update", test_update);
    run("drivers", test_drivers);
    run("flash", test_flash);
#ifdef EDGELOOP_FORCE_FAILURE
    /* Built only to prove that a failing check fails the run (and QEMU's exit status). */
    CHECK(0 == 1);
#endif
    char buf[80];
    size_t n = 0;
    text_u32(buf, sizeof buf, &n, (uint32_t)g_checks);
    text_str(buf, sizeof buf, &n, " checks, ");
    text_u32(buf, sizeof buf, &n, (uint32_t)g_failures);
    text_str(buf, sizeof buf, &n, " failures\n");
    hal_console(buf);
    hal_exit(g_failures ? 1 : 0);
    return g_failures ? 1 : 0;
}
