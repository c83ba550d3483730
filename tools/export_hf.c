/* tools/export_hf — a gpt3d checkpoint as a Hugging Face model.
 *
 * Reads a checkpoint saved at any layout and writes OUT/config.json and
 * OUT/model.safetensors (fp32, the unpadded vocabulary) as GPT2LMHeadModel
 * (the GPT-2 block: GPT-2's names and Conv1D shapes), LlamaForCausalLM
 * (RoPE, RMSNorm, SwiGLU, grouped-query attention) or MixtralForCausalLM
 * (Llama's layer with every MLP a softmax top-k mixture of experts), which
 * transformers' AutoModelForCausalLM.from_pretrained(OUT) loads.
 * Exit status: 0 written, 2 bad usage or a checkpoint that cannot be read. */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/errors.h"
#include "core/flags.h"
#include "interop/interop.h"

typedef struct {
    char *load;
    int64_t iteration;
    char *out;
} Options;

static const FlagSpec FLAGS[] = {
    {"load", FLAG_STRING, offsetof(Options, load), NULL, "DIR",
     "the --save directory of a training run", "input", true},
    {"iteration", FLAG_INT64, offsetof(Options, iteration), NULL, "N",
     "export the checkpoint of iteration N (default: the one latest_checkpointed_iteration.txt "
     "names)",
     "input", false},
    {"out", FLAG_STRING, offsetof(Options, out), NULL, "DIR",
     "directory to write config.json and model.safetensors into (created when missing)", "output",
     true},
};
#define NUM_FLAGS ((int)(sizeof FLAGS / sizeof FLAGS[0]))

static const char SUMMARY[] =
    "Writes a gpt3d checkpoint (any layout) as a Hugging Face model, GPT2LMHeadModel, "
    "LlamaForCausalLM or MixtralForCausalLM as its architecture is: config.json and an fp32 "
    "model.safetensors.";

static void run(const Options *o, bool iteration_given) {
    if (iteration_given && o->iteration < 0)
        gpt3d_fail_user("--iteration must be >= 0 (got %" PRId64 ")", o->iteration);
    char err[4096];
    ExportSource src;
    if (!export_source_open(&src, o->load, iteration_given ? o->iteration : -1, err, sizeof err))
        gpt3d_fail_user("%s", err);
    int tensors = 0;
    int64_t elements = 0;
    const char *architecture = "";
    if (!hf_export(&src, o->out, &architecture, &tensors, &elements, err, sizeof err))
        gpt3d_fail_user("%s", err);
    printf("exported %s (iteration %" PRId64 ", %d layers, hidden %d, vocabulary %" PRId64
           ") as %s to %s/%s and %s/%s: %d tensors, %" PRId64 " parameters\n",
           src.dir, src.meta.iteration, src.shape.num_layers, src.shape.hidden_size,
           src.shape.vocab_size, architecture, o->out, HF_CONFIG_FILE, o->out, HF_WEIGHTS_FILE, tensors,
           elements);
    export_source_close(&src);
}

int main(int argc, char **argv) {
    Options o;
    FlagParser parser;
    int status = flags_parse_main(&parser, FLAGS, NUM_FLAGS, &o, argc, argv, "export_hf", SUMMARY);
    if (status >= 0) return status;
    run(&o, flags_was_set(&parser, "iteration"));
    flags_free(&parser, &o);
    return 0;
}
