"""Weight conversion to and from PyTorch / transformers formats."""
