#include "device.h"

#include <string.h>

#include "crc32.h"
#include "text.h"

static const char *const k_field_names[READING_FIELDS] = {"temp", "humidity", "pressure"};

void device_reply(device_t *d, const char *s) {
    d->port.write(d->port.ctx, s, strlen(s));
    d->port.write(d->port.ctx, "\n", 1);
}

static void reply_err(device_t *d, const char *reason) {
    char buf[64];
    size_t n = 0;
    text_str(buf, sizeof buf, &n, "@ERR ");
    text_str(buf, sizeof buf, &n, reason);
    device_reply(d, buf);
}

static void reply_ok(device_t *d, const char *cmd) {
    char buf[64];
    size_t n = 0;
    text_str(buf, sizeof buf, &n, "@OK ");
    text_str(buf, sizeof buf, &n, cmd);
    device_reply(d, buf);
}

bool device_load_active(device_t *d) {
    const flash_t *f = &d->port.flash;
    int slot = slots_pick_active(f);
    if (slot < 0 && d->port.factory_model && d->port.factory_model_size <= SLOT_SIZE) {
        /* First boot (or both slots damaged): install the factory model into slot A. */
        slot_meta_t m = {0};
        m.state = SLOT_RECEIVING;
        slots_write_meta(f, 0, &m);
        slots_write_data(f, 0, 0, d->port.factory_model, d->port.factory_model_size);
        m.state = SLOT_VALID;
        m.generation = 1;
        m.size = d->port.factory_model_size;
        m.crc = crc32(d->port.factory_model, d->port.factory_model_size);
        slots_write_meta(f, 0, &m);
        slot = slots_pick_active(f);
    }
    d->have_model = false;
    d->active_slot = slot;
    if (slot < 0) return false;
    slot_meta_t meta;
    slots_read_meta(f, (unsigned)slot, &meta);
    d->generation = meta.generation;
    d->have_model = model_parse(slots_data(f, (unsigned)slot), meta.size, &d->model) == MODEL_OK &&
                    model_self_test(&d->model) == MODEL_OK;
    return d->have_model;
}

void device_init(device_t *d, const device_port_t *port, uint32_t seed) {
    memset(d, 0, sizeof *d);
    d->port = *port;
    d->rate_ms = DEVICE_DEFAULT_RATE_MS;
    d->heartbeat_n = DEVICE_DEFAULT_HEARTBEAT;
    d->mode = MODE_ALL;
    sensors_sim_init(&d->sim, seed);
    detector_reset(&d->det);
    device_load_active(d);
    d->next_sample_ms = d->port.millis(d->port.ctx);
    d->port.write(d->port.ctx, "# edgeloop fw " FW_VERSION "\n",
                  sizeof("# edgeloop fw " FW_VERSION "\n") - 1u);
}

size_t device_format_reading(const reading_t *r, uint32_t seq, uint32_t ms, bool anomaly,
                             char *buf, size_t cap) {
    size_t n = 0;
    buf[0] = '\0';
    for (unsigned f = 0; f < READING_FIELDS; f++) {
        if (f) text_str(buf, cap, &n, ",");
        text_str(buf, cap, &n, k_field_names[f]);
        text_str(buf, cap, &n, ":");
        text_fixed(buf, cap, &n, r->v[f], 4);
    }
    text_str(buf, cap, &n, ",seq:");
    text_u32(buf, cap, &n, seq);
    text_str(buf, cap, &n, ",ms:");
    text_u32(buf, cap, &n, ms);
    if (anomaly) text_str(buf, cap, &n, ",anomaly:1");
    return n;
}

static void send_reading(device_t *d, const reading_t *r, uint32_t ms, bool anomaly) {
    char buf[160];
    device_format_reading(r, d->seq, ms, anomaly, buf, sizeof buf);
    device_reply(d, buf);
}

static void sample(device_t *d, uint32_t now) {
    reading_t r;
    if (!(d->port.read_sensors && d->port.read_sensors(d->port.ctx, &r)))
        sensors_sim_sample(&d->sim, &r);
    const anomaly_t a = detector_step(&d->det, d->have_model ? &d->model : NULL, &r);
    d->seq++;
    if (a != ANOMALY_NONE) d->anomalies++;
    if (d->mode == MODE_ALL || a != ANOMALY_NONE) {
        send_reading(d, &r, now, a != ANOMALY_NONE);
        d->since_sent = 0;
        memset(&d->hb_sum, 0, sizeof d->hb_sum);
        return;
    }
    d->suppressed++;
    d->since_sent++;
    for (unsigned f = 0; f < READING_FIELDS; f++) d->hb_sum.v[f] += r.v[f];
    if (d->since_sent >= d->heartbeat_n) {
        /* Heartbeat: the mean of the readings held back since the last line sent. */
        reading_t mean;
        for (unsigned f = 0; f < READING_FIELDS; f++)
            mean.v[f] = d->hb_sum.v[f] / (float)d->since_sent;
        send_reading(d, &mean, now, false);
        d->since_sent = 0;
        memset(&d->hb_sum, 0, sizeof d->hb_sum);
    }
}

static void cmd_info(device_t *d) {
    char buf[200];
    size_t n = 0;
    text_str(buf, sizeof buf, &n, "@INFO fw=" FW_VERSION " model=");
    text_str(buf, sizeof buf, &n, d->have_model ? d->model.name : "none");
    text_str(buf, sizeof buf, &n, " hash=");
    text_hex8(buf, sizeof buf, &n, d->have_model ? d->model.crc : 0u);
    text_str(buf, sizeof buf, &n, " slot=");
    text_str(buf, sizeof buf, &n, d->active_slot == 1 ? "b" : (d->active_slot == 0 ? "a" : "-"));
    text_str(buf, sizeof buf, &n, " rate_ms=");
    text_u32(buf, sizeof buf, &n, d->rate_ms);
    text_str(buf, sizeof buf, &n, " mode=");
    text_str(buf, sizeof buf, &n, d->mode == MODE_FILTER ? "filter" : "all");
    text_str(buf, sizeof buf, &n, " suppressed=");
    text_u32(buf, sizeof buf, &n, d->suppressed);
    text_str(buf, sizeof buf, &n, " version=");
    text_u32(buf, sizeof buf, &n, d->have_model ? d->model.version : 0u);
    text_str(buf, sizeof buf, &n, " gen=");
    text_u32(buf, sizeof buf, &n, d->generation);
    text_str(buf, sizeof buf, &n, " anomalies=");
    text_u32(buf, sizeof buf, &n, d->anomalies);
    text_str(buf, sizeof buf, &n, d->port.simulated ? " sensors=sim" : " sensors=real");
    device_reply(d, buf);
}

/* PREDICT v,v,...  (raw window, time-major)  or  PREDICT q i,i,...  (int8 model input). */
static void cmd_predict(device_t *d, char **argv, int argc) {
    if (!d->have_model) return reply_err(d, "nomodel");
    const bool quantized = argc == 3 && strcmp(argv[1], "q") == 0;
    if (argc != (quantized ? 3 : 2)) return reply_err(d, "usage: PREDICT [q] v,v,...");
    char *s = argv[argc - 1];
    float raw[MODEL_MAX_WIDTH];
    int8_t q[MODEL_MAX_WIDTH], out[MODEL_MAX_WIDTH];
    uint32_t count = 0;
    while (s && *s) {
        char *comma = strchr(s, ',');
        if (comma) *comma = '\0';
        if (count >= d->model.n_inputs) return reply_err(d, "inputs");
        if (quantized) {
            int32_t v;
            if (!text_parse_i32(s, &v) || v < -128 || v > 127) return reply_err(d, "number");
            q[count] = (int8_t)v;
        } else if (!text_parse_float(s, &raw[count])) {
            return reply_err(d, "number");
        }
        count++;
        s = comma ? comma + 1 : NULL;
    }
    if (count != d->model.n_inputs) return reply_err(d, "inputs");
    float y;
    if (quantized) {
        model_invoke_q(&d->model, q, out);
        y = (((float)out[0] - (float)d->model.output_zp) * d->model.output_scale) *
                d->model.out_std + d->model.out_mean;
    } else {
        y = model_predict(&d->model, raw, out);
    }
    char buf[96];
    size_t n = 0;
    text_str(buf, sizeof buf, &n, "@PRED q=");
    for (uint16_t o = 0; o < d->model.n_outputs; o++) {
        if (o) text_str(buf, sizeof buf, &n, ",");
        text_i32(buf, sizeof buf, &n, out[o]);
    }
    text_str(buf, sizeof buf, &n, " y=");
    text_fixed(buf, sizeof buf, &n, y, 4);
    device_reply(d, buf);
}

static void handle_command(device_t *d, char *line) {
    char *argv[6];
    int argc = 0;
    for (char *tok = line; *tok && argc < 6;) {
        while (*tok == ' ') *tok++ = '\0';
        if (!*tok) break;
        argv[argc++] = tok;
        while (*tok && *tok != ' ') tok++;
    }
    if (argc == 0) return;
    const char *cmd = argv[0];
    if (strcmp(cmd, "PING") == 0) {
        device_reply(d, "@PONG");
    } else if (strcmp(cmd, "INFO") == 0) {
        cmd_info(d);
    } else if (strcmp(cmd, "RATE") == 0) {
        uint32_t ms;
        if (argc != 2 || !text_parse_u32(argv[1], &ms) || ms < 10u || ms > 3600000u)
            return reply_err(d, "rate: RATE <10..3600000 ms>");
        d->rate_ms = ms;
        d->next_sample_ms = d->port.millis(d->port.ctx) + ms;
        reply_ok(d, "RATE");
    } else if (strcmp(cmd, "MODE") == 0) {
        uint32_t hb = d->heartbeat_n;
        if (argc < 2 || argc > 3 || (argc == 3 && (!text_parse_u32(argv[2], &hb) || hb == 0)))
            return reply_err(d, "mode: MODE all|filter [heartbeat_n]");
        if (strcmp(argv[1], "all") == 0) d->mode = MODE_ALL;
        else if (strcmp(argv[1], "filter") == 0) d->mode = MODE_FILTER;
        else return reply_err(d, "mode: MODE all|filter [heartbeat_n]");
        d->heartbeat_n = hb;
        d->since_sent = 0;
        memset(&d->hb_sum, 0, sizeof d->hb_sum);
        reply_ok(d, "MODE");
    } else if (strcmp(cmd, "FAULT") == 0) {
        if (!d->port.simulated) return reply_err(d, "fault: real sensors");
        float step = 0.0f;
        if (argc == 3 && !text_parse_float(argv[2], &step)) return reply_err(d, "number");
        if (argc >= 2 && strcmp(argv[1], "fire") == 0) sensors_sim_fault(&d->sim, FAULT_FIRE, step);
        else if (argc == 2 && strcmp(argv[1], "stuck") == 0) sensors_sim_fault(&d->sim, FAULT_STUCK, 0);
        else if (argc == 2 && strcmp(argv[1], "off") == 0) sensors_sim_fault(&d->sim, FAULT_NONE, 0);
        else return reply_err(d, "fault: FAULT fire [step]|stuck|off");
        reply_ok(d, "FAULT");
    } else if (strcmp(cmd, "UPDATE") == 0) {
        uint32_t size, crc;
        if (argc != 3 || !text_parse_u32(argv[1], &size) || !text_parse_hex32(argv[2], &crc))
            return reply_err(d, "update: UPDATE <size> <crc32hex>");
        update_begin(d, size, crc);
    } else if (strcmp(cmd, "PREDICT") == 0) {
        cmd_predict(d, argv, argc);
    } else if (strcmp(cmd, "RESET") == 0) {
        reply_ok(d, "RESET");
        d->event = DEVICE_RESET_REQUESTED;
    } else {
        reply_err(d, "unknown command");
    }
}

void device_rx(device_t *d, uint8_t byte) {
    if (d->upd.active) {
        update_rx_byte(d, byte);
        return;
    }
    if (byte == '\r') return;
    if (byte == '\n') {
        d->line[d->line_len] = '\0';
        if (d->line_error == 1u) reply_err(d, "line too long");
        else if (d->line_error == 2u) reply_err(d, "garbage");
        else handle_command(d, d->line);
        d->line_len = 0;
        d->line_error = 0;
        return;
    }
    if (byte < 0x20 || byte > 0x7E) {
        /* Binary garbage in line mode: drop the line, answer once at its end. */
        d->line_error = 2u;
        return;
    }
    if (d->line_len + 1u < sizeof d->line) d->line[d->line_len++] = (char)byte;
    else if (d->line_error == 0u) d->line_error = 1u;
}

device_event_t device_poll(device_t *d) {
    const uint32_t now = d->port.millis(d->port.ctx);
    if (d->upd.active) update_poll(d, now);
    /* Signed difference: millis() wraps after 49 days. */
    if ((int32_t)(now - d->next_sample_ms) >= 0) {
        sample(d, now);
        d->next_sample_ms += d->rate_ms;
        if ((int32_t)(now - d->next_sample_ms) > (int32_t)(10u * d->rate_ms))
            d->next_sample_ms = now + d->rate_ms; /* fell far behind: skip, do not burst */
    }
    const device_event_t ev = d->event;
    d->event = DEVICE_RUNNING;
    return ev;
}
