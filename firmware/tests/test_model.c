#include <string.h>

#include "../core/crc32.h"
#include "../core/model.h"
#include "check.h"
#include "fake_port.h"

static uint8_t g_img[4096];

void test_model(void) {
    const uint32_t size = factory_model_blob_len;
    model_t m;
    CHECK(size <= sizeof g_img);
    CHECK_EQ(model_parse(factory_model_blob, size, &m), MODEL_OK);
    CHECK_EQ(model_self_test(&m), MODEL_OK);
    CHECK(m.n_vectors > 0 && m.n_layers == 3 && m.window == 10 && m.n_fields == 1);
    CHECK(m.threshold > 0.0f);
    /* A flat window at the training mean predicts close to it. */
    float window[10];
    for (int i = 0; i < 10; i++) window[i] = m.in_mean[0];
    float y = model_predict(&m, window, NULL);
    CHECK(y > m.in_mean[0] - 1.0f && y < m.in_mean[0] + 1.0f);

    memcpy(g_img, factory_model_blob, size);
    g_img[8] ^= 0x40; /* the size field disagrees with the image */
    CHECK_EQ(model_parse(g_img, size, &m), MODEL_ERR_SIZE);
    CHECK_EQ(model_parse(g_img, size ^ 0x40u, &m), MODEL_ERR_SIZE);
    memcpy(g_img, factory_model_blob, size);
    g_img[0] = 'X';
    CHECK_EQ(model_parse(g_img, size, &m), MODEL_ERR_MAGIC);
    CHECK_EQ(model_parse(factory_model_blob, size - 4, &m), MODEL_ERR_SIZE);
    CHECK_EQ(model_parse(factory_model_blob, size, &m), MODEL_OK);
    CHECK_EQ(m.crc, crc32(factory_model_blob, size));
    CHECK_EQ(model_parse(factory_model_blob, 10, &m), MODEL_ERR_SIZE);
    /* A consistent image whose expected output is wrong: parse OK, self-test refuses. */
    model_t good;
    model_parse(factory_model_blob, size, &good);
    const uint32_t last_out = (uint32_t)(good.vectors - factory_model_blob) +
                              (uint32_t)(good.n_vectors - 1u) * good.vector_stride + good.n_inputs;
    memcpy(g_img, factory_model_blob, size);
    g_img[last_out] ^= 0x01;
    CHECK_EQ(model_parse(g_img, size, &m), MODEL_OK);
    CHECK_EQ(model_self_test(&m), MODEL_ERR_VECTOR);
    /* Too many layers claimed. */
    memcpy(g_img, factory_model_blob, size);
    g_img[60] = 9;
    CHECK_EQ(model_parse(g_img, size, &m), MODEL_ERR_SHAPE);
}
