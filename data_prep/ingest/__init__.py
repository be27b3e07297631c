"""Sources (Karpathy, NWPU, folder+JSONL/CSV, COCO thermal) -> ArrayRecord shards; tfds export; tokenizer."""
