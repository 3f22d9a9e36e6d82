/* CRC-32 (IEEE 802.3, reflected, poly 0xEDB88320): the same as Python's zlib.crc32. */
#ifndef EDGELOOP_CRC32_H
#define EDGELOOP_CRC32_H
#include <stddef.h>
#include <stdint.h>

uint32_t crc32_update(uint32_t crc, const uint8_t *data, size_t len);
static inline uint32_t crc32(const uint8_t *data, size_t len) { return crc32_update(0, data, len); }

#endif
