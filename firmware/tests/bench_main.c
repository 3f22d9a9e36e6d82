/* Instructions per inference under QEMU with `-icount shift=0`: every guest instruction
 * advances virtual time by exactly 1 ns, and SysTick counts virtual time (25 MHz on mps2,
 * 40 ns per tick), so SysTick ticks x 40 = instructions. A calibration loop of known length
 * checks the conversion in the same run. Results go out over semihosting. */
#include "../core/detector.h"
#include "../core/model.h"
#include "../core/text.h"
#include "../hal/hal.h"
#include "../models/factory_model.h"

uint32_t hal_systick_value(void);
uint32_t hal_systick_reload(void);

#define NS_PER_TICK 40u /* 25 MHz system clock */

static uint64_t now_ticks(void) {
    uint32_t ms1, ms2, cvr;
    do {
        ms1 = hal_millis();
        cvr = hal_systick_value();
        ms2 = hal_millis();
    } while (ms1 != ms2);
    return (uint64_t)ms1 * (hal_systick_reload() + 1u) + (hal_systick_reload() - cvr);
}

static void report(const char *what, uint64_t ticks, uint32_t n) {
    char buf[96];
    size_t len = 0;
    text_str(buf, sizeof buf, &len, "bench ");
    text_str(buf, sizeof buf, &len, what);
    text_str(buf, sizeof buf, &len, " insns=");
    text_u32(buf, sizeof buf, &len, (uint32_t)(ticks * NS_PER_TICK));
    text_str(buf, sizeof buf, &len, " calls=");
    text_u32(buf, sizeof buf, &len, n);
    text_str(buf, sizeof buf, &len, "\n");
    hal_console(buf);
}

static volatile int8_t g_sink;

int main(void) {
    hal_init();
    model_t m;
    if (model_parse(factory_model_blob, factory_model_blob_len, &m) != MODEL_OK) hal_exit(2);
    enum { N = 2000 };
    /* Is DWT CYCCNT emulated? Enable it and see whether it moves over the loop below. */
    *(volatile uint32_t *)0xE000EDFCu |= 1u << 24; /* DEMCR.TRCENA */
    *(volatile uint32_t *)0xE0001000u |= 1u;       /* DWT_CTRL.CYCCNTENA */
    const uint32_t cyc0 = *(volatile uint32_t *)0xE0001004u;
    /* Calibration: 4 instructions per iteration (2 nops, subs, bne). */
    uint64_t t0 = now_ticks();
    uint32_t k = 1000000u;
    __asm volatile("1: nop\n nop\n subs %0, %0, #1\n bne 1b" : "+r"(k));
    report("calibration_4_insn_loop", now_ticks() - t0, 1000000u);
    {
        char buf[64];
        size_t len = 0;
        text_str(buf, sizeof buf, &len, "bench dwt_cyccnt_delta=");
        text_u32(buf, sizeof buf, &len, *(volatile uint32_t *)0xE0001004u - cyc0);
        text_str(buf, sizeof buf, &len, "\n");
        hal_console(buf);
    }

    int8_t in[MODEL_MAX_WIDTH], out[MODEL_MAX_WIDTH];
    for (uint16_t i = 0; i < m.n_inputs; i++) in[i] = (int8_t)(i * 7 - 40);
    t0 = now_ticks();
    for (int i = 0; i < N; i++) {
        in[0] = (int8_t)i;
        model_invoke_q(&m, in, out);
        g_sink = out[0];
    }
    report("invoke_int8", now_ticks() - t0, N);

    float window[MODEL_MAX_WIDTH];
    for (uint16_t i = 0; i < m.n_inputs; i++) window[i] = 26.5f + 0.0625f * (float)(i % 3);
    t0 = now_ticks();
    for (int i = 0; i < N; i++) {
        window[0] = 26.0f + (float)(i % 8) * 0.0625f;
        g_sink = (int8_t)model_predict(&m, window, 0);
    }
    report("predict_float_in_out", now_ticks() - t0, N);

    static detector_t det;
    detector_reset(&det);
    reading_t r = {{26.5f, 45.0f, 1006.5f}};
    t0 = now_ticks();
    for (int i = 0; i < N; i++) {
        r.v[0] = 26.5f + (float)(i % 5) * 0.0625f;
        g_sink = (int8_t)detector_step(&det, &m, &r);
    }
    report("detector_step", now_ticks() - t0, N);
    hal_exit(0);
    return 0;
}
