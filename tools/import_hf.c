/* tools/import_hf — a Hugging Face GPT-2, Llama or Mixtral model as a
 * gpt3d checkpoint.
 *
 * Reads HF/config.json (model_type "gpt2", "llama" or "mixtral") and
 * HF/model.safetensors or the shards of HF/model.safetensors.index.json
 * (F32, BF16 or F16; GPT-2 names with or without the "transformer." prefix,
 * as GPT-2's released files have them) and writes a checkpoint of iteration 0 without optimizer state into
 * --save, which `pretrain_gpt --load SAVE --finetune` (or --no-load-optim)
 * continues at any layout. Padded vocabulary rows are zero.
 * Exit status: 0 written, 2 bad usage or a model that cannot be read. */
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
    char *hf;
    char *save;
    int divisible_by;
    int seq_length;
    char *tokenizer_type;
} Options;

static const FlagSpec FLAGS[] = {
    {"hf", FLAG_STRING, offsetof(Options, hf), NULL, "DIR",
     "directory holding config.json and model.safetensors (or model.safetensors.index.json and "
     "its shards)",
     "input", true},
    {"save", FLAG_STRING, offsetof(Options, save), NULL, "DIR",
     "new checkpoint directory (pass it to pretrain_gpt --load)", "output", true},
    {"make-vocab-size-divisible-by", FLAG_INT, offsetof(Options, divisible_by), "128", "K",
     "pad the vocabulary to a multiple of K, as pretrain_gpt will be told", "output", false},
    {"seq-length", FLAG_INT, offsetof(Options, seq_length), NULL, "T",
     "sequence length recorded in the checkpoint (default: the model's maximum positions)",
     "output", false},
    {"tokenizer-type", FLAG_STRING, offsetof(Options, tokenizer_type), NULL, "TYPE",
     "tokenizer recorded in the checkpoint: GPT2BPETokenizer or ByteTokenizer (default: "
     "GPT2BPETokenizer for a vocabulary of 50257, ByteTokenizer for 257)",
     "output", false},
};
#define NUM_FLAGS ((int)(sizeof FLAGS / sizeof FLAGS[0]))

static const char SUMMARY[] =
    "Converts a Hugging Face GPT2LMHeadModel, LlamaForCausalLM or MixtralForCausalLM "
    "(config.json + "
    "model.safetensors) into a gpt3d checkpoint that pretrain_gpt loads with --finetune or "
    "--no-load-optim.";

static void check_options(const Options *o, bool seq_given) {
    if (o->divisible_by < 1)
        gpt3d_fail_user("--make-vocab-size-divisible-by must be >= 1 (got %d)", o->divisible_by);
    if (seq_given && o->seq_length < 1)
        gpt3d_fail_user("--seq-length must be >= 1 (got %d)", o->seq_length);
    if (o->tokenizer_type && strcmp(o->tokenizer_type, "GPT2BPETokenizer") &&
        strcmp(o->tokenizer_type, "ByteTokenizer"))
        gpt3d_fail_user("--tokenizer-type %s: use GPT2BPETokenizer or ByteTokenizer",
                        o->tokenizer_type);
}

static void run(const Options *o, bool seq_given) {
    check_options(o, seq_given);
    char err[4096];
    if (!import_check_save_dir(o->save, err, sizeof err)) gpt3d_fail_user("%s", err);
    const char *architecture = "";
    ModelWeights *w = hf_import(o->hf, o->divisible_by, &architecture, err, sizeof err);
    if (!w) gpt3d_fail_user("%s", err);
    const TransformerConfig *s = model_weights_shape(w);
    if (seq_given && o->seq_length > s->max_position_embeddings)
        gpt3d_fail_user("--seq-length %d exceeds the model's n_positions %d (its maximum "
                        "positions)",
                        o->seq_length,
                        s->max_position_embeddings);
    char source[4200];
    snprintf(source, sizeof source, "imported by tools/import_hf from %s", o->hf);
    const WeightsSaveInfo info = {
        .seq_length = seq_given ? o->seq_length : s->max_position_embeddings,
        .tokenizer_type =
            o->tokenizer_type ? o->tokenizer_type : import_default_tokenizer(s->vocab_size),
        .source = source,
    };
    if (!model_weights_save(w, o->save, &info, err, sizeof err)) gpt3d_fail_user("%s", err);
    char experts[96] = "";
    if (s->num_experts)
        snprintf(experts, sizeof experts, ", %d experts of ffn %d (top %d)", s->num_experts,
                 s->moe_ffn_hidden_size, s->moe_router_topk);
    printf("imported %s (%s: %d layers, hidden %d, %d heads in %d groups, ffn %d%s, vocabulary %" PRId64
           " padded to %" PRId64 ", %d positions) into %s/iter_0000000\n",
           o->hf, architecture, s->num_layers, s->hidden_size, s->num_attention_heads, s->num_query_groups,
           s->ffn_hidden_size, experts,
           s->vocab_size, s->padded_vocab_size, s->max_position_embeddings, o->save);
    model_weights_free(w);
}

int main(int argc, char **argv) {
    Options o;
    FlagParser parser;
    int status = flags_parse_main(&parser, FLAGS, NUM_FLAGS, &o, argc, argv, "import_hf", SUMMARY);
    if (status >= 0) return status;
    run(&o, flags_was_set(&parser, "seq-length"));
    flags_free(&parser, &o);
    return 0;
}
