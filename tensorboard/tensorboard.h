/* tensorboard/tensorboard.h — TensorBoard event files of scalars.
 *
 * Contract. tensorboard_writer_open creates DIR (mkdir -p) and in it
 * events.out.tfevents.<seconds>.<host>.<pid>.0, starting with the version
 * record ("brain.Event:2") TensorBoard expects. Each scalar is one Event
 * (wall time, step, one Summary value of tag and float) encoded with
 * protobuf-c from event.proto, framed as TFRecord: little-endian uint64
 * length, masked CRC32C of the length, the bytes, masked CRC32C of the
 * bytes (core/crc32c). Writes go through stdio and are flushed by
 * tensorboard_writer_flush (every log interval) and at close, so a crash
 * loses at most the records since the last flush and never leaves a
 * partial record a reader would take for data: a reader checks both CRCs.
 * Functions that touch the file return false with a message naming it. */
#ifndef GPT3D_TENSORBOARD_H
#define GPT3D_TENSORBOARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct TensorBoardWriter TensorBoardWriter;

TensorBoardWriter *tensorboard_writer_open(const char *dir, char *err, size_t err_size);
bool tensorboard_add_scalar(TensorBoardWriter *w, const char *tag, double value, int64_t step,
                            char *err, size_t err_size);
bool tensorboard_writer_flush(TensorBoardWriter *w, char *err, size_t err_size);
/* Flushes and closes; false when the last writes failed. NULL is fine. */
bool tensorboard_writer_close(TensorBoardWriter *w, char *err, size_t err_size);
const char *tensorboard_writer_path(const TensorBoardWriter *w);

/* TFRecord's mask of a CRC32C (rotate right by 15, add 0xa282ead8). */
uint32_t tensorboard_masked_crc(uint32_t crc);

#endif
