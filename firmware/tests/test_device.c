#include <string.h>

#include "check.h"
#include "fake_port.h"

static device_t g_dev;

static void check_line_format(void) {
    char buf[160];
    reading_t r = {{28.6875f, 45.2f, 993.38525f}};
    device_format_reading(&r, 7, 1234, true, buf, sizeof buf);
    CHECK(strcmp(buf, "temp:28.6875,humidity:45.2000,pressure:993.3853,seq:7,ms:1234,anomaly:1") == 0);
    device_format_reading(&r, 0, 0, false, buf, sizeof buf);
    CHECK(strstr(buf, "anomaly") == NULL);
}

static void check_commands(device_t *d) {
    CHECK(strcmp(fake_cmd(d, "PING"), "@PONG\n") == 0);
    const char *info = fake_cmd(d, "INFO");
    CHECK(strncmp(info, "@INFO fw=" FW_VERSION " model=", 14) == 0);
    CHECK(strstr(info, " slot=a ") && strstr(info, " rate_ms=1000 ") && strstr(info, " mode=all "));
    CHECK(strstr(info, " suppressed=0") != NULL);
    char hash[24];
    size_t n = 0;
    text_str(hash, sizeof hash, &n, "hash=");
    text_hex8(hash, sizeof hash, &n, d->model.crc);
    CHECK(strstr(info, hash) != NULL);
    CHECK(strcmp(fake_cmd(d, "RATE 100"), "@OK RATE\n") == 0);
    CHECK(strncmp(fake_cmd(d, "RATE 1"), "@ERR rate", 9) == 0);
    CHECK(strncmp(fake_cmd(d, "RATE abc"), "@ERR rate", 9) == 0);
    CHECK(strncmp(fake_cmd(d, "MODE sometimes"), "@ERR mode", 9) == 0);
    CHECK(strncmp(fake_cmd(d, "BOGUS 1 2"), "@ERR unknown command", 20) == 0);
    CHECK(strncmp(fake_cmd(d, "FAULT melt"), "@ERR fault", 10) == 0);
    CHECK(strcmp(fake_cmd(d, ""), "") == 0);
    /* Binary garbage in line mode: one error at the end of the line, nothing else. */
    fake_clear_output();
    const uint8_t junk[] = {0x01, 0xFE, 0x00, 'P', 'I', 0x80, '\n'};
    fake_send(d, junk, sizeof junk);
    CHECK(strcmp(g_fake.out, "@ERR garbage\n") == 0);
    char longline[DEVICE_LINE_MAX + 40];
    memset(longline, 'A', sizeof longline - 1);
    longline[sizeof longline - 1] = '\0';
    CHECK(strncmp(fake_cmd(d, longline), "@ERR line too long", 18) == 0);
    CHECK(strcmp(fake_cmd(d, "PING"), "@PONG\n") == 0); /* and it recovers */
    /* PREDICT on the factory model's first test vector gives its expected output. */
    char cmd[200];
    n = 0;
    text_str(cmd, sizeof cmd, &n, "PREDICT q ");
    for (uint16_t i = 0; i < d->model.n_inputs; i++) {
        if (i) text_str(cmd, sizeof cmd, &n, ",");
        text_i32(cmd, sizeof cmd, &n, (int8_t)d->model.vectors[i]);
    }
    char want[32];
    n = 0;
    text_str(want, sizeof want, &n, "@PRED q=");
    text_i32(want, sizeof want, &n, (int8_t)d->model.vectors[d->model.n_inputs]);
    text_str(want, sizeof want, &n, " ");
    CHECK(strncmp(fake_cmd(d, cmd), want, strlen(want)) == 0);
    CHECK(strncmp(fake_cmd(d, "PREDICT q 1,2"), "@ERR inputs", 11) == 0);
    CHECK(strncmp(fake_cmd(d, "PREDICT 26,26,26,26,26,26,26,26,26,26"), "@PRED q=", 8) == 0);
}

static void check_streaming(device_t *d) {
    fake_clear_output();
    fake_run(d, 1000); /* RATE 100: ten readings */
    CHECK_EQ(fake_count("temp:"), 10);
    CHECK_EQ(fake_count(",seq:"), 10);
    CHECK(strstr(g_fake.out, ",seq:10,") != NULL);
    CHECK_EQ(fake_count("anomaly:1"), 0);
    fake_run(d, 3000); /* fill the window, the model predicts the sim well */
    CHECK(d->det.have_prediction);
    CHECK(d->det.last_residual < d->model.threshold);
    CHECK_EQ(d->anomalies, 0);

    /* filter: only a heartbeat every N samples, and the suppressed count grows. */
    CHECK(strcmp(fake_cmd(d, "MODE filter 5"), "@OK MODE\n") == 0);
    fake_clear_output();
    fake_run(d, 2000);
    CHECK_EQ(fake_count("temp:"), 4);
    CHECK_EQ(d->suppressed, 20);
    CHECK(strstr(fake_cmd(d, "INFO"), " mode=filter suppressed=20") != NULL);

    /* A fire: the ramp is flagged, and in filter mode every flagged reading is sent. */
    CHECK(strcmp(fake_cmd(d, "FAULT fire"), "@OK FAULT\n") == 0);
    fake_clear_output();
    fake_run(d, 2000);
    CHECK(fake_count("anomaly:1") >= 10);
    const uint32_t flagged = d->anomalies;
    CHECK(fake_cmd(d, "FAULT off")[0] == '@');
    CHECK(strcmp(fake_cmd(d, "MODE all"), "@OK MODE\n") == 0);
    fake_run(d, 3000);
    fake_clear_output();
    fake_run(d, 1000);
    CHECK_EQ(fake_count("anomaly:1"), 0); /* back to normal after the fault */

    /* A stuck sensor: identical readings for a while are flagged. */
    CHECK(strcmp(fake_cmd(d, "FAULT stuck"), "@OK FAULT\n") == 0);
    fake_clear_output();
    fake_run(d, 2000);
    CHECK(fake_count("anomaly:1") >= 10);
    CHECK(d->anomalies > flagged);
    fake_cmd(d, "FAULT off");
}

static void check_determinism(void) {
    /* The same seed gives the same lines. */
    static char first[2048];
    fake_reset(1);
    device_port_t p = fake_port();
    device_init(&g_dev, &p, 42);
    fake_run(&g_dev, 5000);
    memcpy(first, g_fake.out, sizeof first);
    fake_reset(1);
    device_init(&g_dev, &p, 42);
    fake_run(&g_dev, 5000);
    CHECK(memcmp(first, g_fake.out, sizeof first) == 0);
    fake_reset(1);
    device_init(&g_dev, &p, 43);
    fake_run(&g_dev, 5000);
    CHECK(memcmp(first, g_fake.out, sizeof first) != 0);
}

void test_device(void) {
    check_line_format();
    fake_reset(1);
    device_port_t p = fake_port();
    device_init(&g_dev, &p, 1);
    CHECK(g_dev.have_model && g_dev.active_slot == 0);
    CHECK(strstr(g_fake.out, "# edgeloop fw") == g_fake.out);
    check_commands(&g_dev);
    check_streaming(&g_dev);
    check_determinism();
}
