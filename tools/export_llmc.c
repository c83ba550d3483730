/* tools/export_llmc — a gpt3d checkpoint as an llm.c model file.
 *
 * Reads a checkpoint saved at any layout and writes the gpt2_124M.bin-style
 * file llm.c loads: version 3 (fp32, values bitwise) or, with --dtype bf16,
 * version 5 (what llm.c's default bf16 CUDA build requires), the vocabulary
 * padded to a multiple of --make-vocab-size-divisible-by (llm.c pads to
 * 128). llm.c holds only models whose MLP is 4 x hidden.
 * Exit status: 0 written, 2 bad usage or a checkpoint that cannot be read or
 * that llm.c cannot hold. */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/flags.h"
#include "interop/interop.h"

typedef struct {
    char *load;
    int64_t iteration;
    char *out;
    int divisible_by;
    char *dtype;
} Options;

static const FlagSpec FLAGS[] = {
    {"load", FLAG_STRING, offsetof(Options, load), NULL, "DIR",
     "the --save directory of a training run", "input", true},
    {"iteration", FLAG_INT64, offsetof(Options, iteration), NULL, "N",
     "export the checkpoint of iteration N (default: the one latest_checkpointed_iteration.txt "
     "names)",
     "input", false},
    {"out", FLAG_STRING, offsetof(Options, out), NULL, "FILE", "the llm.c model file to write",
     "output", true},
    {"make-vocab-size-divisible-by", FLAG_INT, offsetof(Options, divisible_by), "128", "K",
     "pad the vocabulary of the file to a multiple of K (llm.c's own files use 128)", "output",
     false},
    {"dtype", FLAG_STRING, offsetof(Options, dtype), "fp32", "T",
     "fp32 (version 3, bitwise; llm.c's CPU train_gpt2 and FP32 builds) or bf16 (version 5, "
     "rounded to nearest even; llm.c's default CUDA build)",
     "output", false},
};
#define NUM_FLAGS ((int)(sizeof FLAGS / sizeof FLAGS[0]))

static const char SUMMARY[] =
    "Writes a gpt3d checkpoint (any layout) as an llm.c GPT-2 model file (header magic "
    "20240326; version 3 = fp32, or 5 = bf16 with --dtype bf16).";

static void run(const Options *o, bool iteration_given) {
    if (iteration_given && o->iteration < 0)
        gpt3d_fail_user("--iteration must be >= 0 (got %" PRId64 ")", o->iteration);
    if (o->divisible_by < 1)
        gpt3d_fail_user("--make-vocab-size-divisible-by must be >= 1 (got %d)", o->divisible_by);
    if (strcmp(o->dtype, "fp32") && strcmp(o->dtype, "bf16"))
        gpt3d_fail_user("--dtype %s: use fp32 or bf16", o->dtype);
    const bool bf16 = !strcmp(o->dtype, "bf16");
    char err[4096];
    ExportSource src;
    if (!export_source_open(&src, o->load, iteration_given ? o->iteration : -1, err, sizeof err))
        gpt3d_fail_user("%s", err);
    if (!llmc_export(&src, o->out, o->divisible_by, bf16, err, sizeof err))
        gpt3d_fail_user("%s", err);
    printf("exported %s (iteration %" PRId64 ", %d layers, hidden %d, vocabulary %" PRId64
           ") to %s (version %d, %s)\n",
           src.dir, src.meta.iteration, src.shape.num_layers, src.shape.hidden_size,
           src.shape.vocab_size, o->out, bf16 ? LLMC_VERSION_BF16 : LLMC_VERSION_FP32, o->dtype);
    export_source_close(&src);
}

int main(int argc, char **argv) {
    Options o;
    FlagParser parser;
    int status =
        flags_parse_main(&parser, FLAGS, NUM_FLAGS, &o, argc, argv, "export_llmc", SUMMARY);
    if (status >= 0) return status;
    run(&o, flags_was_set(&parser, "iteration"));
    flags_free(&parser, &o);
    return 0;
}
