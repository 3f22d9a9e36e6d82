/* Host tool for parity tests: run the firmware's own kernels on a model image.
 *   model_tool IMAGE            reads lines of comma-separated int8 inputs on stdin and
 *                               prints the int8 outputs, one line each
 * Exit status 3 if the image does not parse or fails its embedded test vectors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/model.h"

static uint8_t g_image[65536];

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s IMAGE < inputs\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) {
        perror(argv[1]);
        return 2;
    }
    const size_t size = fread(g_image, 1, sizeof g_image, f);
    fclose(f);
    model_t m;
    model_status_t st = model_parse(g_image, (uint32_t)size, &m);
    if (st == MODEL_OK) st = model_self_test(&m);
    if (st != MODEL_OK) {
        fprintf(stderr, "image refused: %s\n", model_status_name(st));
        return 3;
    }
    fprintf(stderr, "model %s hash %08x inputs %u outputs %u\n", m.name, (unsigned)m.crc,
            m.n_inputs, m.n_outputs);
    static char line[8192];
    while (fgets(line, sizeof line, stdin)) {
        int8_t in[MODEL_MAX_WIDTH], out[MODEL_MAX_WIDTH];
        unsigned n = 0;
        for (char *tok = strtok(line, ",\n"); tok && n < MODEL_MAX_WIDTH; tok = strtok(NULL, ",\n"))
            in[n++] = (int8_t)strtol(tok, NULL, 10);
        if (n != m.n_inputs) {
            fprintf(stderr, "expected %u inputs, got %u\n", m.n_inputs, n);
            return 2;
        }
        model_invoke_q(&m, in, out);
        for (unsigned o = 0; o < m.n_outputs; o++) printf(o ? ",%d" : "%d", out[o]);
        printf("\n");
    }
    return 0;
}
