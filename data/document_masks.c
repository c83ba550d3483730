/* Megatron's document masks of a packed sample (data.h). */
#include "backend/backend.h"
#include "data/data.h"

bool document_masking_on(const DocumentMasking *dm) {
    return dm->eod_mask_loss || dm->reset_position_ids || dm->reset_attention_mask;
}

int document_masks_apply(const DocumentMasking *dm, const int32_t *tokens, int32_t *targets,
                         int T, int32_t *position_ids, int32_t *key_start) {
    int kept = 0, doc_start = 0;
    for (int t = 0; t < T; t++) {
        position_ids[t] = dm->reset_position_ids ? t - doc_start : t;
        key_start[t] = dm->reset_attention_mask ? doc_start : 0;
        const bool eod = tokens[t] == dm->eod_token;
        if (eod && dm->eod_mask_loss) targets[t] = LOSS_IGNORED_TARGET;
        if (targets[t] >= 0) kept++;
        if (eod) doc_start = t + 1; /* the EOD closes its document */
    }
    return kept;
}
