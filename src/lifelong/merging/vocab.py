"""Vocabulary alignment for merges of models whose tokenizers differ (mergekit's `tokenizer_source`).

API used by the engine (being implemented; see docs/merging.md):

    plan = plan_vocab(source, base_dir, model_dirs)   # None when every tokenizer has the same vocabulary
    plan.size                                         # rows of the output vocabulary
    plan.align(tensors, axis, labels)                 # per-model tensors permuted to the output vocabulary
    plan.save_tokenizer(out_dir)                      # the output tokenizer files
    vocab_axis(name, shape, vocab_sizes)              # the vocabulary axis of a tensor, or None
"""
