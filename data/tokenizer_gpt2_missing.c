/* Stand-in used only while data/tokenizer_gpt2.c does not exist. */
#include <stdio.h>

#include "data/tokenizer_internal.h"

Tokenizer *gpt2_bpe_tokenizer_create(const char *vocab_file, const char *merge_file, char *err,
                                     size_t err_size) {
    (void)vocab_file;
    (void)merge_file;
    snprintf(err, err_size, "GPT2BPETokenizer is not built yet in this gpt3d build; "
                            "use --tokenizer-type ByteTokenizer");
    return NULL;
}
