"""IR-aware captions and instructions from paired shards: statistics, templates, lexicon, filter, LLM backend."""
