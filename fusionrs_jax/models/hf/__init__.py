"""Conversion of our params to and from transformers models (SigLIP, PaliGemma): rename
tables, state dicts, configs and save_pretrained folders. Commands live in `export/`."""
